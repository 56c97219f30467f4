package automation

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
)

// HandleInbound implements pipeline.InboundHandler: it runs the matching rules' actions. An error
// (the store or bus unavailable) makes the bus deliver the message again; the actions already
// taken are then found by their action ids and not taken twice.
func (e *Engine) HandleInbound(ctx context.Context, in pipeline.Inbound) error {
	if e.cfg.Intake == nil || in.Message == nil || in.Message.Peer.IsZero() {
		return nil
	}
	if !e.has(in.Event.Tenant, KindInbound, "") {
		return nil
	}
	hops, err := e.inboundHops(ctx, in.Event)
	if err != nil {
		return err
	}
	ev := InboundEvent(in.Event, hops)
	if ev.Tags, err = e.tags(ctx, ev.Tenant, ev.Subject); err != nil {
		return err
	}
	return e.run(ctx, ev)
}

// HandleStatus runs the status rules a status change starts. The event id is the status event's
// (message and status), so a status delivered twice acts once.
func (e *Engine) HandleStatus(ctx context.Context, se gateway.StatusEvent) error {
	if e.cfg.Intake == nil || !e.has(se.Tenant, KindStatus, "") {
		return nil
	}
	if se.At.IsZero() || e.cfg.Clock().Sub(se.At) > e.cfg.StatusMaxAge {
		return nil
	}
	ev := Event{Kind: KindStatus, ID: "status:" + se.EventID(), Tenant: se.Tenant, At: se.At, Status: &se,
		Channel: se.Channel, Account: se.Account}
	if e.cfg.Store != nil {
		m, err := e.cfg.Store.Message(ctx, se.Tenant, se.MessageID, false)
		if gateway.ErrorCode(err) == gateway.ENotFound || gateway.ErrorCode(err) == gateway.ESubjectErased {
			return nil // erased since
		}
		if err != nil {
			return err
		}
		ev.Subject, ev.Hops = m.Peer, m.Hops
		if e.cfg.Restricted != nil {
			restricted, err := e.cfg.Restricted(ctx, se.Tenant, m.Peer)
			if err != nil || restricted {
				return err
			}
		}
		if ev.Tags, err = e.tags(ctx, ev.Tenant, ev.Subject); err != nil {
			return err
		}
	}
	return e.run(ctx, ev)
}

// HandleHook runs the rules of the tenant's hook name on a call with body; id is the event id
// (the caller's Idempotency-Key or a generated one), so a repeated call acts once. ENotFound when
// no rule of the tenant listens to name.
func (e *Engine) HandleHook(ctx context.Context, tenant, name, id string, body map[string]any, at time.Time) error {
	if !e.has(tenant, KindHook, name) {
		return gateway.FieldErrorf(gateway.ENotFound, "name", "no automation of this tenant listens to hook %q", name)
	}
	if e.cfg.Intake == nil {
		return gateway.Errorf(gateway.EUnavailable, "automations are not running")
	}
	err := e.run(ctx, Event{Kind: KindHook, ID: id, Tenant: tenant, At: at, Hook: name, Body: body})
	var ge *gateway.Error
	if err != nil && !errors.As(err, &ge) {
		// A deadline or a dropped connection: the caller repeats the call, which acts once.
		return gateway.WrapError(gateway.EUnavailable, err, "the hook's actions could not all be taken now: call again with the same Idempotency-Key")
	}
	return err
}

// has reports whether the tenant has a rule with that trigger (and hook name).
func (e *Engine) has(tenant, kind, hook string) bool {
	for _, r := range e.Rules(tenant) {
		if r.Trigger() == kind && (kind != KindHook || r.Hook.Name == hook) {
			return true
		}
	}
	return false
}

// run acts on every rule ev starts. It returns the first error worth a retry of the whole event.
func (e *Engine) run(ctx context.Context, ev Event) error {
	for _, m := range e.PlanEvent(ev) {
		if m.failed {
			// It will not evaluate on a redelivery either: log it and go on with the other rules.
			e.cfg.Log.Warn().Str("event", "automation_error").Str("tenant", ev.Tenant).Str("rule", m.Rule).
				Str("cause", ev.ID).Str("error", m.Skipped).Send()
			e.notify(Outcome{Planned: Planned{Rule: m.Rule, Action: -1}, Cause: ev.ID, Result: "error"})
			continue
		}
		if m.Skipped != "" {
			e.cfg.Log.Warn().Str("event", "automation_loop_stopped").Str("tenant", ev.Tenant).Str("rule", m.Rule).
				Str("cause", ev.ID).Int("hops", ev.Hops).Send()
			e.notify(Outcome{Planned: Planned{Rule: m.Rule, Action: -1, Hops: ev.Hops}, Cause: ev.ID, Result: "loop_stopped"})
			continue
		}
		for _, p := range m.Actions {
			if err := e.act(ctx, ev, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// inboundHops is the hop count an inbound message inherits from the automation message it answers:
// the message it replies to, or the last message sent into its conversation (to its sender, or
// into its chat) within HopWindow. A reply of an automation passes nothing on: an answer to it
// is a conversation, not a chain.
func (e *Engine) inboundHops(ctx context.Context, ev gateway.InboundEvent) (int, error) {
	if e.cfg.Store == nil {
		return 0, nil
	}
	hops := 0
	if ref := ev.Content.ReplyTo; ref != "" {
		id := ref
		if !strings.HasPrefix(ref, "msg_") {
			var err error
			id, err = e.cfg.Store.MessageIDByChannelID(ctx, ev.Tenant, ev.Channel, ev.Account, ref)
			if gateway.ErrorCode(err) == gateway.ENotFound {
				id = ""
			} else if err != nil {
				return 0, err
			}
		}
		if id != "" {
			m, err := e.cfg.Store.Message(ctx, ev.Tenant, id, false)
			switch {
			case err == nil && chained(m):
				hops = m.Hops
			case err != nil && gateway.ErrorCode(err) != gateway.ENotFound && gateway.ErrorCode(err) != gateway.ESubjectErased:
				return 0, err
			}
		}
	}
	peers := []gateway.Address{ev.From}
	if ev.Chat != "" {
		if chat, err := gateway.ParseAddress(ev.Channel, ev.Chat); err == nil && chat != ev.From {
			peers = append(peers, chat)
		}
	}
	for _, peer := range peers {
		m, err := e.cfg.Store.LastOutbound(ctx, ev.Tenant, ev.Channel, ev.Account, peer)
		if code := gateway.ErrorCode(err); code == gateway.ENotFound || code == gateway.ESubjectErased {
			continue
		}
		if err != nil {
			return 0, err
		}
		if chained(m) && ev.At.Sub(m.CreatedAt) <= e.cfg.HopWindow {
			hops = max(hops, m.Hops)
		}
	}
	return hops, nil
}

// chained reports whether an answer to m continues a chain of automations: m was forwarded or
// sent by one.
func chained(m *gateway.Message) bool {
	return m.Hops > 0 && m.Metadata[MetaRule] != "" && m.Metadata[MetaAction] != config.ActionReply
}

func (e *Engine) tags(ctx context.Context, tenant string, subject gateway.Address) ([]string, error) {
	if e.cfg.Store == nil || subject.IsZero() {
		return nil, nil
	}
	return e.cfg.Store.Tags(ctx, tenant, subject)
}

func (e *Engine) notify(o Outcome) {
	if e.cfg.OnAction != nil {
		e.cfg.OnAction(o)
	}
}

// StatusConsumer is the part of the bus the status rules need.
type StatusConsumer interface {
	Consume(ctx context.Context, cfg bus.ConsumerConfig, h bus.Handler) error
}

// StatusDurable is the name of the durable consumer of the STATUS stream the status rules run on.
const StatusDurable = "automation_status"

// RunStatus consumes the STATUS stream for the status rules until ctx is done: at least once, an
// event whose actions failed is delivered again (its done actions are not repeated).
func (e *Engine) RunStatus(ctx context.Context, c StatusConsumer, maxDeliver int) error {
	return c.Consume(ctx, bus.ConsumerConfig{
		Stream: bus.StreamStatus, Durable: StatusDurable, FilterSubject: bus.StatusSubject("*"), MaxDeliver: maxDeliver,
	}, func(ctx context.Context, m *bus.Msg) error {
		var se gateway.StatusEvent
		if err := json.Unmarshal(m.Data, &se); err != nil {
			e.cfg.Log.Warn().Err(err).Msg("automation: undecodable status event")
			return nil
		}
		return e.HandleStatus(ctx, se)
	})
}
