package pipeline

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/store"
)

// MessageCreator is the part of store.Messages that Intake needs.
type MessageCreator interface {
	CreateMessage(ctx context.Context, nm store.NewMessage) (existing *gateway.Message, existingHash string, created bool, err error)
}

// Indexer computes the blind index of an identifier (crypt.Keyring implements it).
type Indexer interface {
	BlindIndex(ctx context.Context, tenant, identifier string) (string, error)
}

// IntakeConfig wires an Intake.
type IntakeConfig struct {
	Store MessageCreator // required
	Bus   Publisher      // required
	// Replays, when set, is asked for a message with the same idempotency key before the stages
	// run, so a replay gets its original answer even when policy changed since (an opt-out).
	Replays store.IdempotencyFinder
	// Stages run before the message is stored; the first error is returned to the caller as is
	// (a *gateway.Error such as recipient_opted_out becomes the API's 4xx answer).
	Stages []Stage
	// Retry, when set, is told about a stored message whose publish failed (Resumer.Retry), so it
	// is republished soon instead of at the next periodic scan.
	Retry func(gateway.Dispatch)
	// Indexer, when set, gives the accepted log line its subject (s_…).
	Indexer Indexer
	Log     zerolog.Logger
	Clock   Clock
}

// Intake accepts outbound messages: accept-time stages, a group-committed store write, then a
// publish to SEND. It is what gateway/api calls for POST /v1/messages.
type Intake struct {
	cfg IntakeConfig
}

// NewIntake returns an Intake.
func NewIntake(cfg IntakeConfig) (*Intake, error) {
	if cfg.Store == nil || cfg.Bus == nil {
		return nil, errors.New("pipeline: intake needs a store and a bus")
	}
	return &Intake{cfg: cfg}, nil
}

// Accept stores nm.Message as accepted and hands it to the pipeline. It fills in the id, status,
// direction and timestamps when they are empty.
//
// When the tenant already has a message with the same idempotency key, nothing is stored or
// published, and Accept returns that message, its request hash and created=false: the caller
// compares the hashes (Stripe semantics). Otherwise it returns the new message and created=true.
//
// A failed publish after the store write is not an error: the message is durable (the store is
// the outbox) and the Resumer publishes it.
func (in *Intake) Accept(ctx context.Context, nm store.NewMessage) (msg *gateway.Message, existingHash string, created bool, err error) {
	m := nm.Message
	if m == nil {
		return nil, "", false, gateway.Errorf(gateway.EInternal, "no message to accept")
	}
	now := in.cfg.Clock.now().UTC()
	if m.ID == "" {
		m.ID = gateway.NewMessageID()
	}
	if m.Direction == "" {
		m.Direction = gateway.Outbound
	}
	m.Status = gateway.StatusAccepted
	if m.CreatedAt.IsZero() {
		m.CreatedAt = now
	}
	if m.UpdatedAt.IsZero() {
		m.UpdatedAt = m.CreatedAt
	}
	if m.IdempotencyKey != "" && in.cfg.Replays != nil {
		existing, hash, err := in.cfg.Replays.MessageByIdempotencyKey(ctx, m.Tenant, m.IdempotencyKey)
		if err == nil {
			return existing, hash, false, nil
		}
		if gateway.ErrorCode(err) != gateway.ENotFound {
			return nil, "", false, err
		}
	}
	if err := RunStages(ctx, in.cfg.Stages, m); err != nil {
		return nil, "", false, err
	}
	existing, hash, created, err := in.cfg.Store.CreateMessage(ctx, nm)
	if err != nil {
		return nil, "", false, err
	}
	if !created {
		return existing, hash, false, nil
	}
	d := gateway.Dispatch{MessageID: m.ID, Tenant: m.Tenant, Channel: m.Channel, Account: m.Account, Hops: m.Hops}
	in.logAccepted(ctx, m)
	if err := in.publish(ctx, d); err != nil {
		in.cfg.Log.Warn().Err(err).Str("msg_id", m.ID).Str("tenant", m.Tenant).
			Msg("publish to SEND failed after the message was stored; the resumer will publish it")
		if in.cfg.Retry != nil {
			in.cfg.Retry(d)
		}
	}
	return m, "", true, nil
}

func (in *Intake) publish(ctx context.Context, d gateway.Dispatch) error {
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return in.cfg.Bus.Publish(ctx, bus.SendSubject(d.Tenant), d.MessageID, data)
}

// logAccepted writes the first delivery-log line of a message (status accepted). The later lines
// come from the Recorder.
func (in *Intake) logAccepted(ctx context.Context, m *gateway.Message) {
	ev := in.cfg.Log.Info()
	if !ev.Enabled() {
		return
	}
	ev = ev.Str("event", "delivery").Str("msg_id", m.ID).Str("tenant", m.Tenant).
		Str("channel", string(m.Channel)).Str("account", m.Account).Str("to", m.Peer.Masked())
	if in.cfg.Indexer != nil {
		if idx, err := in.cfg.Indexer.BlindIndex(ctx, m.Tenant, m.Peer.String()); err == nil {
			ev = ev.Str("subject", ShortSubject(idx))
		}
	}
	ev.Str("status", string(gateway.StatusAccepted)).Str("previous", "").Int64("latency_ms", 0).Send()
}

// ShortSubject is the log form of a blind index: "s_" and its first 12 hex characters (the same
// as crypt.ShortSubject).
func ShortSubject(index string) string {
	if len(index) > 12 {
		index = index[:12]
	}
	return "s_" + index
}
