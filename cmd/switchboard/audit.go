package main

import (
	"encoding/json"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/store"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

func newAuditCmd(g *globals) *cobra.Command {
	var tenant string
	var after int64
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Export the audit log of admin and privacy operations as JSON lines",
		Long: `Export the append-only audit log (erasures, exports, restrictions, key rotations): one JSON
object a line with seq, at, tenant, actor (API key id or cli), ip, action, target (a subject's
short blind index, s_…) and detail. --after SEQ continues an earlier export.`,
		Example: `  switchboard audit --dev --tenant demo`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load(cmd)
			if err != nil {
				return err
			}
			db, err := storesql.Open(cmd.Context(), storesql.Config{Driver: cfg.Store.Driver, DSN: cfg.Store.DSN, KeysDSN: cfg.Store.KeysDSN}, zerolog.Nop())
			if err != nil {
				return err
			}
			defer db.Close()
			enc := json.NewEncoder(g.stdout)
			for {
				es, err := db.AuditEntries(cmd.Context(), tenant, after, 1000)
				if err != nil {
					return err
				}
				for _, e := range es {
					if err := enc.Encode(auditLine(e)); err != nil {
						return err
					}
					after = e.Seq
				}
				if len(es) < 1000 {
					return nil
				}
			}
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant (default: all)")
	cmd.Flags().Int64Var(&after, "after", 0, "entries after this seq")
	return cmd
}

type auditJSON struct {
	Seq    int64  `json:"seq"`
	At     string `json:"at"`
	Tenant string `json:"tenant"`
	Actor  string `json:"actor"`
	IP     string `json:"ip,omitempty"`
	Action string `json:"action"`
	Target string `json:"target,omitempty"`
	Detail string `json:"detail,omitempty"`
}

func auditLine(e store.AuditEntry) auditJSON {
	return auditJSON{Seq: e.Seq, At: e.At.Format("2006-01-02T15:04:05.000000Z07:00"), Tenant: e.Tenant, Actor: e.Actor.KeyID,
		IP: e.Actor.IP, Action: e.Action, Target: e.Target, Detail: e.Detail}
}
