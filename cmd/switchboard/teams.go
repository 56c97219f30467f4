package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/adapters/teams"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/store/credstore"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

func newTeamsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "teams", Short: "Microsoft Teams accounts: login, state, subscriptions"}
	var tenant, account string
	login := &cobra.Command{
		Use:   "login",
		Short: "Log the account's service user in (device code); the token cache is stored encrypted",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withTeamsAccount(cmd, tenant, account, func(ctx context.Context, tc teams.Config, creds *credstore.Store) error {
				auth, err := teams.NewAuth(tc, creds)
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
				defer cancel()
				id, err := auth.Login(ctx, func(dc teams.DeviceCode) { fmt.Fprintln(g.stderr, dc.Message) })
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "logged in as %s; the token cache is stored encrypted and refreshed silently\n", id.Username)
				return nil
			})
		},
	}
	accounts := &cobra.Command{
		Use:   "accounts",
		Short: "Show each Teams account's login state",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load(cmd)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "TENANT\tACCOUNT\tDRIVER\tSTATE\tSERVICE USER")
			for _, t := range cfg.Tenants {
				cc := t.Channel(gateway.Teams)
				if cc == nil {
					continue
				}
				for _, a := range cc.Accounts {
					state, user := "-", "-"
					if a.Driver == config.DriverGraph {
						err := g.withTeamsAccount(cmd, t.ID, a.Name, func(ctx context.Context, tc teams.Config, creds *credstore.Store) error {
							auth, err := teams.NewAuth(tc, creds)
							if err != nil {
								return err
							}
							ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
							defer cancel()
							_, _ = auth.Token(ctx) // a silent refresh tells whether the login still holds
							state, user = string(auth.State()), auth.Identity().Username
							return nil
						})
						if err != nil {
							state = "error: " + gateway.ErrorMessage(err)
						}
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.ID, a.Name, a.Driver, state, user)
				}
			}
			return w.Flush()
		},
	}
	subs := &cobra.Command{
		Use:   "subscriptions",
		Short: "List the account's Graph change-notification subscriptions",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withTeamsAccount(cmd, tenant, account, func(ctx context.Context, tc teams.Config, creds *credstore.Store) error {
				a, err := teams.New(tc, creds, teams.NewNotifications(zerolog.Nop()))
				if err != nil {
					return err
				}
				list, err := a.Subscriptions(ctx)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tRESOURCE\tEXPIRES")
				for _, s := range list {
					fmt.Fprintf(w, "%s\t%s\t%s\n", s.ID, s.Resource, s.Expires.Local().Format(time.DateTime))
				}
				return w.Flush()
			})
		},
	}
	for _, c := range []*cobra.Command{login, subs} {
		c.Flags().StringVar(&tenant, "tenant", "", "tenant id")
		c.Flags().StringVar(&account, "account", "", "Teams account name")
		_ = c.MarkFlagRequired("tenant")
		_ = c.MarkFlagRequired("account")
	}
	cmd.AddCommand(login, accounts, subs)
	return cmd
}

// withTeamsAccount opens the encrypted store and runs fn with one graph account's adapter config.
func (g *globals) withTeamsAccount(cmd *cobra.Command, tenant, account string, fn func(context.Context, teams.Config, *credstore.Store) error) error {
	cfg, acct, db, kr, err := g.openAccount(cmd, tenant, gateway.Teams, account, config.DriverGraph)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := cmd.Context()
	creds, err := credentials(ctx, db, kr)
	if err != nil {
		return err
	}
	tc, err := teamsConfig(cfg, tenant, *acct, g.channelHTTP, zerolog.Nop())
	if err != nil {
		return err
	}
	return fn(ctx, tc, creds)
}

// openAccount loads the configuration, finds the tenant's account of a channel on driver, and
// opens the encrypted store, which the caller closes.
func (g *globals) openAccount(cmd *cobra.Command, tenant string, ch gateway.Channel, account, driver string) (*config.Config, *config.AccountConfig, *storesql.DB, *crypt.Keyring, error) {
	cfg, err := g.load(cmd)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	t := cfg.Tenant(tenant)
	if t == nil {
		return nil, nil, nil, nil, gateway.FieldErrorf(gateway.ENotFound, "tenant", "no tenant %q in the configuration", tenant)
	}
	acct := t.Channel(ch).Account(account)
	if acct == nil || acct.Driver != driver {
		return nil, nil, nil, nil, gateway.FieldErrorf(gateway.ENotFound, "account", "tenant %s has no %s account %q on the %s driver", tenant, ch, account, driver)
	}
	db, kr, err := server.OpenStore(cmd.Context(), cfg, g.dev, zerolog.Nop())
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return cfg, acct, db, kr, nil
}
