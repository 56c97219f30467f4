package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
)

// connectBus reaches the running gateway's bus: --nats-url, the URL a dev or embedded server with
// a listener writes to <data_dir>/nats.url, or the configured external cluster.
func (g *globals) connectBus(cmd *cobra.Command, natsURL string) (*bus.Bus, error) {
	cfg, err := g.load(cmd)
	if err != nil && natsURL == "" {
		return nil, err
	}
	bc := bus.Config{UseExisting: true} // a client: never redefine the server's streams
	switch {
	case natsURL != "":
		bc.URLs = []string{natsURL}
	case cfg != nil && len(cfg.Bus.URLs) > 0:
		bc.URLs, bc.CredsFile = cfg.Bus.URLs, cfg.Bus.CredsFile
	default:
		path := filepath.Join(cfg.DataDir, "nats.url")
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, gateway.WrapError(gateway.EUnavailable, err,
				"cannot find the gateway's bus: is `switchboard serve` running with this data dir? (an embedded bus needs bus.embedded.listen, which --dev sets; or pass --nats-url)")
		}
		bc.URLs = []string{strings.TrimSpace(string(b))}
	}
	if cfg != nil {
		bc.DuplicateWindow, bc.StatusMaxAge, bc.InboundMaxAge = cfg.Bus.DuplicateWindow, cfg.Bus.StatusMaxAge, cfg.Bus.InboundMaxAge
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	return bus.Open(ctx, bc, zerolog.Nop())
}

func newLogsCmd(g *globals) *cobra.Command {
	var natsURL, tenant, channel, status, output string
	var follow, fromStart bool
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Show the delivery-status stream, live from the bus",
		Example: `  switchboard logs -f --dev
  switchboard logs -f --config switchboard.yaml --tenant acme --status failed`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !follow && !fromStart {
				return gateway.Errorf(gateway.EMissingField, "pass -f to follow new status changes, or --from-start to replay the retained stream")
			}
			if output != "text" && output != "json" {
				return gateway.FieldErrorf(gateway.EInvalidField, "output", "-o %q: use text or json", output)
			}
			b, err := g.connectBus(cmd, natsURL)
			if err != nil {
				return err
			}
			defer b.Close(context.Background())
			subject := "sb.status.>"
			if tenant != "" {
				subject = bus.StatusSubject(tenant)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			err = b.Follow(cmd.Context(), subject, fromStart, func(m *bus.Msg) error {
				var ev gateway.StatusEvent
				if err := json.Unmarshal(m.Data, &ev); err != nil {
					return nil // not ours to judge: skip what we cannot read
				}
				if (channel != "" && string(ev.Channel) != channel) || (status != "" && string(ev.Status) != status) {
					return nil
				}
				if output == "json" {
					return json.NewEncoder(g.stdout).Encode(ev)
				}
				errText := ""
				if ev.Error != nil {
					errText = ev.Error.Code
				}
				fmt.Fprintf(w, "%s\t%s\t%s/%s\t%s\t%s\t%s\n", ev.At.Local().Format("15:04:05.000"), ev.Tenant,
					ev.Channel, ev.Account, ev.MessageID, ev.Status, errText)
				return w.Flush()
			})
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow new status changes")
	cmd.Flags().BoolVar(&fromStart, "from-start", false, "start from the oldest retained status event")
	cmd.Flags().StringVar(&natsURL, "nats-url", "", "NATS URL of the gateway's bus (default: <data_dir>/nats.url or bus.urls)")
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant")
	cmd.Flags().StringVar(&channel, "channel", "", "only this channel")
	cmd.Flags().StringVar(&status, "status", "", "only this status")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newDeadLettersCmd(g *globals) *cobra.Command {
	var natsURL string
	cmd := &cobra.Command{Use: "deadletters", Short: "List and replay messages that exhausted their deliveries"}
	cmd.PersistentFlags().StringVar(&natsURL, "nats-url", "", "NATS URL of the gateway's bus (default: <data_dir>/nats.url or bus.urls)")
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters",
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := g.connectBus(cmd, natsURL)
			if err != nil {
				return err
			}
			defer b.Close(context.Background())
			dls, err := b.DeadLetters(cmd.Context(), limit)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "SEQ\tTIME\tSUBJECT\tDELIVERIES\tERROR")
			for _, d := range dls {
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\n", d.Seq, d.Time.Local().Format(time.DateTime), d.Subject, d.Deliveries, d.Error)
			}
			return w.Flush()
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, "most to list")
	var all bool
	replay := &cobra.Command{
		Use:   "replay [SEQ…]",
		Short: "Publish dead letters to their original subject again (they pass every check again)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return gateway.Errorf(gateway.EMissingField, "name the sequence numbers to replay, or pass --all")
			}
			b, err := g.connectBus(cmd, natsURL)
			if err != nil {
				return err
			}
			defer b.Close(context.Background())
			if all {
				n, err := b.ReplayAll(cmd.Context())
				fmt.Fprintf(g.stdout, "replayed %d dead letter(s)\n", n)
				return err
			}
			for _, a := range args {
				seq, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return gateway.FieldErrorf(gateway.EInvalidField, "SEQ", "%q is not a sequence number (see `deadletters list`)", a)
				}
				if err := b.Replay(cmd.Context(), seq); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "replayed %d\n", seq)
			}
			return nil
		},
	}
	replay.Flags().BoolVar(&all, "all", false, "replay every dead letter")
	cmd.AddCommand(list, replay)
	return cmd
}
