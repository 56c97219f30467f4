package automation

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/store"
)

// act carries out one planned action of ev. It returns an error only when the event should be
// delivered again (a transient failure); a final refusal is an outcome.
func (e *Engine) act(ctx context.Context, ev Event, p Planned) error {
	finish := func(result, code string) {
		l := e.cfg.Log.Info().Str("event", "automation").Str("tenant", ev.Tenant).Str("rule", p.Rule).
			Int("action", p.Action).Str("kind", p.Kind).Str("cause", ev.ID).Int("hops", p.Hops).Str("outcome", result)
		if p.MessageID != "" {
			l = l.Str("msg_id", p.MessageID).Str("channel", string(p.Channel)).Str("account", p.Account)
		}
		if p.ToMasked != "" {
			l = l.Str("to", p.ToMasked)
		}
		if code != "" {
			l = l.Str("error_code", code)
		}
		l.Send()
		e.notify(Outcome{Planned: p, Cause: ev.ID, Result: result, ErrorCode: code})
	}
	switch p.Kind {
	case config.ActionForward, config.ActionReply, config.ActionSend:
		result, code, err := e.message(ctx, ev, p)
		if err != nil {
			return err
		}
		finish(result, code)
		return nil
	}
	// Webhook, consent and tag: recorded as done by their action id.
	if e.cfg.Store != nil {
		done, err := e.cfg.Store.ActionDone(ctx, ev.Tenant, p.IdempotencyKey)
		if err != nil {
			return err
		}
		if done {
			finish("duplicate", "")
			return nil
		}
	}
	var err error
	switch p.Kind {
	case config.ActionWebhook:
		err = e.webhook(ctx, ev, p)
	case config.ActionConsent:
		err = e.setConsent(ctx, ev, p)
	case config.ActionTag:
		err = e.tag(ctx, ev, p)
	default:
		err = gateway.Errorf(gateway.EInternal, "unknown action %q", p.Kind)
	}
	var final *gateway.Error
	if errors.As(err, &final) && isFinal(final.Code) {
		finish("rejected", final.Code)
		return nil
	}
	if err != nil {
		return err
	}
	if e.cfg.Store != nil {
		if err := e.cfg.Store.MarkActionDone(ctx, ev.Tenant, p.IdempotencyKey, e.cfg.Clock()); err != nil {
			return err
		}
	}
	finish("accepted", "")
	return nil
}

// isFinal tells refusals that a retry would not change from transient failures.
func isFinal(code string) bool {
	switch code {
	case gateway.EUnavailable, gateway.EInternal:
		return false
	}
	return code != ""
}

// message creates the message of a forward, reply or send through the Intake.
func (e *Engine) message(ctx context.Context, ev Event, p Planned) (result, code string, err error) {
	if e.cfg.Intake == nil {
		return "", "", gateway.Errorf(gateway.EUnavailable, "automation: no intake")
	}
	msg := &gateway.Message{
		ID: p.MessageID, Tenant: ev.Tenant, Direction: gateway.Outbound, Channel: p.Channel, Account: p.Account,
		Peer: p.To, Content: gateway.Content{Text: p.Text}, IdempotencyKey: p.IdempotencyKey, Hops: p.Hops,
		// The origin and hop count travel with the message, so an answer to it can be linked.
		Metadata: map[string]string{MetaRule: p.Rule, MetaCause: ev.ID, MetaAction: p.Kind, MetaHops: strconv.Itoa(p.Hops)},
	}
	if p.Kind == config.ActionReply {
		msg.Content.ReplyTo = ev.ID
	}
	_, _, created, err := e.cfg.Intake.Accept(ctx, store.NewMessage{Message: msg, RequestHash: p.IdempotencyKey})
	var ge *gateway.Error
	switch {
	case err == nil && created:
		return "accepted", "", nil
	case err == nil, errors.As(err, &ge) && ge.Code == gateway.EConflict:
		return "duplicate", "", nil // created on an earlier delivery of this event
	}
	if ge, rejected := pipeline.Rejection(err); rejected {
		// Policy refuses it, as it refuses an API send (recipient_opted_out …): final.
		return "rejected", ge.Code, nil
	}
	return "", "", err
}

// webhookPayload is the body of a webhook action, shaped as pipeline/delivery's events:
// {"type": "automation.<trigger>", "timestamp", "data"}.
type webhookPayload struct {
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp"`
	Data      webhookData `json:"data"`
}

type webhookData struct {
	Rule    string                `json:"rule"`
	EventID string                `json:"event_id"`
	Hops    int                   `json:"hops"`
	Inbound *gateway.InboundEvent `json:"inbound,omitempty"`
	Status  *gateway.StatusEvent  `json:"status,omitempty"`
	Hook    map[string]any        `json:"hook,omitempty"`
	Subject string                `json:"subject,omitempty"` // masked
}

// webhook posts ev to the action's URL, signed (Standard Webhooks, pipeline/delivery), with the
// action id as webhook-id so the receiver can drop a repeat. Failed attempts are retried with
// backoff; when all fail, the event is delivered again later. A refused target (internal without
// allow_private), a missing secret or a 4xx answer other than 408 and 429 are final.
func (e *Engine) webhook(ctx context.Context, ev Event, p Planned) error {
	w := p.webhook
	raw, ok := "", false
	if e.cfg.Secret != nil {
		raw, ok = e.cfg.Secret(w.SecretEnv)
	}
	if !ok || raw == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "secret_env", "the environment variable %s (the webhook's secret_env) is not set", w.SecretEnv)
	}
	secret, err := delivery.ParseSecret(raw)
	if err != nil {
		return err
	}
	body, err := json.Marshal(webhookPayload{Type: "automation." + ev.Kind, Timestamp: ev.At.UTC(), Data: webhookData{
		Rule: p.Rule, EventID: ev.ID, Hops: ev.Hops, Inbound: ev.Inbound, Status: ev.Status, Hook: ev.Body, Subject: ev.Subject.Masked(),
	}})
	if err != nil {
		return gateway.WrapError(gateway.EInvalidField, err, "automation %s: the event does not encode", p.Rule)
	}
	client := e.clients[0]
	if w.AllowPrivate {
		client = e.clients[1]
	}
	endpoint := delivery.Endpoint{URL: w.URL, Secrets: []delivery.Secret{secret}, AllowPrivate: w.AllowPrivate}
	delay := e.cfg.WebhookBackoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, e.cfg.WebhookTimeout)
		status, err := delivery.Post(actx, client, endpoint, p.IdempotencyKey, e.cfg.Clock(), body)
		cancel()
		if err == nil {
			return nil
		}
		e.cfg.Log.Warn().Str("event", "automation_webhook_attempt").Str("tenant", ev.Tenant).Str("rule", p.Rule).
			Int("attempt", attempt).Int("status_code", status).Str("error", err.Error()).Send()
		if gateway.ErrorCode(err) == gateway.EForbidden {
			return gateway.WrapError(gateway.EForbidden, err, "automation %s: webhook target refused", p.Rule)
		}
		if status >= 400 && status < 500 && status != 408 && status != 429 {
			return gateway.Errorf(gateway.EInvalidField, "automation %s: the webhook answered HTTP %d", p.Rule, status)
		}
		if attempt >= e.cfg.WebhookAttempts {
			return gateway.WrapError(gateway.EUnavailable, err, "automation %s: webhook failed %d times", p.Rule, attempt)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay *= 2
	}
}

// setConsent records the subject's opt-in or opt-out through the consent registry, with the
// action id as the evidence's message id (a second record of it is a no-op).
func (e *Engine) setConsent(ctx context.Context, ev Event, p Planned) error {
	if e.cfg.Consent == nil {
		return gateway.Errorf(gateway.EUnavailable, "automation: no consent registry")
	}
	_, err := e.cfg.Consent.Record(ctx, store.ConsentChange{
		Tenant: ev.Tenant, Channel: ev.Channel, Subject: ev.Subject, Category: p.Category, State: store.ConsentState(p.Consent),
		Source: store.SourceAutomation, Actor: "automation:" + p.Rule, At: ev.At, InboundMessageID: p.IdempotencyKey,
		Note: "automation " + p.Rule,
	})
	return err
}

// tag adds and removes the subject's tags.
func (e *Engine) tag(ctx context.Context, ev Event, p Planned) error {
	if e.cfg.Store == nil {
		return gateway.Errorf(gateway.EUnavailable, "automation: no store for tags")
	}
	return e.cfg.Store.UpdateTags(ctx, ev.Tenant, ev.Subject, p.AddTags, p.RemoveTags)
}
