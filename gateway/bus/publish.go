package bus

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Outgoing is one message to publish. MsgID becomes Nats-Msg-Id: within the duplicate window a
// second publish with the same id is dropped by the stream (and reported as success).
type Outgoing struct {
	Subject string
	MsgID   string
	Data    []byte
	Header  nats.Header // optional; Nats-* headers are set by the bus
}

// Publish stores data on subject with Nats-Msg-Id = msgID and waits for the stream's
// acknowledgement. A duplicate (same msgID within the window) is not an error.
func (b *Bus) Publish(ctx context.Context, subject, msgID string, data []byte) error {
	return b.PublishMsg(ctx, Outgoing{Subject: subject, MsgID: msgID, Data: data})
}

// PublishMsg is Publish with headers.
func (b *Bus) PublishMsg(ctx context.Context, o Outgoing) error {
	m, err := o.msg()
	if err != nil {
		return err
	}
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		return publishError(err, o.Subject)
	}
	return nil
}

// PublishBatch publishes every message asynchronously and waits for all acknowledgements (or
// ctx). It returns one error per message, in order, nil for each one stored (or deduplicated).
func (b *Bus) PublishBatch(ctx context.Context, msgs []Outgoing) []error {
	errs := make([]error, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, o := range msgs {
		m, err := o.msg()
		if err != nil {
			errs[i] = err
			continue
		}
		// More than the async window (4096 pending acks) in flight: wait for room rather than fail.
		f, err := b.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait(ctx)))
		if err != nil {
			errs[i] = publishError(err, o.Subject)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = publishError(err, msgs[i].Subject)
		case <-ctx.Done():
			errs[i] = gateway.WrapError(gateway.ETimeout, ctx.Err(), "bus: publish to %s: no ack", msgs[i].Subject)
		}
	}
	return errs
}

func stallWait(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if left := time.Until(d); left > 0 {
			return left
		}
		return time.Millisecond
	}
	return defaultOpTimeout
}

func (o Outgoing) msg() (*nats.Msg, error) {
	if err := validatePublishSubject(o.Subject); err != nil {
		return nil, err
	}
	if o.MsgID == "" {
		return nil, gateway.FieldErrorf(gateway.EMissingField, "msg_id", "publish to %s needs a message id (Nats-Msg-Id)", o.Subject)
	}
	h := nats.Header{}
	for k, v := range o.Header {
		h[k] = v
	}
	h.Set(jetstream.MsgIDHeader, o.MsgID)
	return &nats.Msg{Subject: o.Subject, Data: o.Data, Header: h}, nil
}

func publishError(err error, subject string) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return gateway.WrapError(gateway.ETimeout, err, "bus: publish to %s", subject)
	default:
		return gateway.WrapError(gateway.EUnavailable, err, "bus: publish to %s", subject)
	}
}
