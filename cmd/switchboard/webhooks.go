package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
)

func newWebhooksCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhooks",
		Short: "Webhook endpoints through the API: add, list, test, replay, remove; and secrets for configured ones",
		Long: `Webhook endpoints are created through a running gateway's API (add, remove, rotate, enable) or
configured per tenant in the config file (tenants[].webhooks: id, url, events, secrets_file,
allow_private). Events are signed per the Standard Webhooks specification with whsec_ secrets;
two sign side by side while a secret is rotated. list, test, replay and deliveries work on both.`,
	}
	cmd.AddCommand(newWebhooksAddCmd(g), newWebhooksListCmd(g), newWebhooksTestCmd(g), newWebhooksReplayCmd(g),
		newWebhooksRemoveCmd(g), newWebhooksIDCmd(g, "rotate", "Give an endpoint a new secret (shown once); the old one signs beside it for 24h", http.MethodPost, "/secrets"),
		newWebhooksIDCmd(g, "enable", "Enable an endpoint disabled after persistent failure", http.MethodPost, "/enable"),
		newWebhooksIDCmd(g, "deliveries", "Show an endpoint's delivery log, newest first", http.MethodGet, "/deliveries"),
		newWebhooksSecretCmd(g))
	return cmd
}

func webhookPath(id, suffix string) string { return "/v1/webhooks/" + url.PathEscape(id) + suffix }

func newWebhooksAddCmd(g *globals) *cobra.Command {
	var f clientFlags
	var events []string
	var private bool
	cmd := &cobra.Command{
		Use:     "add URL --events message.status[,message.inbound]",
		Short:   "Create an endpoint (POST /v1/webhooks); its whsec_ secret is printed once",
		Example: `  switchboard webhooks add --dev https://crm.example.com/hooks/switchboard --events message.status`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			body := map[string]any{"url": args[0], "events": events}
			if private {
				body["allow_private"] = true
			}
			return c.show(cmd.Context(), g.stdout, http.MethodPost, "/v1/webhooks", body, nil)
		},
	}
	f.add(cmd)
	cmd.Flags().StringSliceVar(&events, "events", nil, "event types: message.status, message.inbound")
	cmd.Flags().BoolVar(&private, "allow-private", false, "allow an internal target (only where the tenant's config permits it)")
	_ = cmd.MarkFlagRequired("events")
	return cmd
}

func newWebhooksListCmd(g *globals) *cobra.Command {
	var f clientFlags
	var output string
	cmd := &cobra.Command{
		Use:   "list [-o json]",
		Short: "List the tenant's endpoints, configured and created (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			if output != "text" && output != "json" {
				return gateway.FieldErrorf(gateway.EInvalidField, "output", "-o %q: use text or json", output)
			}
			if output == "json" {
				return c.show(cmd.Context(), g.stdout, http.MethodGet, "/v1/webhooks", nil, nil)
			}
			var out struct {
				Webhooks []struct {
					ID, URL, Status, Source string
					Events                  []string
				}
			}
			if err := c.do(cmd.Context(), http.MethodGet, "/v1/webhooks", nil, nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tURL\tEVENTS\tSTATUS\tSOURCE")
			for _, w := range out.Webhooks {
				events := strings.Join(w.Events, ",")
				if events == "" {
					events = "all"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", w.ID, w.URL, events, w.Status, w.Source)
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newWebhooksTestCmd(g *globals) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "test ID",
		Short: "Send a signed webhook.test event to an endpoint and show its answer (exit 1 if it failed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			var res struct {
				OK            bool
				StatusCode    int   `json:"status_code"`
				LatencyMS     int64 `json:"latency_ms"`
				Error, Detail string
			}
			if err := c.do(cmd.Context(), http.MethodPost, webhookPath(args[0], "/test"), nil, nil, &res); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s: HTTP %d in %dms\n", args[0], res.StatusCode, res.LatencyMS)
			if !res.OK {
				return gateway.Errorf(gateway.EUnavailable, "webhook %s failed the test (%s): %s", args[0], res.Error, res.Detail)
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newWebhooksReplayCmd(g *globals) *cobra.Command {
	var f clientFlags
	var since string
	cmd := &cobra.Command{
		Use:     "replay ID --since TIME",
		Short:   "Re-deliver an endpoint's events since a time (RFC 3339, or a duration ago like 2h), with their original webhook-ids",
		Example: "  switchboard webhooks replay wh_01j… --since 2026-11-22T09:00:00Z\n  switchboard webhooks replay crm --since 6h",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			at, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			path := webhookPath(args[0], "/replay") + "?since=" + url.QueryEscape(at.UTC().Format(time.RFC3339))
			return c.show(cmd.Context(), g.stdout, http.MethodPost, path, nil, nil)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&since, "since", "", "RFC 3339 time, or a duration ago (90m, 2h)")
	_ = cmd.MarkFlagRequired("since")
	return cmd
}

// parseSince reads an RFC 3339 time or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, gateway.FieldErrorf(gateway.EInvalidField, "since", "--since %q: want an RFC 3339 time (2026-11-22T09:00:00Z) or a duration ago (2h)", s)
}

func newWebhooksRemoveCmd(g *globals) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Delete a created endpoint (DELETE /v1/webhooks/{id}); delivery to it stops",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, webhookPath(args[0], ""), nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "removed %s\n", args[0])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// newWebhooksIDCmd is a command that calls one route of an endpoint and prints the answer.
func newWebhooksIDCmd(g *globals, name, short, method, suffix string) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   name + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			return c.show(cmd.Context(), g.stdout, method, webhookPath(args[0], suffix), nil, nil)
		},
	}
	f.add(cmd)
	return cmd
}

func newWebhooksSecretCmd(g *globals) *cobra.Command {
	var out string
	var rotate bool
	cmd := &cobra.Command{
		Use:   "secret --out FILE",
		Short: "For a configured endpoint: write a new whsec_ secret to its secrets file (mode 0600); --rotate keeps the old one beside it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return gateway.FieldErrorf(gateway.EMissingField, "out", "--out FILE is required")
			}
			secret := delivery.NewSecret()
			secrets := []string{secret}
			if rotate {
				b, err := os.ReadFile(out)
				if err != nil {
					return fmt.Errorf("--rotate needs the current file: %w", err)
				}
				var old []string
				for line := range strings.SplitSeq(string(b), "\n") {
					if line = strings.TrimSpace(line); strings.HasPrefix(line, delivery.SecretPrefix) {
						old = append(old, line)
					}
				}
				if len(old) > 0 {
					secrets = append(secrets, old[0])
				}
			}
			if err := delivery.WriteSecretsFile(out, secrets); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "wrote %s (%d secret(s)); give the receiver the new secret:\n", out, len(secrets))
			fmt.Fprintln(g.stdout, secret)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "secrets file to write")
	cmd.Flags().BoolVar(&rotate, "rotate", false, "keep the file's first secret as the second (both sign until the receiver switched)")
	return cmd
}
