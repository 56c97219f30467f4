package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/privacy"
	"github.com/switchboard-gateway/switchboard/store"
)

// newPrivacyCmds are the privacy operations: erase, export, restrict (through a running
// gateway) and audit (from the store).
func newPrivacyCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{newEraseCmd(g), newExportCmd(g), newRestrictCmd(g), newAuditCmd(g)}
}

type erasureView struct {
	ID         string           `json:"id"`
	Status     string           `json:"status"`
	Report     map[string]int64 `json:"report"`
	ErrorCode  string           `json:"error_code,omitempty"`
	CreatedAt  time.Time        `json:"created_at"`
	FinishedAt *time.Time       `json:"finished_at,omitempty"`
}

func newEraseCmd(g *globals) *cobra.Command {
	var f clientFlags
	var wait time.Duration
	var tenant string
	var yes bool
	cmd := &cobra.Command{
		Use:   "erase SUBJECT | erase --tenant T --yes",
		Short: "Erase everything about a person (+E164 or teams:user:<id>): keys shredded, rows deleted",
		Long: `Erase a subject through a running gateway's API (POST /v1/erasures): the subject's data key is
destroyed (so backups and stream files no longer open), its messages, status history, consent
records and reply window are deleted; an opt-out stays as a suppression entry. The job runs in the
background; erase waits for its report (--wait 0 returns at once with the job id).

erase --tenant T --yes erases a whole tenant, directly in the store (an operator's command, no
API key can do it): the tenant key is destroyed, then every row of the tenant, its channel
credentials and WhatsApp device keys included. Usage counts and the audit log stay. Remove the
tenant from the configuration first, or a running gateway recreates it with its next message.`,
		Example: `  switchboard erase --dev +4915112345678
  switchboard erase teams:user:6f1c0a2e-0000-4000-8000-000000000001 --wait 0`,
		Args: func(cmd *cobra.Command, args []string) error {
			if tenant != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if tenant != "" {
				return eraseTenant(cmd, g, tenant, yes)
			}
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			var job erasureView
			if err := c.do(cmd.Context(), http.MethodPost, "/v1/erasures", map[string]string{"subject": args[0]}, nil, &job); err != nil {
				return err
			}
			if wait > 0 {
				if job, err = waitErasure(cmd.Context(), c, job.ID, wait); err != nil {
					return err
				}
			}
			return printJSON(g.stdout, job)
		},
	}
	f.add(cmd)
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for the job's report (0: do not wait)")
	cmd.Flags().StringVar(&tenant, "tenant", "", "erase this whole tenant (directly in the store)")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm a tenant erasure: it cannot be undone")
	return cmd
}

func eraseTenant(cmd *cobra.Command, g *globals, tenant string, yes bool) error {
	if !yes {
		return gateway.FieldErrorf(gateway.EMissingField, "yes", "erasing tenant %s destroys its key and all its data for good: add --yes", tenant)
	}
	cfg, db, kr, err := g.openStore(cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	svc, err := privacy.New(privacy.Config{Store: db, Indexer: kr})
	if err != nil {
		return err
	}
	job, err := svc.EraseTenant(cmd.Context(), tenant, store.Actor{KeyID: "cli"})
	if err != nil {
		return err
	}
	if cfg.Tenant(tenant) != nil {
		fmt.Fprintf(g.stderr, "warning: tenant %s is still in the configuration: remove it, or the gateway recreates it\n", tenant)
	}
	return printJSON(g.stdout, map[string]any{"tenant": tenant, "id": job.ID, "status": job.State, "report": job.Report})
}

// waitErasure polls the job (HTTP offers no event for it) until it finishes or wait runs out.
func waitErasure(ctx context.Context, c *apiClient, id string, wait time.Duration) (erasureView, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var job erasureView
		if err := c.do(ctx, http.MethodGet, "/v1/erasures/"+url.PathEscape(id), nil, nil, &job); err != nil {
			return job, err
		}
		if job.Status == "done" || job.Status == "failed" {
			return job, nil
		}
		select {
		case <-ctx.Done():
			return job, gateway.Errorf(gateway.ETimeout, "erasure %s is still %s after %s: ask again with `curl /v1/erasures/%s`", id, job.Status, wait, id)
		case <-tick.C:
		}
	}
}

func newExportCmd(g *globals) *cobra.Command {
	var f clientFlags
	var out string
	cmd := &cobra.Command{
		Use:     "export SUBJECT",
		Short:   "Export everything stored about a person, decrypted, as JSON (GET /v1/exports)",
		Example: `  switchboard export --dev +4915112345678 --out alice.json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			w := g.stdout
			if out != "" {
				file, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return err
				}
				defer file.Close()
				w = file
			}
			return c.stream(cmd.Context(), "/v1/exports?subject="+url.QueryEscape(args[0]), w)
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&out, "out", "", "file to create (mode 0600; default: stdout)")
	return cmd
}

// stream copies a GET answer to w as it arrives (no overall timeout: exports can be long).
func (c *apiClient) stream(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.open(ctx, &http.Client{Transport: c.http.Transport}, http.MethodGet, path, "", nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

func newRestrictCmd(g *globals) *cobra.Command {
	var f clientFlags
	var lift bool
	cmd := &cobra.Command{
		Use:   "restrict SUBJECT",
		Short: "Restrict processing for a person (sends rejected subject_restricted); --lift ends it",
		Example: `  switchboard restrict --dev +4915112345678
  switchboard restrict --dev +4915112345678 --lift`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd, &f)
			if err != nil {
				return err
			}
			method := http.MethodPut
			if lift {
				method = http.MethodDelete
			}
			return c.show(cmd.Context(), g.stdout, method, "/v1/restrictions/"+url.PathEscape(args[0]), nil, nil)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&lift, "lift", false, "lift the restriction")
	return cmd
}
