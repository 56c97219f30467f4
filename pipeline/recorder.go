package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/store"
)

// StatusApplier is the part of store.Messages that the Recorder needs.
type StatusApplier interface {
	ApplyStatus(ctx context.Context, events []gateway.StatusEvent) ([]store.Applied, error)
}

// RecorderConfig wires a Recorder.
type RecorderConfig struct {
	Store StatusApplier // required
	Bus   BatchConsumer // required
	// Log receives the delivery-status log (DESIGN.md §3.4): one info line per status change.
	// Give it a timestamp (zerolog's .Timestamp()) for the "time" field.
	Log zerolog.Logger
	// OnApplied, when set, sees every applied batch (advanced or not) after it is durable and
	// logged, before the bus messages are acked: the seam for SSE, webhooks and metrics. It must not
	// block for long.
	OnApplied func(ctx context.Context, applied []store.Applied)
	// Durable is the consumer name on STATUS; default "recorder".
	Durable string
	// BatchSize is the most events applied in one transaction; default 256.
	BatchSize int
	// MaxDeliver before an event goes to the dead letters; default 20.
	MaxDeliver int
	// Concurrency is how many batches are applied at once; default 1, which also keeps the log
	// in stream order.
	Concurrency int
	// AckWait and BackOff tune the consumer (the bus's defaults when zero).
	AckWait time.Duration
	BackOff []time.Duration
	// ConfirmAcks waits for the server to confirm each ack. Off (the default), acks are sent
	// without waiting: much faster, and an ack lost in a crash only means one more delivery, which
	// the handler shrugs off (it is idempotent).
	ConfirmAcks bool
}

// Recorder consumes STATUS in batches, applies each batch to the store in one transaction and
// writes the delivery-status log.
type Recorder struct {
	cfg RecorderConfig
}

// NewRecorder returns a Recorder.
func NewRecorder(cfg RecorderConfig) (*Recorder, error) {
	if cfg.Store == nil || cfg.Bus == nil {
		return nil, errors.New("pipeline: recorder needs a store and a bus")
	}
	if cfg.Durable == "" {
		cfg.Durable = "recorder"
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 20
	}
	return &Recorder{cfg: cfg}, nil
}

// Run consumes STATUS until ctx is done, then drains what is in flight.
func (r *Recorder) Run(ctx context.Context) error {
	return r.cfg.Bus.ConsumeBatch(ctx, bus.ConsumerConfig{
		Stream:        bus.StreamStatus,
		Durable:       r.cfg.Durable,
		FilterSubject: bus.StatusSubject("*"),
		MaxDeliver:    r.cfg.MaxDeliver,
		Batch:         r.cfg.BatchSize,
		Concurrency:   r.cfg.Concurrency,
		AckWait:       r.cfg.AckWait,
		BackOff:       r.cfg.BackOff,
		AsyncAck:      !r.cfg.ConfirmAcks,
	}, r.HandleBatch)
}

// HandleBatch applies one batch of STATUS messages and returns one error per message (nil: ack).
func (r *Recorder) HandleBatch(ctx context.Context, msgs []*bus.Msg) []error {
	errs := make([]error, len(msgs))
	events := make([]gateway.StatusEvent, 0, len(msgs))
	index := make([]int, 0, len(msgs)) // events[i] came from msgs[index[i]]
	for i, m := range msgs {
		var ev gateway.StatusEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.MessageID == "" || ev.Tenant == "" || !ev.Status.Valid() {
			errs[i] = bus.Terminal(fmt.Errorf("pipeline: bad status event on %s (seq %d): %v", m.Subject, m.StreamSeq, err))
			continue
		}
		events = append(events, ev)
		index = append(index, i)
	}
	if len(events) == 0 {
		return errs
	}
	applied, err := r.cfg.Store.ApplyStatus(ctx, events)
	if err == nil && len(applied) != len(events) {
		err = fmt.Errorf("pipeline: store applied %d of %d status events", len(applied), len(events))
	}
	if err != nil {
		err = fmt.Errorf("pipeline: apply status: %w", err)
		for _, i := range index {
			errs[i] = err
		}
		return errs
	}
	for _, a := range applied {
		r.logApplied(a)
	}
	if r.cfg.OnApplied != nil {
		r.cfg.OnApplied(ctx, applied)
	}
	return errs
}

// logApplied writes the delivery-status log line of one applied event: info for a change of the
// current status, debug for history only, nothing for a duplicate.
func (r *Recorder) logApplied(a store.Applied) {
	if a.Duplicate {
		return
	}
	ev := a.Event
	var le *zerolog.Event
	switch {
	case a.Missing:
		r.cfg.Log.Debug().Str("event", "delivery_dropped").Str("msg_id", ev.MessageID).Str("tenant", ev.Tenant).
			Str("status", string(ev.Status)).Msg("status event for an unknown message")
		return
	case a.Advanced:
		le = r.cfg.Log.Info()
	default:
		le = r.cfg.Log.Debug().Bool("history_only", true)
	}
	DeliveryLine(le, a).Send()
}

// DeliveryLine adds the fields of a delivery-status log line (DESIGN.md §3.4) to e: event,
// msg_id, tenant, channel, account, to (masked), subject (s_…), status, previous, latency_ms since
// accepted, and error_code when set. Never content, never a full identifier.
func DeliveryLine(e *zerolog.Event, a store.Applied) *zerolog.Event {
	ev := a.Event
	e = e.Str("event", "delivery").Str("msg_id", ev.MessageID).Str("tenant", ev.Tenant).
		Str("channel", string(ev.Channel)).Str("account", ev.Account).
		Str("to", a.Masked).Str("subject", a.Subject).
		Str("status", string(ev.Status)).Str("previous", string(ev.Previous))
	if !a.CreatedAt.IsZero() && !ev.At.IsZero() {
		ms := ev.At.Sub(a.CreatedAt).Milliseconds()
		if ms < 0 {
			ms = 0
		}
		e = e.Int64("latency_ms", ms)
	}
	if ev.Error != nil && ev.Error.Code != "" {
		e = e.Str("error_code", ev.Error.Code)
	}
	return e
}
