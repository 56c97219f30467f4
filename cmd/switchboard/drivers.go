package main

import (
	"context"
	"net/http"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/teams"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/store/credstore"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

// channelDrivers are the drivers this binary carries besides the sandbox, and the webhooks they
// serve. One Graph notification endpoint serves every Teams account of the process.
func channelDrivers(log zerolog.Logger, g *globals) (map[string]server.DriverFactory, map[string]http.Handler) {
	hc := g.channelHTTP
	hub := teams.NewNotifications(log.With().Str("component", "teams-notifications").Logger())
	drivers := map[string]server.DriverFactory{
		config.DriverWhatsMeow: g.whatsappDriver,
		config.DriverGraph: func(ctx context.Context, env server.DriverEnv) (adapters.Adapter, error) {
			creds, err := credentials(ctx, env.DB, env.Keyring)
			if err != nil {
				return nil, err
			}
			cfg, err := teamsConfig(env.Config, env.Tenant, env.Account, hc, env.Log)
			if err != nil {
				return nil, err
			}
			return teams.New(cfg, creds, hub)
		},
	}
	routes := map[string]http.Handler{
		"POST " + teams.NotificationPath: hub,
		"POST " + teams.LifecyclePath:    hub,
	}
	return drivers, routes
}

// credentials is the encrypted store of channel credentials (token caches, secrets), in the same
// database as everything else.
func credentials(ctx context.Context, db *storesql.DB, kr *crypt.Keyring) (*credstore.Store, error) {
	dialect, err := credstore.ParseDialect(db.Driver())
	if err != nil {
		return nil, err
	}
	cs, err := credstore.New(db.SQL(), dialect, credstore.Keyring(kr))
	if err != nil {
		return nil, err
	}
	return cs, cs.Migrate(ctx)
}

// teamsConfig maps a graph account of the YAML onto the adapter's config; the client secret comes
// from the named environment variable or file, never from the YAML.
func teamsConfig(c *config.Config, tenant string, acct config.AccountConfig, hc *http.Client, log zerolog.Logger) (teams.Config, error) {
	g := acct.Graph
	if g == nil {
		return teams.Config{}, gateway.FieldErrorf(gateway.EMissingField, "graph", "teams account %s needs a graph section", acct.Name)
	}
	tc := teams.Config{
		Tenant: tenant, Account: acct.Name,
		TenantID: g.TenantID, ClientID: g.ClientID, Auth: teams.AuthMode(g.Auth),
		ClientSecretFile: g.ClientSecretFile,
		CertificateFile:  g.CertificateFile,
		Cloud:            g.Cloud, AuthorityURL: g.AuthorityURL, GraphURL: g.GraphURL,
		Chats: g.Chats, Channels: g.Channels, PollInterval: g.PollInterval,
		PublicURL:  strings.TrimRight(c.Server.PublicURL, "/"),
		HTTPClient: hc,
		Log:        log,
	}
	if g.ClientSecretEnv != "" {
		tc.ClientSecret = os.Getenv(g.ClientSecretEnv)
		if tc.ClientSecret == "" && tc.Auth == teams.Application {
			return teams.Config{}, gateway.FieldErrorf(gateway.EMissingField, "graph.client_secret_env",
				"the environment variable %s named by teams account %s is empty", g.ClientSecretEnv, acct.Name)
		}
	}
	return tc, nil
}
