package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/gateway"
)

func newConsentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consent",
		Short: "Read and record consent (opt-in, opt-out) through a running gateway",
		Long: `Read and record consent through a running gateway's API (/v1/consent).

A subject is a person: a phone number (+E164) on WhatsApp, teams:user:<id> on Teams. The channel
is teams for teams: subjects and whatsapp otherwise, unless --channel says.`,
	}
	cmd.AddCommand(newConsentGetCmd(g), newConsentSetCmd(g), newConsentImportCmd(g))
	return cmd
}

// consentChannel is the channel of a subject: --channel, or teams for teams: subjects.
func consentChannel(channel, subject string) string {
	if channel != "" {
		return channel
	}
	if strings.HasPrefix(subject, "teams:") {
		return string(gateway.Teams)
	}
	return string(gateway.WhatsApp)
}

func consentPath(channel, subject string) string {
	return "/v1/consent/" + url.PathEscape(consentChannel(channel, subject)) + "/" + url.PathEscape(subject)
}

func newConsentGetCmd(g *globals) *cobra.Command {
	var f clientFlags
	var channel string
	cmd := &cobra.Command{
		Use:     "get SUBJECT",
		Short:   "Show a subject's consent and its evidence",
		Example: `  switchboard consent get --dev +4915112345678`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			return c.show(cmd.Context(), g.stdout, http.MethodGet, consentPath(channel, args[0]), nil, nil)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&channel, "channel", "", "whatsapp or teams (default: from the subject)")
	return cmd
}

func newConsentSetCmd(g *globals) *cobra.Command {
	var f clientFlags
	var channel, state, category, source, note string
	cmd := &cobra.Command{
		Use:   "set SUBJECT --state opted_in|opted_out|none",
		Short: "Record an opt-in or an opt-out (none withdraws an opt-in)",
		Example: `  switchboard consent set --dev +4915112345678 --state opted_in --note "signed up at the counter"
  switchboard consent set --dev +4915112345678 --state none`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			path := consentPath(channel, args[0])
			if state == "none" {
				if category != "" {
					path += "?category=" + url.QueryEscape(category)
				}
				return c.show(cmd.Context(), g.stdout, http.MethodDelete, path, nil, nil)
			}
			body := map[string]string{"state": state}
			for k, v := range map[string]string{"category": category, "source": source, "note": note} {
				if v != "" {
					body[k] = v
				}
			}
			return c.show(cmd.Context(), g.stdout, http.MethodPut, path, body, nil)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&channel, "channel", "", "whatsapp or teams (default: from the subject)")
	cmd.Flags().StringVar(&state, "state", "", "opted_in, opted_out, or none to withdraw an opt-in")
	cmd.Flags().StringVar(&category, "category", "", "marketing or utility (default: all)")
	cmd.Flags().StringVar(&source, "source", "", "api (default), import, automation or admin")
	cmd.Flags().StringVar(&note, "note", "", "evidence note (stored encrypted)")
	_ = cmd.MarkFlagRequired("state")
	return cmd
}

func newConsentImportCmd(g *globals) *cobra.Command {
	var f clientFlags
	var channel string
	cmd := &cobra.Command{
		Use:   "import FILE.csv",
		Short: "Import consent from a CSV file: subject,state,date,source[,category]",
		Long: `Import consent from a CSV file with the columns subject,state,date,source and an optional
category (a header line is skipped). Good rows are recorded in one transaction; every bad row is
reported with its line and the reason. The command exits with status 1 when a row was rejected.`,
		Example: `  switchboard consent import --dev optouts.csv`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			file, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer file.Close()
			path := "/v1/consent:import"
			if channel != "" {
				path += "?channel=" + url.QueryEscape(channel)
			}
			var report struct {
				Imported int `json:"imported"`
				Rejected []struct {
					Line   int    `json:"line"`
					Code   string `json:"code"`
					Field  string `json:"field"`
					Reason string `json:"reason"`
				} `json:"rejected"`
			}
			if err := c.doRaw(cmd.Context(), http.MethodPost, path, "text/csv", file, &report); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "imported %d rows, rejected %d\n", report.Imported, len(report.Rejected))
			for _, r := range report.Rejected {
				field := ""
				if r.Field != "" {
					field = r.Field + ": "
				}
				fmt.Fprintf(g.stdout, "%s:%d: %s%s (%s)\n", args[0], r.Line, field, r.Reason, r.Code)
			}
			if len(report.Rejected) > 0 {
				return exitError{code: 1}
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&channel, "channel", "", "whatsapp or teams (default: teams for teams: subjects, else whatsapp)")
	return cmd
}

// doRaw sends body as is (a CSV file) and decodes a JSON answer into out.
func (c *apiClient) doRaw(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	resp, err := c.open(ctx, c.http, method, path, contentType, body, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out)
}
