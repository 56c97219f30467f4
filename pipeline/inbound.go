package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// Sealer encrypts what crosses the bus under a subject's key (crypt.Keyring implements it).
type Sealer interface {
	Indexer
	Seal(ctx context.Context, tenant, subject string, ad crypt.AD, plaintext []byte) ([]byte, error)
	Open(ctx context.Context, tenant, subject string, ad crypt.AD, ciphertext []byte) ([]byte, error)
}

// InboundEnvelope is the payload on INBOUND sb.inbound.<tenant>.<channel>. Who wrote and what
// they wrote are sealed under the sender's key; the rest are ids.
type InboundEnvelope struct {
	V                int             `json:"v"`
	ID               string          `json:"id"`
	Tenant           string          `json:"tenant"`
	Channel          gateway.Channel `json:"channel"`
	Account          string          `json:"account"`
	ChannelMessageID string          `json:"channel_message_id"`
	Subject          string          `json:"subject"` // blind index of the sender
	At               time.Time       `json:"at"`
	Sealed           []byte          `json:"sealed"` // inboundSecret, sealed
}

// inboundSecret is the sealed part of an envelope.
type inboundSecret struct {
	From     gateway.Address `json:"from"`
	FromName string          `json:"from_name,omitempty"`
	Chat     string          `json:"chat,omitempty"`
	Content  gateway.Content `json:"content"`
}

func envelopeAD(id string) crypt.AD {
	return crypt.AD{Table: "inbound_envelope", Row: id, Column: "sealed"}
}

// InboundID returns the message id of an inbound message: time-ordered like every message id, and
// the same for the same channel message, so a redelivery by the channel gets the id it had.
func InboundID(tenant string, channel gateway.Channel, account, channelMessageID string, at time.Time) string {
	h := sha256.Sum256([]byte(tenant + "\x00" + string(channel) + "\x00" + account + "\x00" + channelMessageID))
	var u ulid.ULID
	_ = u.SetTime(ulid.Timestamp(at))
	_ = u.SetEntropy(h[:10])
	return "msg_" + strings.ToLower(u.String())
}

// InboundMsgID is the Nats-Msg-Id of an inbound message: channel:account:channel message id.
func InboundMsgID(channel gateway.Channel, account, channelMessageID string) string {
	return string(channel) + ":" + account + ":" + channelMessageID
}

// SealInbound seals ev (which must carry Tenant, Channel, Account, ChannelMessageID and From) into
// an envelope. It sets ev's id when empty.
func SealInbound(ctx context.Context, s Sealer, ev gateway.InboundEvent) (InboundEnvelope, error) {
	if ev.Tenant == "" || ev.ChannelMessageID == "" || ev.From.IsZero() {
		return InboundEnvelope{}, gateway.Errorf(gateway.EInvalidField, "inbound message without tenant, channel message id or sender")
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	if ev.ID == "" {
		ev.ID = InboundID(ev.Tenant, ev.Channel, ev.Account, ev.ChannelMessageID, ev.At)
	}
	subject, err := s.BlindIndex(ctx, ev.Tenant, ev.From.String())
	if err != nil {
		return InboundEnvelope{}, fmt.Errorf("pipeline: index inbound sender: %w", err)
	}
	plain, err := json.Marshal(inboundSecret{From: ev.From, FromName: ev.FromName, Chat: ev.Chat, Content: ev.Content})
	if err != nil {
		return InboundEnvelope{}, err
	}
	sealed, err := s.Seal(ctx, ev.Tenant, subject, envelopeAD(ev.ID), plain)
	if err != nil {
		return InboundEnvelope{}, fmt.Errorf("pipeline: seal inbound: %w", err)
	}
	return InboundEnvelope{
		V: 1, ID: ev.ID, Tenant: ev.Tenant, Channel: ev.Channel, Account: ev.Account,
		ChannelMessageID: ev.ChannelMessageID, Subject: subject, At: ev.At.UTC(), Sealed: sealed,
	}, nil
}

// OpenInbound opens an envelope.
func OpenInbound(ctx context.Context, s Sealer, env InboundEnvelope) (gateway.InboundEvent, error) {
	plain, err := s.Open(ctx, env.Tenant, env.Subject, envelopeAD(env.ID), env.Sealed)
	if err != nil {
		return gateway.InboundEvent{}, fmt.Errorf("pipeline: open inbound %s: %w", env.ID, err)
	}
	var sec inboundSecret
	if err := json.Unmarshal(plain, &sec); err != nil {
		return gateway.InboundEvent{}, fmt.Errorf("pipeline: inbound %s: %w", env.ID, err)
	}
	return gateway.InboundEvent{
		ID: env.ID, Tenant: env.Tenant, Channel: env.Channel, Account: env.Account,
		ChannelMessageID: env.ChannelMessageID, From: sec.From, FromName: sec.FromName, Chat: sec.Chat,
		Content: sec.Content, At: env.At,
	}, nil
}

// PublishInbound seals ev and publishes it on INBOUND with Nats-Msg-Id channel:account:channel
// message id; it returns once the bus acked it.
func PublishInbound(ctx context.Context, p Publisher, s Sealer, ev gateway.InboundEvent) (InboundEnvelope, error) {
	env, err := SealInbound(ctx, s, ev)
	if err != nil {
		return env, err
	}
	data, err := json.Marshal(env)
	if err != nil {
		return env, err
	}
	if err := p.Publish(ctx, bus.InboundSubject(env.Tenant, string(env.Channel)), InboundMsgID(env.Channel, env.Account, env.ChannelMessageID), data); err != nil {
		return env, fmt.Errorf("pipeline: publish inbound %s: %w", env.ID, err)
	}
	return env, nil
}

// Inbound is one received message as the inbound handlers see it.
type Inbound struct {
	Message     *gateway.Message     // direction in, status received, content in the clear
	Event       gateway.InboundEvent // what the channel reported, with FromName and Chat
	Subject     string               // blind index of the sender
	Redelivered bool                 // handlers may have seen it before (a redelivery after a failure)
}

// InboundHandler reacts to an inbound message: keywords (STOP/START/HELP), automations. Handlers run
// in order after the message is stored; an error makes the bus deliver the message again, and the
// handlers run again, so they must be idempotent (the message id is stable across redeliveries).
type InboundHandler interface {
	HandleInbound(ctx context.Context, in Inbound) error
}

// InboundHandlerFunc adapts a function to an InboundHandler.
type InboundHandlerFunc func(ctx context.Context, in Inbound) error

// HandleInbound calls f.
func (f InboundHandlerFunc) HandleInbound(ctx context.Context, in Inbound) error { return f(ctx, in) }

// InboundStore is the part of store.Messages that the InboundRecorder needs.
type InboundStore interface {
	CreateInbound(ctx context.Context, m *gateway.Message) (created bool, err error)
}

// InboundRecorderConfig wires an InboundRecorder.
type InboundRecorderConfig struct {
	Store    InboundStore // required
	Bus      Consumer     // required
	Sealer   Sealer       // required
	Handlers []InboundHandler
	Log      zerolog.Logger
	// Durable is the consumer name on INBOUND; default "inbound-recorder".
	Durable     string
	Concurrency int // default 16
	MaxDeliver  int // default 10
	// AckWait and BackOff tune the consumer (the bus's defaults when zero).
	AckWait time.Duration
	BackOff []time.Duration
	// ConfirmAcks waits for the server to confirm each ack. Off (the default), acks are sent
	// without waiting: much faster, and an ack lost in a crash only means one more delivery, which
	// the handler shrugs off (it is idempotent).
	ConfirmAcks bool
}

// InboundRecorder consumes INBOUND, stores each message once, logs an inbound line, and hands it to
// the inbound handlers.
type InboundRecorder struct {
	cfg InboundRecorderConfig
}

// NewInboundRecorder returns an InboundRecorder.
func NewInboundRecorder(cfg InboundRecorderConfig) (*InboundRecorder, error) {
	if cfg.Store == nil || cfg.Bus == nil || cfg.Sealer == nil {
		return nil, errors.New("pipeline: inbound recorder needs a store, a bus and a sealer")
	}
	if cfg.Durable == "" {
		cfg.Durable = "inbound-recorder"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 10
	}
	return &InboundRecorder{cfg: cfg}, nil
}

// Run consumes INBOUND until ctx is done, then drains what is in flight.
func (r *InboundRecorder) Run(ctx context.Context) error {
	return r.cfg.Bus.Consume(ctx, bus.ConsumerConfig{
		Stream:        bus.StreamInbound,
		Durable:       r.cfg.Durable,
		FilterSubject: bus.InboundSubject("*", "*"),
		MaxDeliver:    r.cfg.MaxDeliver,
		Concurrency:   r.cfg.Concurrency,
		AckWait:       r.cfg.AckWait,
		BackOff:       r.cfg.BackOff,
		AsyncAck:      !r.cfg.ConfirmAcks,
	}, r.Handle)
}

// Handle stores and hands on one INBOUND message.
func (r *InboundRecorder) Handle(ctx context.Context, msg *bus.Msg) error {
	var env InboundEnvelope
	if err := json.Unmarshal(msg.Data, &env); err != nil || env.ID == "" || env.Tenant == "" {
		return bus.Terminal(fmt.Errorf("pipeline: bad inbound envelope on %s: %v", msg.Subject, err))
	}
	ev, err := OpenInbound(ctx, r.cfg.Sealer, env)
	if err != nil {
		if code := gateway.ErrorCode(err); code == gateway.ESubjectErased || code == gateway.ENotFound {
			// The subject was erased after the message was published: nothing left to store.
			r.cfg.Log.Info().Str("event", "inbound_dropped").Str("msg_id", env.ID).Str("tenant", env.Tenant).
				Msg("inbound message of an erased subject")
			return nil
		}
		return err
	}
	m := &gateway.Message{
		ID: ev.ID, Tenant: ev.Tenant, Direction: gateway.Inbound, Channel: ev.Channel, Account: ev.Account,
		Peer: ev.From, Content: ev.Content, Status: gateway.StatusReceived, ChannelMessageID: ev.ChannelMessageID,
		CreatedAt: ev.At, UpdatedAt: ev.At,
	}
	if ev.FromName != "" || ev.Chat != "" {
		extra := make(map[string]string, len(m.Content.Extra)+2)
		for k, v := range m.Content.Extra {
			extra[k] = v
		}
		if ev.FromName != "" {
			extra["from_name"] = ev.FromName
		}
		if ev.Chat != "" {
			extra["chat"] = ev.Chat
		}
		m.Content.Extra = extra
	}
	created, err := r.cfg.Store.CreateInbound(ctx, m)
	if err != nil {
		return fmt.Errorf("pipeline: store inbound %s: %w", m.ID, err)
	}
	redelivered := msg.NumDelivered > 1
	if created {
		r.cfg.Log.Info().Str("event", "inbound").Str("msg_id", m.ID).Str("tenant", m.Tenant).
			Str("channel", string(m.Channel)).Str("account", m.Account).
			Str("from", m.Peer.Masked()).Str("subject", ShortSubject(env.Subject)).
			Int64("latency_ms", max(0, time.Since(ev.At).Milliseconds())).Send()
	} else if !redelivered {
		// The channel delivered it again, long after we stored and handled it.
		r.cfg.Log.Debug().Str("event", "inbound_duplicate").Str("msg_id", m.ID).Str("tenant", m.Tenant).Send()
		return nil
	}
	in := Inbound{Message: m, Event: ev, Subject: env.Subject, Redelivered: redelivered}
	for _, h := range r.cfg.Handlers {
		if err := h.HandleInbound(ctx, in); err != nil {
			return fmt.Errorf("pipeline: inbound handler for %s: %w", m.ID, err)
		}
	}
	return nil
}
