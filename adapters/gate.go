package adapters

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
)

// Gate is implemented by adapters whose account can be unable to send for a while: a WhatsApp
// number that is logged out, banned, or reconnecting. The Runner consumes the account's dispatch
// subject only while the gate is open, so queued messages wait in the stream instead of burning
// their delivery attempts on an account that cannot send; a dispatch already taken when the gate
// closes waits for it to open again (its ack deadline kept alive) instead of being retried.
type Gate interface {
	// WaitReady blocks until the account can send, or ctx ends (then it returns ctx's error).
	WaitReady(ctx context.Context) error
	// WaitNotReady blocks until the account stops being able to send, or ctx ends.
	WaitNotReady(ctx context.Context) error
	// Paused reports whether the account cannot send now, why, and until when if known.
	Paused() (paused bool, reason string, until time.Time)
}

// pausedRetry is the redelivery delay of a dispatch whose runner stopped while it waited for its
// account: short, because no consumer takes it before the account is ready again.
const pausedRetry = time.Second

// ackWait is the consumer's ack wait, the period that heartbeats must beat.
func (r *Runner) ackWait() time.Duration {
	if r.cfg.AckWait > 0 {
		return r.cfg.AckWait
	}
	return bus.DefaultAckWait
}

// consume runs the dispatch consumer until ctx ends. With a Gate it runs only while the account
// is ready: it stops (draining what it holds) when the account stops being ready, and starts again
// when it is back. It returns nil when ctx ends, an error when the consumer fails.
func (r *Runner) consume(ctx context.Context) error {
	g, gated := r.cfg.Adapter.(Gate)
	if !gated {
		return r.consumeOnce(ctx, ctx)
	}
	for {
		if err := g.WaitReady(ctx); err != nil {
			return nil // ctx ended
		}
		r.cfg.Log.Info().Str("event", "dispatch_resumed").Msg("account ready: taking dispatches")
		if r.cfg.OnState != nil {
			r.cfg.OnState(ctx, true, "", time.Time{})
		}
		lctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.consumeOnce(lctx, ctx) }()
		notReady := make(chan error, 1)
		go func() { notReady <- g.WaitNotReady(lctx) }()
		select {
		case err := <-done:
			stop()
			<-notReady
			return err
		case err := <-notReady:
			if err == nil {
				_, reason, until := g.Paused()
				ev := r.cfg.Log.Warn().Str("event", "dispatch_paused").Str("reason", reason)
				if !until.IsZero() {
					ev = ev.Time("until", until)
				}
				ev.Msg("account cannot send: dispatches wait in the stream")
				if r.cfg.OnState != nil {
					r.cfg.OnState(ctx, false, reason, until)
				}
			}
			stop()
			if err := <-done; err != nil || ctx.Err() != nil {
				return err
			}
		}
	}
}

// consumeOnce consumes DISPATCH until ctx ends. Handlers that wait for a paused account give up
// when run ends (the runner stops), not when ctx does (the gate closed).
func (r *Runner) consumeOnce(ctx, run context.Context) error {
	return r.cfg.Bus.Consume(ctx, bus.ConsumerConfig{
		Stream:        bus.StreamDispatch,
		Durable:       r.cfg.Durable,
		FilterSubject: r.Subject(),
		AckWait:       r.cfg.AckWait,
		MaxDeliver:    r.cfg.MaxDeliver,
		BackOff:       r.cfg.BackOff,
		Concurrency:   r.cfg.Concurrency,
		AsyncAck:      !r.cfg.ConfirmAcks,
	}, func(hctx context.Context, m *bus.Msg) error { return r.handleDispatch(hctx, m, run) })
}

// handleGated handles one dispatch while telling the bus it is in progress (a Send that waits for
// the account's pacing may take longer than the ack wait, and must not be redelivered meanwhile).
// With a Gate it first waits for the account to be ready, and when a send fails because the
// account stopped being ready, it waits again and retries within the same delivery. run, when not
// nil, ends those waits (the runner stops); the dispatch is then retried shortly.
func (r *Runner) handleGated(ctx context.Context, msg *bus.Msg, d gateway.Dispatch, run context.Context) error {
	defer r.heartbeat(msg)()
	g, gated := r.cfg.Adapter.(Gate)
	for {
		if gated {
			if err := r.awaitReady(ctx, g, d, run); err != nil {
				return err
			}
		}
		err := r.handle(ctx, msg, d)
		if err == nil || !gated || bus.IsTerminal(err) || ctx.Err() != nil {
			return err
		}
		paused, reason, _ := g.Paused()
		if !paused {
			return err
		}
		r.cfg.Log.Debug().Err(err).Str("msg_id", d.MessageID).Str("reason", reason).
			Msg("the account stopped being ready during the send: waiting for it, then sending again")
	}
}

// awaitReady waits for the gate to open. The caller's heartbeat keeps the dispatch's ack
// deadline alive meanwhile.
func (r *Runner) awaitReady(ctx context.Context, g Gate, d gateway.Dispatch, run context.Context) error {
	if paused, _, _ := g.Paused(); !paused {
		return nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if run != nil {
		defer context.AfterFunc(run, cancel)()
	}
	r.cfg.Log.Debug().Str("msg_id", d.MessageID).Msg("dispatch waits for the account to be ready")
	if err := g.WaitReady(wctx); err != nil {
		_, reason, _ := g.Paused()
		return pipeline.RetryLater(pausedRetry, gateway.WrapError(gateway.EUnavailable, errors.Join(err, context.Cause(wctx)),
			"the %s account %s cannot send (%s)", r.cfg.Channel, r.cfg.Account, reason))
	}
	return nil
}

// heartbeat reports msg in progress every third of the ack wait until the returned function is
// called (which waits for the heartbeat goroutine to end).
func (r *Runner) heartbeat(msg *bus.Msg) (stop func()) {
	every := r.ackWait() / 3
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					r.cfg.Log.Debug().Err(err).Str("msg_id", msg.MsgID).Msg("could not extend the dispatch's ack deadline")
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// Gated reports whether the runner's adapter is a Gate (its account can be paused).
func (r *Runner) Gated() bool {
	_, ok := r.cfg.Adapter.(Gate)
	return ok
}

// Name names the runner's account for readiness checks and logs: channel/tenant/account.
func (r *Runner) Name() string {
	return string(r.cfg.Channel) + "/" + r.cfg.Tenant + "/" + r.cfg.Account
}

// Ready is a readiness check (/readyz): nil when the account can send (always without a Gate, and
// while another replica holds the account's lease), otherwise an unavailable error saying why.
func (r *Runner) Ready(ctx context.Context) error {
	g, ok := r.cfg.Adapter.(Gate)
	if !ok || r.Standby() {
		return nil // a replica on standby is ready: another one holds the account
	}
	paused, reason, until := g.Paused()
	if !paused {
		return nil
	}
	if !until.IsZero() {
		return gateway.Errorf(gateway.EUnavailable, "%s cannot send until %s: %s", r.Name(), until.UTC().Format(time.RFC3339), reason)
	}
	return gateway.Errorf(gateway.EUnavailable, "%s cannot send: %s", r.Name(), reason)
}
