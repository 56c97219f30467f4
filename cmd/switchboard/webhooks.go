package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
)

func newWebhooksCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhooks",
		Short: "The tenants' webhook endpoints: list them, make secrets, send a signed test event",
		Long: `Webhook endpoints are configured per tenant (tenants[].webhooks: id, url, events,
secrets_file, allow_private). Events are signed per the Standard Webhooks specification with the
whsec_ secrets in the endpoint's secrets file; two secrets sign side by side while rotating.`,
	}
	cmd.AddCommand(newWebhooksListCmd(g), newWebhooksSecretCmd(g), newWebhooksTestCmd(g))
	return cmd
}

func newWebhooksListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the configured endpoints (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load(cmd)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tID\tURL\tEVENTS\tPRIVATE")
			for _, t := range cfg.Tenants {
				for _, w := range t.Webhooks {
					events := strings.Join(w.Events, ",")
					if events == "" {
						events = "all"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", t.ID, w.ID, w.URL, events, w.AllowPrivate)
				}
			}
			return tw.Flush()
		},
	}
}

func newWebhooksSecretCmd(g *globals) *cobra.Command {
	var out string
	var rotate bool
	cmd := &cobra.Command{
		Use:   "secret --out FILE",
		Short: "Write a new whsec_ secret to a secrets file (mode 0600); --rotate keeps the newest old one beside it",
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

func newWebhooksTestCmd(g *globals) *cobra.Command {
	var tenant, id string
	cmd := &cobra.Command{
		Use:   "test --tenant T --id ENDPOINT",
		Short: "Send a signed webhook.test event to an endpoint and show its answer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load(cmd)
			if err != nil {
				return err
			}
			eps, err := server.WebhookEndpoints(cfg)
			if err != nil {
				return err
			}
			for _, e := range eps {
				if e.Tenant != tenant || e.ID != id {
					continue
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), delivery.DefaultTimeout)
				defer cancel()
				now := time.Now()
				status, err := delivery.Post(ctx, delivery.NewClient(e.AllowPrivate, delivery.DefaultTimeout), e,
					fmt.Sprintf("evt_test_%d", now.UnixNano()), now, delivery.TestPayload(now))
				fmt.Fprintf(g.stdout, "%s/%s: HTTP %d in %s\n", tenant, id, status, time.Since(now).Round(time.Millisecond))
				return err
			}
			return gateway.Errorf(gateway.ENotFound, "tenant %s has no webhook %q", tenant, id)
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant id")
	cmd.Flags().StringVar(&id, "id", "", "endpoint id")
	return cmd
}
