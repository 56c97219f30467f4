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
)

// MessageLoader loads one message of a tenant (store.Messages implements it).
type MessageLoader interface {
	Message(ctx context.Context, tenant, id string, withContent bool) (*gateway.Message, error)
}

// RouterConfig wires a Router.
type RouterConfig struct {
	// Store, when set, loads each message so the stages see all of it but its content, and a
	// message that is no longer waiting is skipped. Without it the router reads nothing: stages
	// see the routing envelope (id, tenant, channel, account, hops), which is all RouteStage
	// needs. The gateway runs without it because recipient policy (consent, restriction) is
	// checked at accept and again by the runner right before the send — later than here, so
	// nothing a person changes while a message waits in DISPATCH slips through.
	Store MessageLoader
	Bus   Consumer // required: publishes and consumes
	// Stages run in order before routing (window ▸ rate ▸ route). A rejection ends the message
	// `rejected` with its code.
	Stages []Stage
	// Durable is the consumer name on SEND; default "router".
	Durable string
	// Concurrency is how many messages are routed at once; default 64.
	Concurrency int
	// MaxDeliver before a message goes to the dead letters; default 10. A message left accepted
	// is republished by the Resumer later.
	MaxDeliver int
	// AckWait and BackOff tune the consumer (the bus's defaults when zero).
	AckWait time.Duration
	BackOff []time.Duration
	// ConfirmAcks waits for the server to confirm each ack. Off (the default), acks are sent
	// without waiting: much faster, and an ack lost in a crash only means one more delivery, which
	// the handler shrugs off (it is idempotent).
	ConfirmAcks bool
	Log         zerolog.Logger
	Clock       Clock
}

// Router consumes SEND, runs the stages, and routes each accepted message to
// DISPATCH sb.dispatch.<channel>.<tenant>.<account>, after a `queued` status event.
type Router struct {
	cfg RouterConfig
}

// NewRouter returns a Router.
func NewRouter(cfg RouterConfig) (*Router, error) {
	if cfg.Bus == nil {
		return nil, errors.New("pipeline: router needs a bus")
	}
	if cfg.Durable == "" {
		cfg.Durable = "router"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 10
	}
	return &Router{cfg: cfg}, nil
}

// Run consumes SEND until ctx is done, then drains what is in flight.
func (r *Router) Run(ctx context.Context) error {
	return r.cfg.Bus.Consume(ctx, bus.ConsumerConfig{
		Stream:        bus.StreamSend,
		Durable:       r.cfg.Durable,
		FilterSubject: bus.SendSubject("*"),
		MaxDeliver:    r.cfg.MaxDeliver,
		Concurrency:   r.cfg.Concurrency,
		AckWait:       r.cfg.AckWait,
		BackOff:       r.cfg.BackOff,
		AsyncAck:      !r.cfg.ConfirmAcks,
	}, r.Handle)
}

// Handle routes one message from SEND. It is exported for tests and for a caller with its own
// consumer; Run uses it.
func (r *Router) Handle(ctx context.Context, msg *bus.Msg) error {
	var d gateway.Dispatch
	if err := json.Unmarshal(msg.Data, &d); err != nil || d.MessageID == "" || d.Tenant == "" {
		return bus.Terminal(fmt.Errorf("pipeline: bad dispatch on %s: %v", msg.Subject, err))
	}
	m, err := r.load(ctx, d)
	if err != nil || m == nil {
		return err
	}
	// A queued message is routed again: the previous attempt may have died between the queued
	// event and the dispatch. The bus drops a dispatch it has seen (same message id), and the
	// runner skips a message that was sent.
	if err := RunStages(ctx, r.cfg.Stages, m); err != nil {
		ge, rejected := Rejection(err)
		if !rejected {
			return err // transient: a RetryLater delay travels in the error (NakDelay)
		}
		return PublishStatus(ctx, r.cfg.Bus, statusEvent(m, gateway.StatusRejected, r.cfg.Clock.now(), &gateway.ErrorDetail{Code: ge.Code, Message: ge.Message}))
	}
	out := gateway.Dispatch{MessageID: m.ID, Tenant: m.Tenant, Channel: m.Channel, Account: m.Account, Hops: m.Hops}
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	// Queued first, dispatch second, so that `queued` is on STATUS before the runner can publish
	// `sent`. If the process dies in between, SEND redelivers and the dispatch follows.
	if m.Status == gateway.StatusAccepted {
		if err := PublishStatus(ctx, r.cfg.Bus, statusEvent(m, gateway.StatusQueued, r.cfg.Clock.now(), nil)); err != nil {
			return err
		}
	}
	if err := r.cfg.Bus.Publish(ctx, bus.DispatchSubject(string(m.Channel), m.Tenant, m.Account), m.ID, data); err != nil {
		return fmt.Errorf("pipeline: publish dispatch %s: %w", m.ID, err)
	}
	return nil
}

// statusEvent returns a status event about m.
// load returns the message to route: from the store when the router has one (nil when it is
// gone or no longer waiting), else the envelope of d, which is then assumed accepted — a
// redelivery publishes its queued event again, and the bus and the store drop the duplicate.
func (r *Router) load(ctx context.Context, d gateway.Dispatch) (*gateway.Message, error) {
	if r.cfg.Store == nil {
		return &gateway.Message{ID: d.MessageID, Tenant: d.Tenant, Channel: d.Channel, Account: d.Account,
			Hops: d.Hops, Direction: gateway.Outbound, Status: gateway.StatusAccepted}, nil
	}
	m, err := r.cfg.Store.Message(ctx, d.Tenant, d.MessageID, false)
	if IsGone(err) {
		r.cfg.Log.Debug().Str("msg_id", d.MessageID).Str("tenant", d.Tenant).Msg("router: message is gone (erased?), dropping")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pipeline: load %s: %w", d.MessageID, err)
	}
	if m.Status != gateway.StatusAccepted && m.Status != gateway.StatusQueued {
		// Past the router already (sent, or finished): a late republish by the Resumer.
		return nil, nil
	}
	return m, nil
}

func statusEvent(m *gateway.Message, s gateway.Status, at time.Time, e *gateway.ErrorDetail) gateway.StatusEvent {
	return gateway.StatusEvent{
		MessageID: m.ID, Tenant: m.Tenant, Channel: m.Channel, Account: m.Account,
		Status: s, At: at.UTC(), Error: e,
	}
}
