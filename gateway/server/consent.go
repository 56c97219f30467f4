package server

import (
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/consent"
)

// consentPolicy reads a tenant channel's consent policy from the config on every call, so a
// reload takes effect at once.
func (s *Server) consentPolicy(tenant string, ch gateway.Channel) (consent.Policy, bool) {
	t := s.cfg.Tenant(tenant)
	if t == nil {
		return consent.Policy{}, false
	}
	cc := t.Channel(ch)
	if cc == nil {
		return consent.Policy{}, false
	}
	c := cc.Consent
	return consent.Policy{
		RequireOptIn: c.RequireOptIn != nil && *c.RequireOptIn,
		ReplyWindow:  c.ReplyWindow,
		Keywords:     consent.Keywords{OptOut: c.Keywords.OptOut, OptIn: c.Keywords.OptIn, Help: c.Keywords.Help},
		Replies:      consent.Replies{OptOut: c.Replies.OptOut, OptIn: c.Replies.OptIn, Help: c.Replies.Help},
	}, true
}

// consentRegistry is the registry behind the consent API and the keyword handler.
func (s *Server) consentRegistry() *consent.Registry {
	return &consent.Registry{Store: s.db, Log: s.log.With().Str("component", "consent").Logger(), Metrics: s.metrics, Events: s.bus}
}

// consentStage is the consent check at one point of the pipeline (intake, router, runner).
func (s *Server) consentStage(point string) pipeline.Stage {
	return &consent.Stage{
		Store: s.db, Policy: s.consentPolicy, Point: point,
		Log: s.log.With().Str("component", "consent").Logger(), Metrics: s.metrics,
	}
}

// keywordHandler is the first inbound handler: reply window, STOP/START/HELP.
func (s *Server) keywordHandler(reg *consent.Registry) pipeline.InboundHandler {
	return &consent.Handler{
		Registry: reg, Store: s.db, Intake: s.intake, Policy: s.consentPolicy,
		Log: s.log.With().Str("component", "keywords").Logger(),
	}
}
