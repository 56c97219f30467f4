package server

import (
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/privacy"
)

// wirePrivacy builds the privacy service (erasure jobs, export, restriction) and the retention
// sweeper; Run runs the erasure worker and the sweeper.
func (s *Server) wirePrivacy(log zerolog.Logger) error {
	svc, err := privacy.New(privacy.Config{Store: s.db, Indexer: s.keyring, Bus: s.bus, Streams: s.bus, Log: log, OnDone: s.opts.OnErasure})
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

// privacyStage rejects messages to a subject whose processing is restricted (subject_restricted).
func (s *Server) privacyStage() pipeline.Stage { return s.privacy.Stage() }
