// Package consent enforces DESIGN.md §3.5: the consent registry with its evidence, the per-channel
// policy (require_opt_in, reply_window), the keywords STOP/START/HELP on inbound messages, and the
// Stage that checks every outbound message at accept (Intake), before routing (Router) and right
// before each send (adapters.Runner), so an opt-out is honoured at once on every path.
package consent

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

// Keywords are the single-word keywords of a channel, upper-cased (config merges the built-ins).
type Keywords struct {
	OptOut, OptIn, Help []string
}

// Replies are the confirmations sent when a keyword is recognised; "" sends nothing.
type Replies struct {
	OptOut, OptIn, Help string
}

// Policy is the consent policy of one tenant's channel.
type Policy struct {
	RequireOptIn bool
	ReplyWindow  time.Duration
	Keywords     Keywords
	Replies      Replies
}

// PolicyFunc returns the policy of a tenant's channel; ok=false when the tenant has no such
// channel (nothing is required then, and no keyword is recognised). It is asked on every message,
// so a config reload takes effect at once.
type PolicyFunc func(tenant string, ch gateway.Channel) (Policy, bool)

// Registry records consent decisions and writes one log event per change: the API, the CSV
// import and the keyword handler all go through it.
type Registry struct {
	Store store.Consents
	Log   zerolog.Logger
	// Metrics, when set, counts each recorded change.
	Metrics Metrics
	// Events, when set, gets a consent.changed event per recorded change (webhooks, SSE).
	Events pipeline.Publisher
}

// Metrics counts consent decisions for the operator (gateway/metrics implements it), so that this
// package needs no metrics library.
type Metrics interface {
	ConsentRejected(tenant string, ch gateway.Channel, point, code string)
	ConsentChanged(tenant string, ch gateway.Channel, state, source string)
}

// Record stores one change and logs it (masked subject, never the identifier).
func (r *Registry) Record(ctx context.Context, c store.ConsentChange) (bool, error) {
	recorded, err := r.Store.RecordConsent(ctx, c)
	if err != nil || !recorded {
		return recorded, err
	}
	r.logChange(ctx, c)
	return true, nil
}

// Import stores every change in one transaction and logs each.
func (r *Registry) Import(ctx context.Context, cs []store.ConsentChange) error {
	if err := r.Store.ImportConsent(ctx, cs); err != nil {
		return err
	}
	for _, c := range cs {
		r.logChange(ctx, c)
	}
	return nil
}

// Get returns the subject's current state and history.
func (r *Registry) Get(ctx context.Context, tenant string, ch gateway.Channel, subject gateway.Address) (store.Consent, error) {
	return r.Store.Consent(ctx, tenant, ch, subject)
}

func (r *Registry) logChange(ctx context.Context, c store.ConsentChange) {
	if r.Metrics != nil {
		r.Metrics.ConsentChanged(c.Tenant, c.Channel, string(c.State), string(c.Source))
	}
	event := "consent_change"
	switch c.State {
	case store.ConsentOptedOut:
		event = "opt_out"
	case store.ConsentOptedIn:
		event = "opt_in"
	}
	ev := r.Log.Info().Str("event", event).Str("tenant", c.Tenant).Str("channel", string(c.Channel)).
		Str("to", c.Subject.Masked()).Str("state", string(c.State)).Str("source", string(c.Source)).Str("actor", c.Actor)
	if c.Category != "" {
		ev = ev.Str("category", c.Category)
	}
	if c.InboundMessageID != "" {
		ev = ev.Str("inbound_msg_id", c.InboundMessageID)
	}
	short := ""
	if chk, err := r.Store.CheckConsent(ctx, c.Tenant, c.Channel, c.Subject, c.Category, ""); err == nil {
		short = pipeline.ShortSubject(chk.Subject)
		ev = ev.Str("subject", short)
	}
	ev.Send()
	if r.Events == nil {
		return
	}
	// Masked, with the short blind index: never the identifier itself.
	if err := pipeline.PublishTenantEvent(ctx, r.Events, c.Tenant, gateway.EventConsentChanged, c.At, gateway.ConsentChangedData{
		Channel: c.Channel, Masked: c.Subject.Masked(), Subject: short, Category: c.Category, State: string(c.State),
		Source: string(c.Source), InboundMessageID: c.InboundMessageID,
	}); err != nil {
		r.Log.Warn().Err(err).Str("tenant", c.Tenant).Msg("consent: publishing consent.changed")
	}
}

// Stage is the consent check of pipeline.Stage, used at accept, before routing and right before
// each send. An opt-out always wins (except for the one opt-out confirmation the keyword handler
// granted); with require_opt_in a send needs an opt-in or an open reply window.
type Stage struct {
	Store  store.Consents
	Policy PolicyFunc
	// Point names where the stage runs (intake, router, runner), for the log.
	Point string
	Log   zerolog.Logger
	// Clock is the time the reply window is measured against; nil means time.Now.
	Clock func() time.Time
	// Metrics, when set, counts each rejection.
	Metrics Metrics
}

var _ pipeline.Stage = (*Stage)(nil)

// CategoryOf is the consent category of a message: its metadata "category" when that is
// marketing or utility, else "" (checked against the plain entries only).
func CategoryOf(m *gateway.Message) string {
	if c := m.Metadata["category"]; c == store.CategoryMarketing || c == store.CategoryUtility {
		return c
	}
	return ""
}

// Check implements pipeline.Stage.
func (s *Stage) Check(ctx context.Context, m *gateway.Message) error {
	if m.Direction == gateway.Inbound {
		return nil
	}
	p, ok := s.Policy(m.Tenant, m.Channel)
	if !ok {
		p = Policy{}
	}
	chk, err := s.Store.CheckConsent(ctx, m.Tenant, m.Channel, m.Peer, CategoryOf(m), m.ID)
	if err != nil {
		var ge *gateway.Error
		if errors.As(err, &ge) && ge.Code != gateway.EInternal {
			return err
		}
		return gateway.WrapError(gateway.EUnavailable, err, "consent: the registry is not available")
	}
	if !person(m.Peer) {
		// Groups, chats and channels are not people: they cannot opt in or write from a reply
		// window of their own, so only an opt-out recorded for them applies.
		p.RequireOptIn = false
	}
	if rej := s.decide(p, chk); rej != nil {
		ev := s.Log.Info().Str("event", "consent_rejected").Str("point", s.Point).Str("msg_id", m.ID).Str("tenant", m.Tenant).
			Str("channel", string(m.Channel)).Str("account", m.Account)
		if chk.Erased { // an erasure promised that no later log line ties to the subject
			ev = ev.Bool("erased_subject", true)
		} else {
			ev = ev.Str("to", m.Peer.Masked()).Str("subject", pipeline.ShortSubject(chk.Subject))
		}
		ev.Str("error_code", rej.Code).Send()
		if s.Metrics != nil {
			s.Metrics.ConsentRejected(m.Tenant, m.Channel, s.Point, rej.Code)
		}
		return rej
	}
	if chk.Restricted && person(m.Peer) {
		// Read with consent in one query: both are asked of every send, at accept and at dispatch.
		return gateway.Errorf(gateway.ESubjectRestricted, "processing is restricted for this recipient")
	}
	return nil
}

// person reports whether a is one person (a phone number, a Teams user): what consent is kept for.
func person(a gateway.Address) bool {
	return a.Kind == gateway.KindPhone || a.Kind == gateway.KindTeamsUser
}

func (s *Stage) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock()
}

// decide applies the policy to what the registry says.
func (s *Stage) decide(p Policy, chk store.ConsentCheck) *gateway.Error {
	if chk.Bypass {
		// The opt-out confirmation: the one message the keyword handler created for this STOP.
		return nil
	}
	if chk.OptedOut {
		return gateway.Errorf(gateway.ERecipientOptedOut, "the recipient opted out of messages on this channel")
	}
	if !p.RequireOptIn || chk.OptedIn {
		return nil
	}
	if chk.LastInboundAt.IsZero() {
		return gateway.Errorf(gateway.EConsentRequired, "this channel needs the recipient's opt-in (or a message from them in the last %s) before you write to them", p.ReplyWindow)
	}
	if s.now().Sub(chk.LastInboundAt) >= p.ReplyWindow {
		return gateway.Errorf(gateway.EOutsideWindow, "the recipient last wrote more than %s ago and has not opted in", p.ReplyWindow)
	}
	return nil
}
