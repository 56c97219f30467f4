package server

import (
	"fmt"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
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

// newWebhooks builds the dispatcher of the tenants' configured webhook endpoints; nil when no
// tenant has one.
func (s *Server) newWebhooks() (*delivery.Dispatcher, error) {
	eps, err := WebhookEndpoints(s.cfg)
	if err != nil || len(eps) == 0 {
		return nil, err
	}
	return delivery.New(delivery.Config{
		Bus: s.bus, Sealer: s.keyring, Endpoints: eps, Metrics: s.metrics, AckWait: s.cfg.Bus.AckWait,
		Log: s.log.With().Str("component", "webhooks").Logger(),
	})
}
