package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"time"

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

// BatchPublisher publishes many messages at once and waits for all their acknowledgements
// (*bus.Bus implements it).
type BatchPublisher interface {
	PublishBatch(ctx context.Context, msgs []bus.Outgoing) []error
}

// backgroundQueue is how many accepted messages may wait for the background publisher before
// Accept publishes by itself (backpressure instead of unbounded memory).
const backgroundQueue = 4096

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
	// Background, when set, publishes accepted messages to SEND from Run, in batches, instead of
	// inside Accept: the integrator's answer waits for the store's commit only, not for the bus
	// too. Nothing is lost by it: the store is the outbox, so a message whose publish dies with the
	// process is still accepted in the store, and the Resumer publishes it at the next start. Run
	// must be running; when its queue is full, Accept publishes by itself.
	Background BatchPublisher
	// Indexer, when set, gives the accepted log line its subject (s_…).
	Indexer Indexer
	Log     zerolog.Logger
	Clock   Clock
}

// Intake accepts outbound messages: accept-time stages, a group-committed store write, then a
// publish to SEND. It is what gateway/api calls for POST /v1/messages.
type Intake struct {
	cfg   IntakeConfig
	queue chan gateway.Dispatch // to Run, when cfg.Background is set
}

// NewIntake returns an Intake.
func NewIntake(cfg IntakeConfig) (*Intake, error) {
	if cfg.Store == nil || cfg.Bus == nil {
		return nil, errors.New("pipeline: intake needs a store and a bus")
	}
	in := &Intake{cfg: cfg}
	if cfg.Background != nil {
		in.queue = make(chan gateway.Dispatch, backgroundQueue)
	}
	return in, nil
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
	select {
	case in.queue <- d: // nil without Background: never ready
	default:
		if err := in.publish(ctx, d); err != nil {
			in.publishFailed(d, err)
		}
	}
	return m, "", true, nil
}

func (in *Intake) publishFailed(d gateway.Dispatch, err error) {
	in.cfg.Log.Warn().Err(err).Str("msg_id", d.MessageID).Str("tenant", d.Tenant).
		Msg("publish to SEND failed after the message was stored; the resumer will publish it")
	if in.cfg.Retry != nil {
		in.cfg.Retry(d)
	}
}

// maxBackgroundBatch bounds one batch of the background publisher.
const maxBackgroundBatch = 512

// drainTimeout bounds the publish of what is still queued when Run stops.
const drainTimeout = 5 * time.Second

// Run publishes what Accept queued (Background) until ctx is done, then publishes what is still
// queued. Without Background it returns at once.
func (in *Intake) Run(ctx context.Context) error {
	if in.queue == nil {
		return nil
	}
	batch := make([]gateway.Dispatch, 0, maxBackgroundBatch)
	for {
		select {
		case d := <-in.queue:
			batch = append(batch[:0], d)
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
			defer cancel()
			for {
				batch = in.take(batch[:0])
				if len(batch) == 0 {
					return nil
				}
				in.publishBatch(dctx, batch)
			}
		}
		in.publishBatch(ctx, in.take(batch))
	}
}

// take adds what is queued to batch, without waiting, up to maxBackgroundBatch.
func (in *Intake) take(batch []gateway.Dispatch) []gateway.Dispatch {
	for len(batch) < maxBackgroundBatch {
		select {
		case d := <-in.queue:
			batch = append(batch, d)
		default:
			return batch
		}
	}
	return batch
}

func (in *Intake) publishBatch(ctx context.Context, batch []gateway.Dispatch) {
	msgs := make([]bus.Outgoing, 0, len(batch))
	sent := batch[:0:0]
	for _, d := range batch {
		data, err := json.Marshal(d)
		if err != nil {
			in.publishFailed(d, err)
			continue
		}
		msgs = append(msgs, bus.Outgoing{Subject: bus.SendSubject(d.Tenant), MsgID: d.MessageID, Data: data})
		sent = append(sent, d)
	}
	for i, err := range in.cfg.Background.PublishBatch(ctx, msgs) {
		if err != nil {
			in.publishFailed(sent[i], err)
		}
	}
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
