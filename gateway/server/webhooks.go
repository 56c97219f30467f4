package server

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/store"
)

// WebhookEndpoints are the tenants' configured webhook endpoints, with their secrets read.
func WebhookEndpoints(cfg *config.Config) ([]delivery.Endpoint, error) {
	var eps []delivery.Endpoint
	for _, t := range cfg.Tenants {
		for _, w := range t.Webhooks {
			secrets, err := delivery.LoadSecretsFile(w.SecretsFile)
			if err != nil {
				return nil, fmt.Errorf("tenant %s, webhook %s: %w", t.ID, w.ID, err)
			}
			eps = append(eps, delivery.Endpoint{
				ID: w.ID, Tenant: t.ID, URL: w.URL, Events: w.Events, Secrets: secrets, AllowPrivate: w.AllowPrivate,
			})
		}
	}
	return eps, nil
}

// newWebhooks builds the dispatcher of the tenants' webhook endpoints (configured and created
// through the API) and the registry the API manages them with.
func (s *Server) newWebhooks() (*delivery.Dispatcher, *delivery.Registry, error) {
	eps, err := WebhookEndpoints(s.cfg)
	if err != nil {
		return nil, nil, err
	}
	d, err := delivery.New(delivery.Config{
		Bus: s.bus, Sealer: s.keyring, Endpoints: eps, Store: s.db, Publisher: s.bus, Metrics: s.metrics, AckWait: s.cfg.Bus.AckWait,
		Log: s.log.With().Str("component", "webhooks").Logger(),
	})
	if err != nil {
		return nil, nil, err
	}
	reg := delivery.NewRegistry(delivery.RegistryConfig{
		Store: s.db, Dispatcher: d, Configured: eps, Resolver: s.opts.WebhookResolver,
		AllowPrivate: func(tenant string) bool {
			t := s.cfg.Tenant(tenant)
			return t != nil && t.WebhooksAllowPrivate
		},
	})
	return d, reg, nil
}

// webhookAPI adapts the delivery registry to the API's interface.
type webhookAPI struct{ r *delivery.Registry }

var _ api.WebhookRegistry = webhookAPI{}

func (a webhookAPI) CreateWebhook(ctx context.Context, tenant string, w api.NewWebhook) (api.WebhookInfo, error) {
	wh, err := a.r.Create(ctx, tenant, delivery.NewWebhook(w))
	return api.WebhookInfo(wh), err
}

func (a webhookAPI) ListWebhooks(ctx context.Context, tenant string) ([]api.WebhookInfo, error) {
	ws, err := a.r.List(ctx, tenant)
	out := make([]api.WebhookInfo, len(ws))
	for i, w := range ws {
		out[i] = api.WebhookInfo(w)
	}
	return out, err
}

func (a webhookAPI) GetWebhook(ctx context.Context, tenant, id string) (api.WebhookInfo, error) {
	wh, err := a.r.Get(ctx, tenant, id)
	return api.WebhookInfo(wh), err
}

func (a webhookAPI) DeleteWebhook(ctx context.Context, tenant, id string) error {
	return a.r.Delete(ctx, tenant, id)
}

func (a webhookAPI) RotateWebhookSecret(ctx context.Context, tenant, id string) (api.WebhookInfo, error) {
	wh, err := a.r.Rotate(ctx, tenant, id)
	return api.WebhookInfo(wh), err
}

func (a webhookAPI) EnableWebhook(ctx context.Context, tenant, id string) (api.WebhookInfo, error) {
	wh, err := a.r.Enable(ctx, tenant, id)
	return api.WebhookInfo(wh), err
}

func (a webhookAPI) WebhookDeliveries(ctx context.Context, tenant, id, cursor string) ([]store.WebhookAttempt, string, error) {
	return a.r.Deliveries(ctx, tenant, id, cursor)
}

func (a webhookAPI) TestWebhook(ctx context.Context, tenant, id string) (api.WebhookTest, error) {
	res, err := a.r.Test(ctx, tenant, id)
	return api.WebhookTest(res), err
}

func (a webhookAPI) ReplayWebhook(ctx context.Context, tenant, id string, since time.Time) error {
	return a.r.Replay(ctx, tenant, id, since)
}

// accountStateEvents publishes account.state when an account becomes ready or paused.
func (s *Server) accountStateEvents(tenant string, ch gateway.Channel, account string, log zerolog.Logger) func(context.Context, bool, string, time.Time) {
	return func(ctx context.Context, ready bool, reason string, until time.Time) {
		data := gateway.AccountStateData{Channel: ch, Account: account, State: "ready"}
		if !ready {
			data.State, data.Reason = "paused", reason
			if !until.IsZero() {
				data.Until = &until
			}
		}
		if err := pipeline.PublishTenantEvent(context.WithoutCancel(ctx), s.bus, tenant, gateway.EventAccountState, time.Now(), data); err != nil {
			log.Warn().Err(err).Msg("publishing account.state")
		}
	}
}
