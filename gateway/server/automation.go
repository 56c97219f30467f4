package server

import (
	"context"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/automation"
)

// automationHandler builds the automation engine, its scheduler and (with a config file) its
// reloader, and returns the engine as the inbound handler that runs after the keyword handler.
func (s *Server) automationHandler() (pipeline.InboundHandler, error) {
	s.automations = automation.New(automation.Config{
		Intake: s.intake, Store: s.db, Consent: s.consentRegistry(), Secret: s.opts.LookupEnv,
		Restricted: s.restricted,
		Log:        s.log.With().Str("component", "automation").Logger(), OnAction: s.opts.OnAutomation,
	}, s.cfg)
	// Schedules: the fired-at record per rule is in the store, shared by the replicas; the one
	// holding the scheduler lease fires them.
	sched, err := automation.NewScheduler(automation.SchedulerConfig{
		Engine: s.automations, Fired: s.db, Lease: s.bus.Leases(0, ""),
	})
	if err != nil {
		return nil, err
	}
	s.scheduler = sched
	if s.opts.ConfigFile != "" {
		r, err := automation.NewReloader(automation.ReloaderConfig{
			Path: s.opts.ConfigFile, Engine: s.automations, Signal: s.opts.ReloadSignal,
			OnReload: s.opts.OnReload, Log: s.log.With().Str("component", "reload").Logger(),
		})
		if err != nil {
			return nil, err
		}
		s.reloader = r
	}
	return s.automations, nil
}

// runAutomationStatus runs the status rules on the STATUS stream.
func (s *Server) runAutomationStatus(ctx context.Context) error {
	return s.automations.RunStatus(ctx, s.bus, s.cfg.Bus.MaxDeliver)
}

// restricted tells the automations whether the processing of subject is restricted.
func (s *Server) restricted(ctx context.Context, tenant string, subject gateway.Address) (bool, error) {
	index, err := s.keyring.BlindIndex(ctx, tenant, subject.String())
	if err != nil {
		return false, err
	}
	return s.db.Restricted(ctx, tenant, index)
}
