package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
)

const testKey = "test-store-key-0123456789abcdef0123456789abcdef"

func testLog(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// openBus opens an embedded bus on dir; it is closed when the test ends (Close is idempotent).
func openBus(t testing.TB, dir string) *Bus {
	t.Helper()
	b, err := Open(t.Context(), Config{Embedded: &Embedded{StoreDir: dir, StoreKey: testKey}}, testLog(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// consumeAsync runs Consume in a goroutine; stop cancels it and returns Consume's result.
func consumeAsync(t *testing.T, b *Bus, cfg ConsumerConfig, h Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Consume(ctx, cfg, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// recv waits for one value or fails the test when the test's deadline (or 30s) passes.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	select {
	case v := <-ch:
		return v
	case <-timeout.C:
		t.Fatalf("timed out waiting for %s", what)
	case <-t.Context().Done():
		t.Fatalf("test ended waiting for %s", what)
	}
	var zero T
	return zero
}

func backlog(t *testing.T, b *Bus, stream, durable string) uint64 {
	t.Helper()
	n, err := b.Backlog(t.Context(), stream, durable)
	if err != nil {
		t.Fatalf("Backlog: %v", err)
	}
	return n
}

// waitBacklog polls (there is no event for it) until the consumer's backlog is want.
func waitBacklog(t *testing.T, b *Bus, stream, durable string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		bl := backlog(t, b, stream, durable)
		if bl == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog of %s stays %d, want %d", durable, bl, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPublishConsumeAck(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()
	const n = 20
	for i := range n {
		if err := b.Publish(ctx, SendSubject("acme"), fmt.Sprintf("msg_%d", i), []byte(fmt.Sprintf("p%d", i))); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	got := make(chan *Msg, n)
	stop := consumeAsync(t, b, ConsumerConfig{Durable: "router", FilterSubject: "sb.send.>", Concurrency: 4},
		func(ctx context.Context, m *Msg) error {
			got <- m
			return nil
		})
	seen := map[string]bool{}
	for range n {
		m := recv(t, got, "message")
		if m.Subject != "sb.send.acme" || m.Stream != StreamSend || m.Consumer != "router" || m.NumDelivered != 1 || m.StreamSeq == 0 {
			t.Errorf("unexpected message %+v", m)
		}
		if want := "p" + strings.TrimPrefix(m.MsgID, "msg_"); string(m.Data) != want {
			t.Errorf("MsgID %q carries %q", m.MsgID, m.Data)
		}
		seen[m.MsgID] = true
	}
	if err := stop(); err != nil {
		t.Fatalf("Consume returned %v", err)
	}
	if len(seen) != n {
		t.Fatalf("saw %d distinct messages, want %d", len(seen), n)
	}
	if bl := backlog(t, b, StreamSend, "router"); bl != 0 {
		t.Fatalf("backlog after acks = %d, want 0", bl)
	}
	// Work queue: acknowledged messages are gone from the stream.
	info, err := b.JetStream().Stream(ctx, StreamSend)
	if err != nil {
		t.Fatal(err)
	}
	if msgs := info.CachedInfo().State.Msgs; msgs != 0 {
		t.Fatalf("SEND still holds %d messages", msgs)
	}
}

func TestPublishDeduplicates(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()
	for range 3 {
		if err := b.Publish(ctx, StatusSubject("acme"), "evt_1", []byte("x")); err != nil {
			t.Fatalf("Publish duplicate: %v", err)
		}
	}
	errs := b.PublishBatch(ctx, []Outgoing{
		{Subject: StatusSubject("acme"), MsgID: "evt_1", Data: []byte("x")},
		{Subject: StatusSubject("acme"), MsgID: "evt_2", Data: []byte("y")},
		{Subject: StatusSubject("acme"), MsgID: "evt_2", Data: []byte("y")},
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("PublishBatch[%d]: %v", i, err)
		}
	}
	st, err := b.JetStream().Stream(ctx, StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	if msgs := st.CachedInfo().State.Msgs; msgs != 2 {
		t.Fatalf("STATUS holds %d messages, want 2 (deduplicated by Nats-Msg-Id)", msgs)
	}
}

func TestPublishRejectsBadInput(t *testing.T) {
	b := openBus(t, t.TempDir())
	tests := []struct {
		name, subject, msgID string
		code                 string
	}{
		{"tenant with dot", SendSubject("acme.evil"), "m1", gateway.EInvalidField},
		{"tenant wildcard", SendSubject("*"), "m1", gateway.EInvalidField},
		{"tenant gt", StatusSubject(">"), "m1", gateway.EInvalidField},
		{"tenant space", SendSubject("ac me"), "m1", gateway.EInvalidField},
		{"empty tenant", SendSubject(""), "m1", gateway.EInvalidField},
		{"account with dot", DispatchSubject("whatsapp", "acme", "sales.eu"), "m1", gateway.EInvalidField},
		{"missing account", "sb.dispatch.whatsapp", "m1", gateway.EInvalidField},
		{"foreign subject", "orders.created", "m1", gateway.EInvalidField},
		{"no msg id", SendSubject("acme"), "", gateway.EMissingField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Publish(t.Context(), tt.subject, tt.msgID, []byte("x"))
			if got := gateway.ErrorCode(err); got != tt.code {
				t.Fatalf("Publish(%q): code %q (%v), want %q", tt.subject, got, err, tt.code)
			}
			errs := b.PublishBatch(t.Context(), []Outgoing{{Subject: tt.subject, MsgID: tt.msgID}})
			if got := gateway.ErrorCode(errs[0]); got != tt.code {
				t.Fatalf("PublishBatch(%q): code %q, want %q", tt.subject, got, tt.code)
			}
		})
	}
}

func TestValidateToken(t *testing.T) {
	tests := []struct {
		in   string
		code string
	}{
		{"acme", ""},
		{"acme-eu_2", ""},
		{"zürich", ""},
		{"", gateway.EMissingField},
		{"a.b", gateway.EInvalidField},
		{"a*", gateway.EInvalidField},
		{"a>", gateway.EInvalidField},
		{"a b", gateway.EInvalidField},
		{"a\tb", gateway.EInvalidField},
		{"a\x00b", gateway.EInvalidField},
		{"\xff", gateway.EInvalidField},
		{strings.Repeat("a", 129), gateway.EInvalidField},
	}
	for _, tt := range tests {
		err := ValidateToken("tenant", tt.in)
		if got := gateway.ErrorCode(err); got != tt.code {
			t.Errorf("ValidateToken(%q) = %v (code %q), want code %q", tt.in, err, got, tt.code)
		}
		if err != nil && gateway.ErrorField(err) != "tenant" {
			t.Errorf("ValidateToken(%q): field %q, want tenant", tt.in, gateway.ErrorField(err))
		}
	}
}

func TestConsumerConfigErrors(t *testing.T) {
	b := openBus(t, t.TempDir())
	tests := []struct {
		name string
		cfg  ConsumerConfig
		code string
	}{
		{"no durable", ConsumerConfig{FilterSubject: "sb.send.>"}, gateway.EMissingField},
		{"durable with dot", ConsumerConfig{Durable: "a.b", FilterSubject: "sb.send.>"}, gateway.EInvalidField},
		{"no filter", ConsumerConfig{Durable: "x"}, gateway.EMissingField},
		{"foreign filter", ConsumerConfig{Durable: "x", FilterSubject: "foo.>"}, gateway.EInvalidField},
		{"stream mismatch", ConsumerConfig{Stream: StreamStatus, Durable: "x", FilterSubject: "sb.send.>"}, gateway.EInvalidField},
		{"bad backoff", ConsumerConfig{Durable: "x", FilterSubject: "sb.send.>", BackOff: []time.Duration{0}}, gateway.EInvalidField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Consume(t.Context(), tt.cfg, func(context.Context, *Msg) error { return nil })
			if got := gateway.ErrorCode(err); got != tt.code {
				t.Fatalf("Consume: %v (code %q), want code %q", err, got, tt.code)
			}
		})
	}
}

func TestNakRedeliversAfterBackoff(t *testing.T) {
	b := openBus(t, t.TempDir())
	const delay = 100 * time.Millisecond
	type delivery struct {
		n  uint64
		at time.Time
	}
	got := make(chan delivery, 4)
	consumeAsync(t, b, ConsumerConfig{Durable: "dispatch_wa_sales", FilterSubject: DispatchSubject("whatsapp", "acme", "sales"),
		MaxDeliver: 5, BackOff: []time.Duration{delay}},
		func(ctx context.Context, m *Msg) error {
			got <- delivery{m.NumDelivered, time.Now()}
			if m.NumDelivered == 1 {
				return errors.New("channel busy")
			}
			return nil
		})
	if err := b.Publish(t.Context(), DispatchSubject("whatsapp", "acme", "sales"), "msg_1", []byte("d")); err != nil {
		t.Fatal(err)
	}
	first := recv(t, got, "first delivery")
	second := recv(t, got, "redelivery")
	if first.n != 1 || second.n != 2 {
		t.Fatalf("deliveries %d, %d; want 1, 2", first.n, second.n)
	}
	if gap := second.at.Sub(first.at); gap < delay {
		t.Fatalf("redelivered after %v, before the %v backoff", gap, delay)
	}
}

func TestMaxDeliverDeadLetterReplay(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()

	// Follow the dead letters: the event that tells us a message gave up.
	dead := make(chan *Msg, 4)
	fctx, fcancel := context.WithCancel(ctx)
	fdone := make(chan error, 1)
	go func() {
		fdone <- b.Follow(fctx, "sb.dead.>", true, func(m *Msg) error { dead <- m; return nil })
	}()
	defer func() { fcancel(); <-fdone }()

	var healthy atomic.Bool
	type delivery struct {
		n      uint64
		replay string
		msgID  string
		trace  string
	}
	got := make(chan delivery, 16)
	consumeAsync(t, b, ConsumerConfig{Durable: "router", FilterSubject: "sb.send.>", MaxDeliver: 3,
		BackOff: []time.Duration{time.Millisecond}},
		func(ctx context.Context, m *Msg) error {
			got <- delivery{m.NumDelivered, m.Header.Get(HeaderReplayOf), m.MsgID, m.Header.Get("Trace-Id")}
			if healthy.Load() {
				return nil
			}
			return gateway.Errorf(gateway.EUnavailable, "store down\nsecond line")
		})

	if err := b.PublishMsg(ctx, Outgoing{Subject: SendSubject("acme"), MsgID: "msg_dl", Data: []byte("payload"),
		Header: nats.Header{"Trace-Id": []string{"t-1"}}}); err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 3; want++ {
		if d := recv(t, got, "delivery"); d.n != want {
			t.Fatalf("delivery %d, want %d", d.n, want)
		}
	}
	dm := recv(t, dead, "dead letter")
	if dm.Subject != "sb.dead.SEND.router" {
		t.Fatalf("dead letter subject %q", dm.Subject)
	}

	list, err := b.DeadLetters(ctx, 10)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if len(list) != 1 {
		t.Fatalf("%d dead letters, want 1", len(list))
	}
	dl := list[0]
	if dl.Subject != "sb.send.acme" || dl.MsgID != "msg_dl" || dl.Stream != StreamSend || dl.Consumer != "router" ||
		dl.Deliveries != 3 || dl.Code != gateway.EUnavailable || dl.Error != "store down second line" ||
		string(dl.Data) != "payload" || dl.Header.Get("Trace-Id") != "t-1" || dl.StreamSeq == 0 || dl.Time.IsZero() {
		t.Fatalf("dead letter %+v", dl)
	}
	// The dead letter is stored before the original is terminated: the Term follows it.
	waitBacklog(t, b, StreamSend, "router", 0)

	healthy.Store(true)
	if err := b.Replay(ctx, dl.Seq); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	d := recv(t, got, "replayed delivery")
	if d.n != 1 || d.replay != fmt.Sprint(dl.Seq) || d.msgID != fmt.Sprintf("msg_dl:replay:%d", dl.Seq) || d.trace != "t-1" {
		t.Fatalf("replayed delivery %+v", d)
	}
	if list, err := b.DeadLetters(ctx, 10); err != nil || len(list) != 0 {
		t.Fatalf("after replay: %d dead letters, %v", len(list), err)
	}
	if err := b.Replay(ctx, dl.Seq); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatalf("second Replay: %v, want not_found", err)
	}
}

func TestTerminalDeadLettersAtOnce(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()
	got := make(chan uint64, 4)
	stop := consumeAsync(t, b, ConsumerConfig{Durable: "inbound", FilterSubject: "sb.inbound.>", MaxDeliver: 5},
		func(ctx context.Context, m *Msg) error {
			got <- m.NumDelivered
			return Terminal(gateway.Errorf(gateway.EInvalidRecipient, "no such number"))
		})
	for i := range 3 {
		if err := b.Publish(ctx, InboundSubject("acme", "whatsapp"), fmt.Sprint("in_", i), []byte("sealed")); err != nil {
			t.Fatal(err)
		}
		if n := recv(t, got, "delivery"); n != 1 {
			t.Fatalf("delivery %d, want 1", n)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	list, err := b.DeadLetters(ctx, 2)
	if err != nil || len(list) != 2 {
		t.Fatalf("DeadLetters(limit 2) = %d, %v", len(list), err)
	}
	rest, err := b.DeadLettersAfter(ctx, list[1].Seq, 10)
	if err != nil || len(rest) != 1 {
		t.Fatalf("DeadLettersAfter = %d, %v", len(rest), err)
	}
	for _, dl := range append(list, rest...) {
		if dl.Deliveries != 1 || dl.Code != gateway.EInvalidRecipient {
			t.Fatalf("dead letter %+v", dl)
		}
	}
	n, err := b.ReplayAll(ctx)
	if err != nil || n != 3 {
		t.Fatalf("ReplayAll = %d, %v", n, err)
	}
}

func TestConsumeBatch(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()
	const n = 250
	out := make([]Outgoing, n)
	for i := range out {
		out[i] = Outgoing{Subject: StatusSubject(fmt.Sprint("t", i%3)), MsgID: fmt.Sprint("evt_", i), Data: []byte(fmt.Sprint(i))}
	}
	for i, err := range b.PublishBatch(ctx, out) {
		if err != nil {
			t.Fatalf("PublishBatch[%d]: %v", i, err)
		}
	}

	var mu sync.Mutex
	seen := map[string]int{}
	var sizes []int
	all := make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.ConsumeBatch(cctx, ConsumerConfig{Durable: "recorder", FilterSubject: "sb.status.>", Batch: 100,
			BackOff: []time.Duration{time.Millisecond}},
			func(ctx context.Context, msgs []*Msg) []error {
				mu.Lock()
				defer mu.Unlock()
				sizes = append(sizes, len(msgs))
				errs := make([]error, len(msgs))
				for i, m := range msgs {
					seen[m.MsgID]++
					if m.MsgID == "evt_7" && m.NumDelivered == 1 {
						errs[i] = errors.New("retry me") // fails once, succeeds on redelivery
					}
				}
				if len(seen) == n && seen["evt_7"] == 2 {
					close(all)
				}
				return errs
			})
	}()
	recv(t, all, "every message")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ConsumeBatch: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	maxSize := 0
	for _, s := range sizes {
		maxSize = max(maxSize, s)
	}
	if maxSize > 100 || maxSize < 2 {
		t.Fatalf("batch sizes %v: want batches of 2..100", sizes)
	}
	for id, c := range seen {
		if want := map[bool]int{true: 2, false: 1}[id == "evt_7"]; c != want {
			t.Errorf("%s handled %d times, want %d", id, c, want)
		}
	}
	if bl := backlog(t, b, StreamStatus, "recorder"); bl != 0 {
		t.Fatalf("backlog %d, want 0", bl)
	}
}

func TestConsumeDrainsOnCancel(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()
	const n = 4
	for i := range n {
		if err := b.Publish(ctx, SendSubject("acme"), fmt.Sprint("m", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	started := make(chan struct{}, n)
	release := make(chan struct{})
	var finished atomic.Int32
	var ctxErrs atomic.Int32
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(cctx, ConsumerConfig{Durable: "router", FilterSubject: "sb.send.>", Concurrency: n},
			func(hctx context.Context, m *Msg) error {
				started <- struct{}{}
				<-release
				if hctx.Err() != nil {
					ctxErrs.Add(1)
				}
				finished.Add(1)
				return nil
			})
	}()
	for range n {
		recv(t, started, "handler start")
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Consume returned (%v) while handlers were running", err)
	default:
	}
	close(release)
	if err := recv(t, done, "Consume to return"); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if f := finished.Load(); f != n {
		t.Fatalf("%d handlers finished before Consume returned, want %d", f, n)
	}
	if c := ctxErrs.Load(); c != 0 {
		t.Fatalf("%d handlers saw their context canceled by the shutdown", c)
	}
	if bl := backlog(t, b, StreamSend, "router"); bl != 0 {
		t.Fatalf("backlog %d after drain, want 0: the finished messages were not acked", bl)
	}
}

func TestInProgressExtendsDeadline(t *testing.T) {
	b := openBus(t, t.TempDir())
	const ackWait = 300 * time.Millisecond
	type result struct {
		n   uint64
		err error
	}
	got := make(chan result, 4)
	consumeAsync(t, b, ConsumerConfig{Durable: "slow", FilterSubject: "sb.send.>", AckWait: ackWait,
		BackOff: []time.Duration{time.Millisecond}},
		func(ctx context.Context, m *Msg) error {
			// Work for about three ack waits, reporting progress; the context must stay alive and
			// the server must not redeliver meanwhile.
			deadline := time.Now().Add(3 * ackWait)
			tick := time.NewTicker(ackWait / 3)
			defer tick.Stop()
			for time.Now().Before(deadline) {
				select {
				case <-ctx.Done():
					got <- result{m.NumDelivered, context.Cause(ctx)}
					return ctx.Err()
				case <-tick.C:
					if err := m.InProgress(); err != nil {
						got <- result{m.NumDelivered, err}
						return err
					}
				}
			}
			got <- result{m.NumDelivered, nil}
			return nil
		})
	if err := b.Publish(t.Context(), SendSubject("acme"), "slow_1", nil); err != nil {
		t.Fatal(err)
	}
	r := recv(t, got, "slow handler")
	if r.n != 1 || r.err != nil {
		t.Fatalf("slow handler: delivery %d, err %v", r.n, r.err)
	}
	select {
	case r := <-got:
		t.Fatalf("unexpected extra delivery %+v", r)
	default:
	}
}

func TestHandlerContextExpiresAtAckDeadline(t *testing.T) {
	b := openBus(t, t.TempDir())
	causes := make(chan error, 4)
	consumeAsync(t, b, ConsumerConfig{Durable: "stuck", FilterSubject: "sb.send.>", AckWait: 100 * time.Millisecond,
		BackOff: []time.Duration{time.Millisecond}, MaxDeliver: 1},
		func(ctx context.Context, m *Msg) error {
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		})
	if err := b.Publish(t.Context(), SendSubject("acme"), "stuck_1", nil); err != nil {
		t.Fatal(err)
	}
	if c := recv(t, causes, "handler context to end"); !errors.Is(c, ErrAckDeadline) {
		t.Fatalf("cause %v, want ErrAckDeadline", c)
	}
}

func TestHandlerPanicIsAnError(t *testing.T) {
	b := openBus(t, t.TempDir())
	got := make(chan uint64, 4)
	consumeAsync(t, b, ConsumerConfig{Durable: "p", FilterSubject: "sb.send.>", BackOff: []time.Duration{time.Millisecond}},
		func(ctx context.Context, m *Msg) error {
			got <- m.NumDelivered
			if m.NumDelivered == 1 {
				panic("boom")
			}
			return nil
		})
	if err := b.Publish(t.Context(), SendSubject("acme"), "p1", nil); err != nil {
		t.Fatal(err)
	}
	recv(t, got, "first delivery")
	if n := recv(t, got, "redelivery after panic"); n != 2 {
		t.Fatalf("delivery %d, want 2", n)
	}
}

// A restart on the same store keeps what was not acknowledged (and forgets what was): unconsumed
// messages, and a message whose handler never finished because the bus went away under it.
func TestRestartKeepsUnackedMessages(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	b := openBus(t, dir)
	for i := range 3 {
		for _, tenant := range []string{"t1", "t2"} {
			if err := b.Publish(ctx, SendSubject(tenant), fmt.Sprint(tenant, "_", i), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Publish(ctx, DispatchSubject("whatsapp", "acme", "sales"), "inflight", nil); err != nil {
		t.Fatal(err)
	}
	// t1: consumed and acked.
	got := make(chan string, 8)
	stop := consumeAsync(t, b, ConsumerConfig{Durable: "c1", FilterSubject: SendSubject("t1")},
		func(ctx context.Context, m *Msg) error { got <- m.MsgID; return nil })
	for range 3 {
		recv(t, got, "t1 message")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The dispatch message: its handler is stuck when the bus closes (a crash, as far as the
	// message is concerned: no ack ever reaches the server).
	startedStuck := make(chan struct{})
	release := make(chan struct{})
	cctx, ccancel := context.WithCancel(ctx)
	cdone := make(chan error, 1)
	go func() {
		cdone <- b.Consume(cctx, ConsumerConfig{Durable: "dispatch", FilterSubject: "sb.dispatch.>",
			AckWait: 200 * time.Millisecond, BackOff: []time.Duration{time.Millisecond}},
			func(ctx context.Context, m *Msg) error {
				close(startedStuck)
				<-release
				return nil
			})
	}()
	recv(t, startedStuck, "stuck handler")
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	close(release)
	ccancel()
	<-cdone // returns an error (connection closed) or nil; either way it has stopped

	b2 := openBus(t, dir)
	if bl := backlog(t, b2, StreamSend, "c1"); bl != 0 {
		t.Fatalf("acked messages came back: backlog %d", bl)
	}
	stop2 := consumeAsync(t, b2, ConsumerConfig{Durable: "c2", FilterSubject: SendSubject("t2")},
		func(ctx context.Context, m *Msg) error { got <- m.MsgID; return nil })
	want := map[string]bool{"t2_0": true, "t2_1": true, "t2_2": true}
	for range 3 {
		id := recv(t, got, "t2 message after restart")
		if !want[id] {
			t.Fatalf("unexpected %q", id)
		}
		delete(want, id)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	redelivered := make(chan *Msg, 2)
	consumeAsync(t, b2, ConsumerConfig{Durable: "dispatch", FilterSubject: "sb.dispatch.>",
		AckWait: 200 * time.Millisecond, BackOff: []time.Duration{time.Millisecond}},
		func(ctx context.Context, m *Msg) error { redelivered <- m; return nil })
	m := recv(t, redelivered, "in-flight message after restart")
	if m.MsgID != "inflight" || m.NumDelivered < 2 {
		t.Fatalf("redelivered %q delivery %d, want inflight delivery >= 2", m.MsgID, m.NumDelivered)
	}
}

func TestStoreEncryption(t *testing.T) {
	const secret = "distinctive-zebra-payload-4711"
	tests := []struct {
		name      string
		key       string
		wantFound bool
	}{
		{"encrypted", testKey, false},
		{"plaintext control", "", true}, // proves the search would find it
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			b, err := Open(t.Context(), Config{Embedded: &Embedded{StoreDir: dir, StoreKey: tt.key}}, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			if err := b.Publish(ctx, SendSubject("acme"), "m1", []byte(secret)); err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, StatusSubject("acme"), "m1", []byte(secret)); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(ctx); err != nil { // flushes the store
				t.Fatal(err)
			}
			paths, _ := gatewaytest.FilesHolding(t, dir, []byte(secret))
			if found := len(paths) > 0; found != tt.wantFound {
				t.Fatalf("payload found in store: %v %v, want %v", found, paths, tt.wantFound)
			}
		})
	}
}

func TestWrongStoreKeyRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	b := openBus(t, dir)
	if err := b.Publish(t.Context(), SendSubject("acme"), "m1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), Config{Embedded: &Embedded{StoreDir: dir, StoreKey: "another-key-entirely-0123456789abcdef"}},
		testLog(t))
	if err == nil {
		t.Fatal("Open with another store key succeeded")
	}
	if gateway.ErrorCode(err) != gateway.EUnavailable || !strings.Contains(err.Error(), "store key") {
		t.Fatalf("Open: %v", err)
	}
	// The right key still opens it, with the message intact.
	b2 := openBus(t, dir)
	st, err := b2.JetStream().Stream(t.Context(), StreamSend)
	if err != nil || st.CachedInfo().State.Msgs != 1 {
		t.Fatalf("after reopening: %v", err)
	}
}

func TestFollow(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()
	for i := range 3 {
		if err := b.Publish(ctx, StatusSubject("acme"), fmt.Sprint("old_", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, StatusSubject("other"), "other_0", nil); err != nil {
		t.Fatal(err)
	}

	t.Run("from start", func(t *testing.T) {
		got := make(chan string, 8)
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- b.Follow(fctx, StatusSubject("acme"), true, func(m *Msg) error { got <- m.MsgID; return nil })
		}()
		for i := range 3 {
			if id := recv(t, got, "old message"); id != fmt.Sprint("old_", i) {
				t.Fatalf("got %q, want old_%d", id, i)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Follow: %v", err)
		}
	})

	t.Run("from now", func(t *testing.T) {
		got := make(chan string, 64)
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- b.Follow(fctx, "sb.status.>", false, func(m *Msg) error { got <- m.MsgID; return nil })
		}()
		// Follow gives no signal when its consumer exists, so publish until the first new
		// message arrives (a condition polled with a deadline).
		var first string
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; first == "" && time.Now().Before(deadline); i++ {
			if err := b.Publish(ctx, StatusSubject("acme"), fmt.Sprint("new_", i), nil); err != nil {
				t.Fatal(err)
			}
			select {
			case first = <-got:
			case <-time.After(20 * time.Millisecond):
			}
		}
		if !strings.HasPrefix(first, "new_") {
			t.Fatalf("first followed message %q, want a new one", first)
		}
		if err := b.Publish(ctx, StatusSubject("other"), "other_new", nil); err != nil {
			t.Fatal(err)
		}
		for id := range got {
			if id == "other_new" {
				break
			}
			if !strings.HasPrefix(id, "new_") {
				t.Fatalf("followed %q", id)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Follow: %v", err)
		}
	})

	t.Run("fn error stops", func(t *testing.T) {
		stop := errors.New("enough")
		err := b.Follow(ctx, "sb.status.>", true, func(m *Msg) error { return stop })
		if !errors.Is(err, stop) {
			t.Fatalf("Follow = %v, want fn's error", err)
		}
	})

	t.Run("work queue refused", func(t *testing.T) {
		err := b.Follow(ctx, "sb.send.>", true, func(m *Msg) error { return nil })
		if gateway.ErrorCode(err) != gateway.EInvalidField {
			t.Fatalf("Follow(sb.send.>) = %v", err)
		}
	})
}

func TestListenRequiresToken(t *testing.T) {
	_, err := Open(t.Context(), Config{Embedded: &Embedded{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"}}, testLog(t))
	if gateway.ErrorCode(err) != gateway.EMissingField || gateway.ErrorField(err) != "bus.embedded.token" {
		t.Fatalf("Open without token: %v", err)
	}

	b, err := Open(t.Context(), Config{Embedded: &Embedded{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Token: "s3cret",
		StoreKey: testKey}}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	url := b.ClientURL()
	if url == "" {
		t.Fatal("no client URL")
	}
	if nc, err := nats.Connect(url, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("connected without the token")
	}
	nc, err := nats.Connect(url, nats.Token("s3cret"), nats.NoReconnect())
	if err != nil {
		t.Fatalf("connect with token: %v", err)
	}
	nc.Close()

	// An external client of that server (as the CLI would be): the token goes in the URL.
	if ext, err := Open(t.Context(), Config{URLs: []string{url}}, zerolog.Nop()); err == nil {
		ext.Close(context.Background())
		t.Fatal("external Open without the token succeeded")
	}
	ext, err := Open(t.Context(), Config{URLs: []string{strings.Replace(url, "nats://", "nats://s3cret@", 1)}}, testLog(t))
	if err != nil {
		t.Fatalf("external Open with the token: %v", err)
	}
	st, err := ext.JetStream().Stream(t.Context(), StreamStatus)
	if err != nil || st.CachedInfo().Config.MaxAge != DefaultStatusMaxAge {
		t.Fatalf("STATUS: %v", err)
	}
	ext.Close(t.Context())
	// A client that only attaches leaves the server's stream limits alone.
	ext, err = Open(t.Context(), Config{URLs: []string{strings.Replace(url, "nats://", "nats://s3cret@", 1)},
		UseExisting: true, StatusMaxAge: time.Hour}, testLog(t))
	if err != nil {
		t.Fatalf("external Open (use existing): %v", err)
	}
	if st, err = ext.JetStream().Stream(t.Context(), StreamStatus); err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxAge; got != DefaultStatusMaxAge {
		t.Fatalf("STATUS max age %v after an attach-only client, want %v", got, DefaultStatusMaxAge)
	}
	if err := ext.Publish(t.Context(), StatusSubject("acme"), "ext_1", nil); err != nil {
		t.Fatalf("external Publish: %v", err)
	}
	if err := ext.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(t.Context()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

func TestOpenConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"nothing", Config{}, "bus"},
		{"both", Config{Embedded: &Embedded{StoreDir: "x"}, URLs: []string{"nats://x"}}, "bus"},
		{"no store dir", Config{Embedded: &Embedded{}}, "bus.embedded.store_dir"},
		{"creds with embedded", Config{Embedded: &Embedded{StoreDir: "x"}, CredsFile: "c"}, "bus.creds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(t.Context(), tt.cfg, zerolog.Nop())
			if err == nil || gateway.ErrorField(err) != tt.field {
				t.Fatalf("Open: %v, want an error about %s", err, tt.field)
			}
		})
	}
}

// Stopping a consumer and starting it again (a component restart inside the process) must not
// strand messages in the old subscription until their ack wait runs out.
func TestConsumeAgainAfterStop(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()
	for round := range 5 {
		for i := range 5 {
			if err := b.Publish(ctx, SendSubject("acme"), fmt.Sprint(round, "_", i), nil); err != nil {
				t.Fatal(err)
			}
		}
		got := make(chan *Msg, 10)
		start := time.Now()
		stop := consumeAsync(t, b, ConsumerConfig{Durable: "router", FilterSubject: "sb.send.>", Concurrency: 2},
			func(ctx context.Context, m *Msg) error { got <- m; return nil })
		for range 5 {
			if m := recv(t, got, "message"); m.NumDelivered != 1 {
				t.Fatalf("round %d: %s delivered %d times", round, m.MsgID, m.NumDelivered)
			}
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %v", round, time.Since(start))
	}
}

func TestBacklogAndDeleteConsumer(t *testing.T) {
	b := openBus(t, t.TempDir())
	ctx := t.Context()
	if _, err := b.Backlog(ctx, StreamSend, "nobody"); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatalf("Backlog of a missing consumer: %v", err)
	}
	got := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	stop := consumeAsync(t, b, ConsumerConfig{Durable: "router", FilterSubject: "sb.send.>", MaxAckPending: 1},
		func(ctx context.Context, m *Msg) error {
			got <- struct{}{}
			<-release
			return nil
		})
	t.Cleanup(unblock) // registered after consumeAsync's, so it runs before that stop
	for i := range 3 {
		if err := b.Publish(ctx, SendSubject("acme"), fmt.Sprint("m", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	recv(t, got, "first message")
	// One delivered and unacked (MaxAckPending 1 holds the others back), two pending. The server
	// counts pending messages asynchronously after the PubAck, hence the wait.
	waitBacklog(t, b, StreamSend, "router", 3)
	unblock()
	recv(t, got, "second message")
	recv(t, got, "third message")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if bl := backlog(t, b, StreamSend, "router"); bl != 0 {
		t.Fatalf("backlog %d, want 0", bl)
	}
	if err := b.DeleteConsumer(ctx, StreamSend, "router"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteConsumer(ctx, StreamSend, "router"); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatalf("second DeleteConsumer: %v", err)
	}
}
