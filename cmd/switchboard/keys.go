package main

import (
	"fmt"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

func newKeysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage API keys and master keys"}
	var tenant, name string
	var admin bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API key for a tenant; the key is shown once and only its hash is stored",
		Long: `Create an API key for a tenant; the key is shown once and only its hash is stored.
--admin gives it the admin scope: it may also erase the whole tenant (POST /v1/erasures {"tenant": true}).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load(cmd)
			if err != nil {
				return err
			}
			if cfg.Tenant(tenant) == nil {
				return gateway.FieldErrorf(gateway.ENotFound, "tenant", "no tenant %q in the configuration", tenant)
			}
			db, err := storesql.Open(cmd.Context(), storesql.Config{Driver: cfg.Store.Driver, DSN: cfg.Store.DSN, KeysDSN: cfg.Store.KeysDSN}, zerolog.Nop())
			if err != nil {
				return err
			}
			defer db.Close()
			secret := api.NewAPIKeySecret()
			k, err := db.CreateAPIKey(cmd.Context(), tenant, name, secret)
			if err != nil {
				return err
			}
			action := "api_key_created"
			if admin {
				if err := db.GrantAdmin(cmd.Context(), tenant, k.ID); err != nil {
					return err
				}
				action = "admin_api_key_created"
			}
			if err := db.AppendAudit(cmd.Context(), store.AuditEntry{Tenant: tenant, Actor: store.Actor{KeyID: "cli"}, Action: action, Target: k.ID}); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "API key %s for tenant %s (shown once: store it now):\n", k.ID, k.Tenant)
			fmt.Fprintln(g.stdout, secret)
			return nil
		},
	}
	create.Flags().StringVar(&tenant, "tenant", "", "tenant id")
	create.Flags().StringVar(&name, "name", "", "a name to recognise the key by")
	create.Flags().BoolVar(&admin, "admin", false, "admin scope: the key may erase its whole tenant")
	_ = create.MarkFlagRequired("tenant")

	var out string
	master := &cobra.Command{
		Use:   "master",
		Short: "Generate a new master key file (mode 0600); keep it in a secret store, not beside the data",
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := crypt.GenerateMasterKeyFile(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote master key %s to %s\n", k.ID, out)
			return nil
		},
	}
	master.Flags().StringVar(&out, "out", "", "file to create (it must not exist)")
	_ = master.MarkFlagRequired("out")
	cmd.AddCommand(create, master)
	cmd.AddCommand(newKeyRotationCmds(g)...)
	return cmd
}
