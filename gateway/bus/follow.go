package bus

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Follow calls fn, in stream order, for every message matching subjectFilter ("sb.status.>",
// "sb.status.acme") from now on, or from the oldest one kept when fromStart is set. It uses an
// ordered ephemeral consumer: nothing is acknowledged, nothing durable is left behind, and gaps
// (a reconnect) are repaired by the client. It works on the limits streams (STATUS, INBOUND,
// DEADLETTER), not on the work queues. It returns nil when ctx is done, or fn's first error.
func (b *Bus) Follow(ctx context.Context, subjectFilter string, fromStart bool, fn func(*Msg) error) error {
	if err := validateFilter(subjectFilter); err != nil {
		return err
	}
	stream := StreamFor(subjectFilter)
	if stream == StreamSend || stream == StreamDispatch {
		return gateway.FieldErrorf(gateway.EInvalidField, "filter_subject",
			"%s is a work queue: follow STATUS, INBOUND or DEADLETTER subjects", stream)
	}
	policy := jetstream.DeliverNewPolicy
	if fromStart {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err := b.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjectFilter},
		DeliverPolicy:  policy,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return gateway.WrapError(gateway.EUnavailable, err, "bus: follow %s", subjectFilter)
	}
	it, err := cons.Messages()
	if err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "bus: follow %s", subjectFilter)
	}
	defer it.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		raw, err := it.Next(jetstream.NextMaxWait(repullInterval))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, nats.ErrTimeout) {
				continue // see repullInterval; also how ctx is noticed
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return gateway.WrapError(gateway.EUnavailable, err, "bus: follow %s", subjectFilter)
			}
			b.log.Debug().Err(err).Str("filter", subjectFilter).Msg("follow: transient error")
			continue
		}
		m := newMsg(raw)
		m.raw = nil
		if err := fn(m); err != nil {
			return err
		}
	}
}

// FollowSince calls fn, in stream order, for every message matching subjectFilter that the
// stream stored at or after since, and returns once it has seen those there were when it was
// called (a replay; later messages are not waited for). Like Follow, it leaves nothing behind.
func (b *Bus) FollowSince(ctx context.Context, subjectFilter string, since time.Time, fn func(*Msg) error) error {
	if err := validateFilter(subjectFilter); err != nil {
		return err
	}
	stream := StreamFor(subjectFilter)
	if stream == StreamSend || stream == StreamDispatch {
		return gateway.FieldErrorf(gateway.EInvalidField, "filter_subject", "%s is a work queue: replay STATUS or INBOUND subjects", stream)
	}
	cons, err := b.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjectFilter},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "bus: replay %s", subjectFilter)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "bus: replay %s", subjectFilter)
	}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 100)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return gateway.WrapError(gateway.EUnavailable, err, "bus: replay %s", subjectFilter)
		}
		got := 0
		for raw := range batch.Messages() {
			left--
			got++
			m := newMsg(raw)
			m.raw = nil
			if err := fn(m); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return gateway.WrapError(gateway.EUnavailable, err, "bus: replay %s", subjectFilter)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if got == 0 {
			return nil // what was pending is gone (the stream's retention): nothing more to see
		}
	}
	return nil
}
