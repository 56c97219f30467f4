// Package pipeline holds the stages between the streams (DESIGN.md §2): Intake stores an accepted
// message and publishes it to SEND, the Resumer republishes what never left, the Router runs the
// policy stages and routes to DISPATCH, the Recorder applies STATUS events to the store and writes
// the delivery-status log, and the InboundRecorder stores what people wrote.
//
// Every consumer acknowledges a bus message only after its effect is durable (a store write or a
// publish acked by the bus), and every effect is idempotent (message ids, event ids and channel
// message ids are the dedupe keys), so a crash at any point loses nothing and doubles nothing.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
)

// Stage is one policy step between accept and dispatch: consent, reply window, rate, route. The
// same stages run at accept (Intake: the error goes back to the API client) and again right before
// dispatch (Router and adapters.Runner), because policy can change while a message waits.
//
// Check returns nil to let the message pass. A *gateway.Error with a policy code (see Rejection)
// rejects it: the message ends `rejected` with that code. RetryLater, or any other error (a store
// that is down), makes the bus deliver the message again later.
type Stage interface {
	Check(ctx context.Context, m *gateway.Message) error
}

// StageFunc adapts a function to a Stage.
type StageFunc func(ctx context.Context, m *gateway.Message) error

// Check calls f.
func (f StageFunc) Check(ctx context.Context, m *gateway.Message) error { return f(ctx, m) }

// RunStages runs stages in order and returns the first error.
func RunStages(ctx context.Context, stages []Stage, m *gateway.Message) error {
	for _, s := range stages {
		if err := s.Check(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// transient codes are errors that a later attempt may not see: they never reject a message.
var transient = map[string]bool{
	gateway.EInternal:    true,
	gateway.EUnavailable: true,
	gateway.ETimeout:     true,
	gateway.ERateLimited: true,
}

// Rejection reports whether err rejects a message for good: a *gateway.Error in its chain with a
// code that is not transient (internal, unavailable, timeout, rate_limited) and no RetryLater
// around it.
func Rejection(err error) (*gateway.Error, bool) {
	if err == nil {
		return nil, false
	}
	var re *RetryError
	if errors.As(err, &re) {
		return nil, false
	}
	var ge *gateway.Error
	if !errors.As(err, &ge) || transient[ge.Code] {
		return nil, false
	}
	return ge, true
}

// RetryError asks for the message to be tried again after at least After.
type RetryError struct {
	After time.Duration
	Err   error
}

func (e *RetryError) Error() string { return fmt.Sprintf("retry after %s: %v", e.After, e.Err) }
func (e *RetryError) Unwrap() error { return e.Err }

// NakDelay is the delay the bus should wait before the next delivery.
func (e *RetryError) NakDelay() time.Duration { return e.After }

// RetryLater returns an error that makes the bus deliver the message again after at least d
// (a rate stage that is out of tokens, say).
func RetryLater(d time.Duration, err error) error { return &RetryError{After: d, Err: err} }

// RetryAfter returns the delay err asks for, if any.
func RetryAfter(err error) (time.Duration, bool) {
	var re *RetryError
	if errors.As(err, &re) {
		return re.After, true
	}
	return 0, false
}

// Publisher publishes one message to the bus and waits for its ack. msgID becomes Nats-Msg-Id, so
// a retried publish of the same msgID within the bus's duplicate window is dropped. *bus.Bus
// implements it.
type Publisher interface {
	Publish(ctx context.Context, subject, msgID string, data []byte) error
}

// Consumer publishes and runs durable consumers (*bus.Bus implements it).
type Consumer interface {
	Publisher
	Consume(ctx context.Context, cfg bus.ConsumerConfig, h bus.Handler) error
}

// BatchConsumer runs durable consumers that take messages in batches (*bus.Bus implements it).
type BatchConsumer interface {
	ConsumeBatch(ctx context.Context, cfg bus.ConsumerConfig, h bus.BatchHandler) error
}

// IsGone reports whether err says a message or its subject's key no longer exists (not_found,
// subject_erased): there is nothing left to do for it.
func IsGone(err error) bool {
	code := gateway.ErrorCode(err)
	return code == gateway.ENotFound || code == gateway.ESubjectErased
}

// Clock returns the current time; nil means time.Now.
type Clock func() time.Time

func (c Clock) now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}
