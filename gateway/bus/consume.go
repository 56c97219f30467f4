package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Msg is one delivered message. Handlers must not keep it after they return.
type Msg struct {
	Subject      string
	Data         []byte
	Header       nats.Header
	MsgID        string // Nats-Msg-Id
	NumDelivered uint64 // 1 on the first delivery
	StreamSeq    uint64
	Stream       string
	Consumer     string
	Time         time.Time // when the stream stored it

	raw      jetstream.Msg // nil for Follow
	progress func()        // extends the handler's deadline
}

// InProgress tells the server the handler is still working, so it does not redeliver the message
// when the ack wait runs out, and extends the handler context's deadline by one ack wait. Call it
// periodically (well within AckWait) during long work. A no-op for Follow messages.
func (m *Msg) InProgress() error {
	if m.raw == nil {
		return nil
	}
	if m.progress != nil {
		m.progress()
	}
	if err := m.raw.InProgress(); err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "bus: in progress")
	}
	return nil
}

// Handler processes one message. nil acknowledges it (after the handler returned, so only once
// its effect is durable); an error naks it with the consumer's backoff delay; Terminal(err), or an
// error on the last allowed delivery, moves it to the dead letters.
//
// The context is not canceled when Consume's context is (the bus drains in-flight work); it is
// canceled when the message's ack deadline passes without InProgress, because the server then
// hands the message to another worker.
type Handler func(ctx context.Context, m *Msg) error

// BatchHandler processes up to ConsumerConfig.Batch messages at once and returns one error per
// message, in order, with Handler's meaning. A result of the wrong length fails every message.
type BatchHandler func(ctx context.Context, msgs []*Msg) []error

// Terminal marks err as not worth retrying: the message goes to the dead letters at once.
func Terminal(err error) error {
	if err == nil {
		err = errors.New("terminal failure")
	}
	return &terminalError{err: err}
}

// IsTerminal reports whether err was marked with Terminal.
func IsTerminal(err error) bool {
	var t *terminalError
	return errors.As(err, &t)
}

type terminalError struct{ err error }

func (t *terminalError) Error() string { return t.err.Error() }
func (t *terminalError) Unwrap() error { return t.err }

// Errors a handler may see as its context's cause, or in dead letters.
var (
	// ErrAckDeadline is the cause of a handler context canceled because its ack wait ran out.
	ErrAckDeadline = errors.New("bus: ack deadline passed; the message will be redelivered")
	// ErrMaxDeliveries is the dead-letter reason of a message redelivered after its last allowed
	// attempt never finished (the process died, or the handler overran its ack wait).
	ErrMaxDeliveries = errors.New("bus: delivered more than MaxDeliver times without finishing")
)

// ConsumerConfig describes a durable pull consumer and how to run it.
type ConsumerConfig struct {
	// Stream to consume; when empty, the stream that owns FilterSubject.
	Stream string
	// Durable names the consumer; its progress survives restarts. Required; one subject token.
	Durable string
	// FilterSubject selects the subjects ("sb.dispatch.whatsapp.acme.sales", "sb.status.>"). Required.
	// On the work-queue streams (SEND, DISPATCH) two consumers' filters must not overlap.
	FilterSubject string
	// AckWait is how long a delivery may stay unacknowledged before the server redelivers it
	// (default 30s). The handler's context expires at the same time unless it calls InProgress.
	AckWait time.Duration
	// MaxDeliver is the number of attempts before a failing message becomes a dead letter
	// (default 5).
	MaxDeliver int
	// BackOff is the nak delay after failed delivery n: BackOff[n-1], the last entry repeating
	// (default DefaultBackOff). The server's redelivery after an ack timeout follows the same
	// schedule, but never sooner than AckWait.
	BackOff []time.Duration
	// MaxAckPending bounds messages delivered and not yet acknowledged, naks waiting out their
	// delay included (default: the server's, 1000).
	MaxAckPending int
	// Concurrency is the number of handlers running at once (default 1).
	Concurrency int
	// Batch is, for ConsumeBatch, the most messages handed to one BatchHandler call (default 100).
	Batch int
	// AsyncAck sends acks without waiting for the server's confirmation. Faster; the price is
	// that an ack lost in a crash or disconnect means one more (harmless, idempotent) delivery.
	// By default every ack is confirmed (double ack) before the next message is taken.
	AsyncAck bool
}

// spec is a ConsumerConfig with its defaults resolved.
type spec struct {
	stream, durable, filter string
	ackWait                 time.Duration
	maxDeliver              int
	backoff                 []time.Duration // nak delays
	serverBackoff           []time.Duration // redelivery after ack timeout: max(AckWait, backoff[i])
	maxAckPending           int
	concurrency             int
	batch                   int
	asyncAck                bool
}

func resolve(c ConsumerConfig) (spec, error) {
	s := spec{
		stream: c.Stream, durable: c.Durable, filter: c.FilterSubject, ackWait: c.AckWait,
		maxDeliver: c.MaxDeliver, backoff: c.BackOff, maxAckPending: c.MaxAckPending,
		concurrency: c.Concurrency, batch: c.Batch, asyncAck: c.AsyncAck,
	}
	if err := ValidateToken("durable", s.durable); err != nil {
		return s, err
	}
	if s.filter == "" {
		return s, gateway.FieldErrorf(gateway.EMissingField, "filter_subject", "consumer %s needs a filter subject", s.durable)
	}
	if err := validateFilter(s.filter); err != nil {
		return s, err
	}
	owner := StreamFor(s.filter)
	if s.stream == "" {
		s.stream = owner
	} else if s.stream != owner {
		return s, gateway.FieldErrorf(gateway.EInvalidField, "stream", "filter %q belongs to stream %s, not %s", s.filter, owner, s.stream)
	}
	if s.ackWait <= 0 {
		s.ackWait = DefaultAckWait
	}
	if s.maxDeliver <= 0 {
		s.maxDeliver = DefaultMaxDeliver
	}
	if len(s.backoff) == 0 {
		s.backoff = DefaultBackOff()
	}
	s.serverBackoff = make([]time.Duration, len(s.backoff))
	for i, d := range s.backoff {
		if d <= 0 {
			return s, gateway.FieldErrorf(gateway.EInvalidField, "backoff", "delays must be positive")
		}
		s.serverBackoff[i] = max(d, s.ackWait)
	}
	if s.concurrency <= 0 {
		s.concurrency = 1
	}
	if s.batch <= 0 {
		s.batch = DefaultBatch
	}
	if s.maxAckPending < 0 {
		s.maxAckPending = 0
	}
	return s, nil
}

// nakDelay is the delay after failed delivery n (1-based).
func (s spec) nakDelay(n uint64) time.Duration {
	i := min(int(n)-1, len(s.backoff)-1)
	return s.backoff[max(i, 0)]
}

// ackWaitFor is the server's ack wait for delivery n.
func (s spec) ackWaitFor(n uint64) time.Duration {
	i := min(int(n)-1, len(s.serverBackoff)-1)
	return s.serverBackoff[max(i, 0)]
}

func (b *Bus) ensureConsumer(ctx context.Context, s spec) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	cons, err := b.js.CreateOrUpdateConsumer(ctx, s.stream, jetstream.ConsumerConfig{
		Durable:       s.durable,
		Description:   "switchboard " + s.filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.ackWait,
		// The bus counts attempts itself (MaxDeliver) and dead-letters the message; the server
		// never stops redelivering, so a message whose last attempt died with its process still
		// reaches the dead letters instead of sitting in the work queue for ever.
		MaxDeliver:    -1,
		BackOff:       s.serverBackoff,
		FilterSubject: s.filter,
		MaxAckPending: s.maxAckPending,
		Metadata:      map[string]string{"sb_max_deliver": strconv.Itoa(s.maxDeliver)},
	})
	if err != nil {
		return nil, gateway.WrapError(gateway.EUnavailable, err, "bus: consumer %s on %s", s.durable, s.stream)
	}
	return cons, nil
}

// Consume runs h on the messages of a durable pull consumer with up to cfg.Concurrency handlers
// at once. It blocks until ctx is done, then stops fetching, lets the handlers finish the
// messages already taken (acking them), and returns nil. It returns an error when the consumer
// cannot be created, or when consuming fails for good (the consumer was deleted, the connection
// closed).
func (b *Bus) Consume(ctx context.Context, cfg ConsumerConfig, h Handler) error {
	cfg.Batch = 1
	return b.consume(ctx, cfg, func(ctx context.Context, msgs []*Msg) []error {
		errs := make([]error, len(msgs))
		for i, m := range msgs {
			errs[i] = h(ctx, m)
		}
		return errs
	})
}

// ConsumeBatch is Consume for handlers that work in groups (group commit): each call gets the
// messages available at that moment, at most cfg.Batch.
func (b *Bus) ConsumeBatch(ctx context.Context, cfg ConsumerConfig, h BatchHandler) error {
	return b.consume(ctx, cfg, h)
}

func (b *Bus) consume(ctx context.Context, cfg ConsumerConfig, h BatchHandler) error {
	s, err := resolve(cfg)
	if err != nil {
		return err
	}
	cons, err := b.ensureConsumer(ctx, s)
	if err != nil {
		if ctx.Err() != nil {
			return nil // shutting down before we started
		}
		return err
	}
	prefetch := s.concurrency * s.batch
	if s.batch == 1 {
		prefetch = 2 * s.concurrency
	}
	if s.maxAckPending > 0 {
		prefetch = min(prefetch, s.maxAckPending)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(max(prefetch, 1)))
	if err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "bus: consume %s", s.durable)
	}
	log := b.log.With().Str("stream", s.stream).Str("consumer", s.durable).Logger()
	log.Debug().Int("concurrency", s.concurrency).Int("batch", s.batch).Msg("consuming")

	// The stopper drains the iterator when ctx ends (or when the reader gave up): Next then
	// returns what is buffered, then ErrMsgIteratorClosed.
	readerDone := make(chan struct{})
	stopperDone := make(chan struct{})
	go func() {
		defer close(stopperDone)
		select {
		case <-ctx.Done():
		case <-readerDone:
		}
		it.Drain()
	}()

	in := make(chan received, s.batch)
	var readErr error
	go func() {
		defer close(readerDone)
		defer close(in)
		readErr = b.read(ctx, it, in, log)
	}()

	var wg sync.WaitGroup
	for range s.concurrency {
		wg.Go(func() {
			for first := range in {
				batch := []received{first}
			fill:
				for len(batch) < s.batch {
					select {
					case m, ok := <-in:
						if !ok {
							break fill
						}
						batch = append(batch, m)
					default:
						break fill
					}
				}
				b.process(ctx, s, batch, h, log)
			}
		})
	}
	wg.Wait()
	<-readerDone
	<-stopperDone
	if s.asyncAck {
		fctx, cancel := opContext(ctx)
		_ = b.nc.FlushWithContext(fctx) // push the last acks out before we return
		cancel()
	}
	if readErr != nil {
		log.Error().Err(readErr).Msg("consumer stopped")
		return gateway.WrapError(gateway.EUnavailable, readErr, "bus: consume %s on %s", s.durable, s.stream)
	}
	log.Debug().Msg("consumer drained")
	return nil
}

// repullInterval bounds how long Next waits before it returns and is called again. nats.go
// (v1.55) decides whether to send the next pull request only when Next loops; if a pull's whole
// batch arrives before the goroutine sending that pull has marked it finished, Next skips the
// new request and waits, with nothing outstanding, until the missed-heartbeat timer (2 x 15s)
// resets it. Returning regularly re-runs that check, so such a stall lasts at most this long.
const repullInterval = 200 * time.Millisecond

// read moves messages from the iterator to in until the iterator closes. It returns the error
// that closed it, or nil when ctx ended.
func (b *Bus) read(ctx context.Context, it jetstream.MessagesContext, in chan<- received, log zerolog.Logger) error {
	var failures int
	for {
		m, err := it.Next(jetstream.NextMaxWait(repullInterval))
		if err == nil {
			failures = 0
			in <- received{m, time.Now()}
			continue
		}
		switch {
		case errors.Is(err, nats.ErrTimeout):
			continue // see repullInterval
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			if ctx.Err() != nil {
				return nil
			}
			return err
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrBadRequest),
			errors.Is(err, jetstream.ErrConsumerNotFound):
			it.Stop()
			return err
		}
		if ctx.Err() != nil {
			continue // draining: Next reports the close soon
		}
		failures++
		log.Warn().Err(err).Int("failures", failures).Msg("fetching messages")
		// Transient (missed heartbeats, leadership change): retry, pausing a little if it persists.
		if failures > 1 {
			t := time.NewTimer(min(time.Duration(failures)*100*time.Millisecond, 2*time.Second))
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// received is a message taken from the iterator, and when: its ack wait started about then.
type received struct {
	msg jetstream.Msg
	at  time.Time
}

// process runs one batch through the handler and settles every message.
func (b *Bus) process(ctx context.Context, s spec, batch []received, h BatchHandler, log zerolog.Logger) {
	run := make([]*Msg, 0, len(batch))
	for _, r := range batch {
		m := newMsg(r.msg)
		if m.NumDelivered > uint64(s.maxDeliver) {
			b.deadLetter(ctx, s, m, ErrMaxDeliveries, log)
			continue
		}
		// A message that waited in the prefetch buffer while every worker was busy has used part
		// of its ack wait: restart the server's clock so the handler gets all of it.
		if time.Since(r.at) > s.ackWaitFor(m.NumDelivered)/4 {
			_ = r.msg.InProgress()
		}
		run = append(run, m)
	}
	if len(run) == 0 {
		return
	}

	// The handler's context outlives Consume's cancellation (drain), but not the ack deadline.
	wait := s.ackWaitFor(run[0].NumDelivered)
	for _, m := range run[1:] {
		wait = min(wait, s.ackWaitFor(m.NumDelivered))
	}
	hctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	timer := time.AfterFunc(wait, func() { cancel(ErrAckDeadline) })
	for _, m := range run {
		m.progress = func() { timer.Reset(wait) }
	}
	errs := callHandler(hctx, h, run, log)
	timer.Stop()
	cancel(nil)

	// Settle. Acks are confirmed unless AsyncAck: acks of one connection are processed in order,
	// so confirming the last one confirms them all.
	lastOK := -1
	if !s.asyncAck {
		for i, err := range errs {
			if err == nil {
				lastOK = i
			}
		}
	}
	for i, m := range run {
		err := errs[i]
		switch {
		case err == nil && i == lastOK:
			actx, cancel := opContext(ctx)
			if aerr := m.raw.DoubleAck(actx); aerr != nil {
				log.Warn().Err(aerr).Uint64("seq", m.StreamSeq).Msg("ack not confirmed; the message may be redelivered")
			}
			cancel()
		case err == nil:
			if aerr := m.raw.Ack(); aerr != nil {
				log.Warn().Err(aerr).Uint64("seq", m.StreamSeq).Msg("ack failed; the message may be redelivered")
			}
		case IsTerminal(err) || m.NumDelivered >= uint64(s.maxDeliver):
			b.deadLetter(ctx, s, m, err, log)
		default:
			delay := s.nakDelay(m.NumDelivered)
			var asked interface{ NakDelay() time.Duration }
			if errors.As(err, &asked) && asked.NakDelay() > 0 {
				delay = asked.NakDelay() // the channel said when (429 Retry-After)
			}
			log.Warn().Err(err).Str("code", gateway.ErrorCode(err)).Uint64("seq", m.StreamSeq).
				Str("msg_id", m.MsgID).Uint64("delivery", m.NumDelivered).Dur("retry_in", delay).
				Msg("handler failed; will retry")
			if nerr := m.raw.NakWithDelay(delay); nerr != nil {
				log.Warn().Err(nerr).Uint64("seq", m.StreamSeq).Msg("nak failed; redelivery after the ack wait")
			}
		}
	}
}

// callHandler runs h, turning a panic or a result of the wrong length into an error per message.
func callHandler(ctx context.Context, h BatchHandler, msgs []*Msg, log zerolog.Logger) (errs []error) {
	fail := func(err error) []error {
		out := make([]error, len(msgs))
		for i := range out {
			out[i] = err
		}
		return out
	}
	defer func() {
		if r := recover(); r != nil {
			log.Error().Str("panic", fmt.Sprint(r)).Str("stack", string(debug.Stack())).Msg("handler panicked")
			errs = fail(gateway.Errorf(gateway.EInternal, "bus: handler panicked: %v", r))
		}
	}()
	errs = h(ctx, msgs)
	if len(errs) != len(msgs) {
		log.Error().Int("messages", len(msgs)).Int("results", len(errs)).Msg("batch handler returned the wrong number of results")
		return fail(gateway.Errorf(gateway.EInternal, "bus: batch handler returned %d results for %d messages", len(errs), len(msgs)))
	}
	return errs
}

func newMsg(raw jetstream.Msg) *Msg {
	m := &Msg{Subject: raw.Subject(), Data: raw.Data(), Header: raw.Headers(), raw: raw}
	if md, err := raw.Metadata(); err == nil {
		m.NumDelivered = md.NumDelivered
		m.StreamSeq = md.Sequence.Stream
		m.Stream = md.Stream
		m.Consumer = md.Consumer
		m.Time = md.Timestamp
	}
	if m.Header != nil {
		m.MsgID = m.Header.Get(jetstream.MsgIDHeader)
	}
	return m
}

// headerValue makes s safe as a NATS header value (one line) and bounds its length.
func headerValue(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "")
	}
	return s
}
