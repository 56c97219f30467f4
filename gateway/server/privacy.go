package server

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/wastore"

	"github.com/switchboard-gateway/switchboard/pipeline/privacy"
)

// wirePrivacy builds the privacy service (erasure jobs, export, restriction) and the retention
// sweeper; Run runs the erasure worker and the sweeper.
func (s *Server) wirePrivacy(log zerolog.Logger) error {
	svc, err := privacy.New(privacy.Config{Store: s.db, Indexer: s.keyring, Bus: s.bus, Streams: s.bus, Contacts: waContacts{s},
		Log: log, OnDone: s.erasureDone})
	if err != nil {
		return err
	}
	s.privacy = svc
	s.sweeper, err = privacy.NewSweeper(privacy.SweeperConfig{Store: s.db, Policies: s.retentionPolicies, Log: log,
		OnSweep: func(tenant string, r privacy.SweepReport) {
			s.metrics.RetentionPurged(tenant, r.Contents, r.Messages, r.Inbound, r.StatusEvents)
			if s.opts.OnSweep != nil {
				s.opts.OnSweep(tenant, r)
			}
		}})
	return err
}

// erasureDone runs when an erasure job ends: after a tenant erasure the tenant's API keys, deleted
// from the store, stop working at once (the API caches resolved keys).
func (s *Server) erasureDone(e store.Erasure) {
	if e.WholeTenant && e.State == store.ErasureDone {
		s.api.ForgetTenantKeys(e.Tenant)
	}
	if s.opts.OnErasure != nil {
		s.opts.OnErasure(e)
	}
}

// retentionPolicies reads the tenants' retention from the config at every sweep.
func (s *Server) retentionPolicies() map[string]privacy.Retention {
	out := map[string]privacy.Retention{}
	for _, t := range s.cfg.Tenants {
		if t.Retention.IsZero() {
			continue
		}
		c, m, i := t.Retention.Durations()
		out[t.ID] = privacy.Retention{Content: c, Metadata: m, Inbound: i}
	}
	return out
}

// waContacts erases a phone number from the device stores of the tenant's WhatsApp accounts.
// A running adapter's whatsmeow client may still hold the session in memory until it restarts.
type waContacts struct{ s *Server }

func (w waContacts) EraseContact(ctx context.Context, tenant string, subject gateway.Address) (int64, error) {
	t := w.s.cfg.Tenant(tenant)
	if subject.Kind != gateway.KindPhone || t == nil || t.Channels.WhatsApp == nil {
		return 0, nil
	}
	var accounts []string
	for _, a := range t.Channels.WhatsApp.Accounts {
		if a.Driver == config.DriverWhatsMeow {
			accounts = append(accounts, a.Name)
		}
	}
	if len(accounts) == 0 {
		return 0, nil
	}
	dialect, err := wastore.ParseDialect(w.s.db.Driver())
	if err != nil {
		return 0, err
	}
	// The tables exist once an account was linked; creating them is idempotent.
	if err := wastore.Migrate(ctx, w.s.db.SQL(), dialect); err != nil {
		return 0, err
	}
	var n int64
	for _, account := range accounts {
		c, err := wastore.New(w.s.db.SQL(), dialect, wastore.KeyringSealer(w.s.keyring), tenant, account, wastore.Options{})
		if err != nil {
			return n, err
		}
		k, err := c.EraseContact(ctx, subject.String())
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
