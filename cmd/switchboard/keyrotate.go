package main

import (
	"fmt"
	"slices"
	"text/tabwriter"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

// newKeyRotationCmds are `keys status`, `keys rotate` and `keys retire` (DESIGN.md §3.6).
func newKeyRotationCmds(g *globals) []*cobra.Command {
	status := &cobra.Command{
		Use:   "status",
		Short: "Show which master key wraps how many tenant keys (and how many data keys there are)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, db, kr, err := g.openStore(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			counts, err := db.KeyStatus(cmd.Context())
			if err != nil {
				return err
			}
			configured := kr.MasterKeyIDs()
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tWRAPPED BY\tKEYS\tNOTE")
			seen := map[string]bool{}
			var subjects int64
			for _, c := range counts {
				if c.Kind != "tenant" {
					subjects += c.Count
					continue
				}
				seen[c.KeyID] = true
				note := ""
				switch {
				case c.KeyID == kr.PrimaryKeyID():
					note = "primary"
				case !slices.Contains(configured, c.KeyID):
					note = "NOT CONFIGURED: these tenants cannot be read"
				default:
					note = "run `switchboard keys rotate`"
				}
				fmt.Fprintf(tw, "tenant key\t%s\t%d\t%s\n", c.KeyID, c.Count, note)
			}
			for _, id := range configured {
				if !seen[id] {
					note := "retirable"
					if id == kr.PrimaryKeyID() {
						note = "primary"
					}
					fmt.Fprintf(tw, "tenant key\t%s\t0\t%s\n", id, note)
				}
			}
			fmt.Fprintf(tw, "data key\t(tenant keys)\t%d\t\n", subjects)
			return tw.Flush()
		},
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rewrap every tenant key under the primary master key, online",
		Long: `Rewrap every tenant key under the primary (first) master key, in batches, while the gateway runs.

Rotation, step by step:
  1. switchboard keys master --out new.keys      (a new key)
  2. put the new key FIRST in every replica's master keys, keep the old one after it, restart
     the replicas one by one (each can then read keys wrapped by either)
  3. switchboard keys rotate                      (rewraps what the old key still wraps)
  4. switchboard keys retire OLD_ID               (checks that nothing depends on it)
  5. remove the old key from the master keys`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, db, kr, err := g.openStore(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			n, err := db.RotateTenantKeys(cmd.Context(), kr)
			if err != nil {
				return err
			}
			if err := db.AppendAudit(cmd.Context(), store.AuditEntry{Tenant: "*", Actor: store.Actor{KeyID: "cli"},
				Action: "keys_rotated", Target: kr.PrimaryKeyID(), Detail: fmt.Sprintf("%d tenant keys rewrapped", n)}); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "rewrapped %d tenant keys under master key %s\n", n, kr.PrimaryKeyID())
			return nil
		},
	}
	retire := &cobra.Command{
		Use:   "retire MASTER_KEY_ID",
		Short: "Check that no tenant key depends on a master key any more, so it can be removed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, db, kr, err := g.openStore(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			if args[0] == kr.PrimaryKeyID() {
				return gateway.Errorf(gateway.EConflict, "master key %s is the primary: make another key primary first", args[0])
			}
			n, err := db.TenantKeysUnder(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if n > 0 {
				return gateway.Errorf(gateway.EConflict, "master key %s still wraps %d tenant keys: run `switchboard keys rotate` first", args[0], n)
			}
			fmt.Fprintf(g.stdout, "master key %s wraps no tenant key: remove it from the master keys\n", args[0])
			return nil
		},
	}
	return []*cobra.Command{status, rotate, retire}
}

// openStore loads the configuration and opens its store with the keyring, for commands that work
// on the store directly.
func (g *globals) openStore(cmd *cobra.Command) (*config.Config, *storesql.DB, *crypt.Keyring, error) {
	cfg, err := g.load(cmd)
	if err != nil {
		return nil, nil, nil, err
	}
	db, kr, err := server.OpenStore(cmd.Context(), cfg, g.dev, zerolog.Nop())
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, db, kr, nil
}
