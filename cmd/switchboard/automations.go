package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/automation"
)

// hangups turns SIGHUP into reload requests until ctx is done.
func hangups(ctx context.Context) <-chan struct{} {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				select {
				case out <- struct{}{}:
				default: // a reload is already pending
				}
			}
		}
	}()
	return out
}

// dryRunEvent is the JSON of --event: an inbound message as a channel would report it.
type dryRunEvent struct {
	Channel  string `json:"channel"`
	Account  string `json:"account"`
	From     string `json:"from"`
	FromName string `json:"from_name"`
	Chat     string `json:"chat"`
	Text     string `json:"text"`
	Hops     int    `json:"hops"`
}

func newAutomationsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "automations", Short: "Work with the automations of the configuration"}
	var tenant, eventFile, hook, hookBody string
	var ev dryRunEvent
	test := &cobra.Command{
		Use:   "test",
		Short: "Dry run: show which automations match an inbound message (or a hook call) and what they would do, sending nothing",
		Example: `  switchboard automations test -c switchboard.yaml --tenant acme --channel whatsapp --from +4915112345678 --text "Invoice 42 attached"
  switchboard automations test -c switchboard.yaml --tenant acme --event event.json
  switchboard automations test -c switchboard.yaml --tenant acme --hook order-shipped --body '{"order_id":"A-1"}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load(cmd)
			if err != nil {
				return err
			}
			if eventFile != "" {
				data, err := os.ReadFile(eventFile)
				if err != nil {
					return gateway.WrapError(gateway.EInvalidField, err, "cannot read the event file")
				}
				dec := json.NewDecoder(strings.NewReader(string(data)))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&ev); err != nil {
					return gateway.WrapError(gateway.EInvalidJSON, err, "%s: not an event (fields: channel, account, from, from_name, chat, text, hops)", eventFile)
				}
			}
			t := cfg.Tenant(tenant)
			if t == nil {
				return gateway.FieldErrorf(gateway.ENotFound, "tenant", "no tenant %q in the configuration", tenant)
			}
			engine := automation.New(automation.Config{}, cfg)
			if hook != "" {
				var body map[string]any
				if err := json.Unmarshal([]byte(hookBody), &body); err != nil || body == nil {
					return gateway.FieldErrorf(gateway.EInvalidJSON, "body", "--body must be a JSON object, e.g. '{\"order_id\":\"A-1\"}'")
				}
				return printPlan(g, tenant, engine.PlanEvent(automation.Event{
					Kind: automation.KindHook, ID: "hook_dryrun", Tenant: tenant, At: time.Now().UTC(), Hook: hook, Body: body,
				}))
			}
			ch := gateway.Channel(ev.Channel)
			cc := t.Channel(ch)
			if cc == nil {
				return gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "channel %q is not configured for tenant %s", ev.Channel, tenant)
			}
			if ev.Account == "" && len(cc.Accounts) > 0 {
				ev.Account = cc.Accounts[0].Name
			}
			if cc.Account(ev.Account) == nil {
				return gateway.FieldErrorf(gateway.EUnknownAccount, "account", "no %s account %q", ch, ev.Account)
			}
			from, err := gateway.ParseAddress(ch, ev.From)
			if err != nil {
				return err
			}
			in := gateway.InboundEvent{
				ID: "msg_dryrun", Tenant: tenant, Channel: ch, Account: ev.Account, ChannelMessageID: "dry-run",
				From: from, FromName: ev.FromName, Chat: ev.Chat, Content: gateway.Content{Text: ev.Text}, At: time.Now().UTC(),
			}
			return printPlan(g, tenant, engine.Plan(in, ev.Hops))
		},
	}
	test.Flags().StringVar(&tenant, "tenant", "", "tenant id (required)")
	test.Flags().StringVar(&eventFile, "event", "", "JSON file of an inbound event: {channel, account, from, from_name, chat, text, hops}")
	test.Flags().StringVar(&ev.Channel, "channel", "whatsapp", "channel the message comes in on")
	test.Flags().StringVar(&ev.Account, "account", "", "account it comes in on (default: the channel's first)")
	test.Flags().StringVar(&ev.From, "from", "", "sender: +E164 or a teams: address")
	test.Flags().StringVar(&ev.Chat, "chat", "", "chat or channel it was posted in")
	test.Flags().StringVar(&ev.Text, "text", "", "the message text")
	test.Flags().StringVar(&hook, "hook", "", "instead of a message: a call of POST /v1/hooks/<name>")
	test.Flags().StringVar(&hookBody, "body", "{}", "with --hook: the call's JSON body")
	_ = test.MarkFlagRequired("tenant")
	cmd.AddCommand(test)
	return cmd
}

// printPlan prints what the matching rules would do.
func printPlan(g *globals, tenant string, matches []automation.Match) error {
	w := g.stdout
	fmt.Fprintf(w, "dry run: nothing is sent\n")
	if len(matches) == 0 {
		fmt.Fprintf(w, "no automation of tenant %s matches\n", tenant)
		return nil
	}
	for _, m := range matches {
		fmt.Fprintf(w, "rule %s matches\n", m.Rule)
		if m.Skipped != "" {
			fmt.Fprintf(w, "  does nothing: %s\n", m.Skipped)
		}
		for _, p := range m.Actions {
			switch p.Kind {
			case config.ActionWebhook:
				fmt.Fprintf(w, "  do[%d] webhook → POST %s (signed, webhook-id %s)\n", p.Action, p.URL, p.IdempotencyKey)
			case config.ActionConsent:
				fmt.Fprintf(w, "  do[%d] set_consent → %s %s %s\n", p.Action, p.Channel, p.To.String(), strings.TrimSpace(p.Consent+" "+p.Category))
			case config.ActionTag:
				fmt.Fprintf(w, "  do[%d] tag → %s add %v remove %v\n", p.Action, p.To.String(), p.AddTags, p.RemoveTags)
			default:
				fmt.Fprintf(w, "  do[%d] %s → %s/%s %s (hops %d): %q\n", p.Action, p.Kind, p.Channel, p.Account, p.To.String(), p.Hops, p.Text)
			}
		}
	}
	return nil
}
