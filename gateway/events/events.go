// Package events is the source of a tenant's live events (GET /v1/events): status events from
// the STATUS stream, inbound messages from the INBOUND stream and tenant events (consent changes,
// account states, disabled webhooks) from the EVENTS stream, read with ordered consumers from a
// start sequence, so a client that resumes from an event id misses nothing and sees nothing twice.
package events

import (
	"context"
	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
)

// Source implements api.EventSource over the bus.
type Source struct {
	JS     jetstream.JetStream // bus.Bus.JetStream()
	Sealer pipeline.Sealer     // opens inbound envelopes
	Log    zerolog.Logger
	// Done, when closed, ends every stream (the server is shutting down: http.Server.Shutdown
	// waits for handlers, and an event stream would never end by itself).
	Done <-chan struct{}
}

var _ api.EventSource = (*Source)(nil)

// raw is one stream message on its way to the merge loop.
type raw struct {
	stream string
	seq    uint64
	data   []byte
}

// Events implements api.EventSource. Both streams are read from their start positions by ordered
// consumers filtered on the tenant's subjects; one loop merges them in arrival order and gives
// each event the cursor of both streams at that point.
func (s *Source) Events(ctx context.Context, tenant string, from api.EventCursor, fn func(api.Event) error) error {
	if err := bus.ValidateToken("tenant", tenant); err != nil {
		return err
	}
	cur := from
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := make(chan raw)
	var stops []func()
	defer func() {
		cancel() // unblocks a callback waiting to hand over a message
		for _, stop := range stops {
			stop()
		}
	}()
	for _, sub := range []struct {
		stream, filter string
		after          uint64
	}{
		{bus.StreamStatus, bus.StatusSubject(tenant), cur.Status},
		{bus.StreamInbound, bus.InboundSubject(tenant, "*"), cur.Inbound},
		{bus.StreamEvents, bus.EventSubject(tenant, "*"), cur.Events},
	} {
		stop, err := s.follow(ctx, sub.stream, sub.filter, sub.after, in)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
	}
	for {
		var m raw
		select {
		case <-ctx.Done():
			return nil
		case <-s.Done:
			return nil
		case m = <-in:
		}
		ev := api.Event{}
		ok := false
		switch m.stream {
		case bus.StreamStatus:
			cur.Status = m.seq
			ev, ok = s.status(m.data)
		case bus.StreamInbound:
			cur.Inbound = m.seq
			ev, ok = s.inbound(ctx, m.data)
		case bus.StreamEvents:
			cur.Events = m.seq
			ev, ok = s.tenantEvent(m.data)
		}
		if !ok {
			continue
		}
		ev.Cursor = cur
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Position implements api.EventSource: the last sequence of each stream.
func (s *Source) Position(ctx context.Context) (api.EventCursor, error) {
	var cur api.EventCursor
	var err error
	if cur.Status, err = s.lastSeq(ctx, bus.StreamStatus); err != nil {
		return cur, err
	}
	if cur.Inbound, err = s.lastSeq(ctx, bus.StreamInbound); err != nil {
		return cur, err
	}
	if cur.Events, err = s.lastSeq(ctx, bus.StreamEvents); err != nil {
		return cur, err
	}
	return cur, nil
}

func (s *Source) lastSeq(ctx context.Context, stream string) (uint64, error) {
	st, err := s.JS.Stream(ctx, stream)
	if err != nil {
		return 0, gateway.WrapError(gateway.EUnavailable, err, "events: stream %s", stream)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, gateway.WrapError(gateway.EUnavailable, err, "events: stream %s", stream)
	}
	return info.State.LastSeq, nil
}

// follow starts an ordered consumer on stream after sequence after and hands its messages to in,
// one at a time. The returned stop ends it and waits for its callback to return.
func (s *Source) follow(ctx context.Context, stream, filter string, after uint64, in chan<- raw) (func(), error) {
	cons, err := s.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    after + 1,
	})
	if err != nil {
		return nil, gateway.WrapError(gateway.EUnavailable, err, "events: follow %s", filter)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		md, err := msg.Metadata()
		if err != nil {
			return
		}
		select {
		case in <- raw{stream: stream, seq: md.Sequence.Stream, data: msg.Data()}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return nil, gateway.WrapError(gateway.EUnavailable, err, "events: follow %s", filter)
	}
	return func() {
		cc.Stop()
		<-cc.Closed()
	}, nil
}

func (s *Source) status(data []byte) (api.Event, bool) {
	var ev gateway.StatusEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		s.Log.Warn().Err(err).Msg("events: undecodable status event")
		return api.Event{}, false
	}
	return api.Event{Type: api.EventMessageStatus, Channel: ev.Channel, Status: ev.Status, Data: data}, true
}

// inbound opens an envelope; one that no longer opens (its subject was erased) is skipped.
func (s *Source) inbound(ctx context.Context, data []byte) (api.Event, bool) {
	var env pipeline.InboundEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		s.Log.Warn().Err(err).Msg("events: undecodable inbound envelope")
		return api.Event{}, false
	}
	ev, err := pipeline.OpenInbound(ctx, s.Sealer, env)
	if err != nil {
		s.Log.Debug().Err(err).Str("msg_id", env.ID).Msg("events: inbound envelope does not open (erased?)")
		return api.Event{}, false
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return api.Event{}, false
	}
	return api.Event{Type: api.EventMessageInbound, Channel: ev.Channel, Data: b}, true
}

// tenantEvent is a consent change, account state or disabled webhook: its data as published.
func (s *Source) tenantEvent(data []byte) (api.Event, bool) {
	var ev gateway.TenantEvent
	if err := json.Unmarshal(data, &ev); err != nil || ev.Type == "" {
		s.Log.Warn().Err(err).Msg("events: undecodable tenant event")
		return api.Event{}, false
	}
	var ch struct {
		Channel gateway.Channel `json:"channel"`
	}
	_ = json.Unmarshal(ev.Data, &ch) // consent and account events name their channel
	return api.Event{Type: ev.Type, Channel: ch.Channel, Data: ev.Data}, true
}
