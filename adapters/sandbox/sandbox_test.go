package sandbox_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/sandbox"
	"github.com/switchboard-gateway/switchboard/gateway"
)

const (
	number = "+4915112345678"
	text   = "your invoice 4711: what is the price?"
)

// timers is a fake clock for AfterFunc: tests fire the pending timers by hand.
type timers struct {
	mu        sync.Mutex
	pending   []*timer
	scheduled chan struct{} // a signal per AfterFunc call
}

type timer struct {
	d       time.Duration
	f       func()
	stopped bool
	fired   bool
}

func (ts *timers) AfterFunc(d time.Duration, f func()) func() bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := &timer{d: d, f: f}
	ts.pending = append(ts.pending, t)
	select {
	case ts.scheduled <- struct{}{}:
	default:
	}
	return func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if t.fired || t.stopped {
			return false
		}
		t.stopped = true
		return true
	}
}

// fire runs every pending timer (each on its own goroutine, as time.AfterFunc does) and returns
// their delays.
func (ts *timers) fire() []time.Duration {
	ts.mu.Lock()
	var due []*timer
	for _, t := range ts.pending {
		if !t.fired && !t.stopped {
			t.fired = true
			due = append(due, t)
		}
	}
	ts.pending = nil
	ts.mu.Unlock()
	var ds []time.Duration
	for _, t := range due {
		ds = append(ds, t.d)
		go t.f()
	}
	return ds
}

// sink records reports; fail makes the next calls fail.
type sink struct {
	mu       sync.Mutex
	receipts []adapters.Receipt
	inbound  []gateway.InboundEvent
	fail     error
	calls    chan struct{}
}

func newSink() *sink { return &sink{calls: make(chan struct{}, 100)} }

func (s *sink) Status(_ context.Context, r adapters.Receipt) error {
	s.mu.Lock()
	defer func() { s.mu.Unlock(); s.calls <- struct{}{} }()
	if s.fail != nil {
		return s.fail
	}
	s.receipts = append(s.receipts, r)
	return nil
}

func (s *sink) Inbound(_ context.Context, ev gateway.InboundEvent) error {
	s.mu.Lock()
	defer func() { s.mu.Unlock(); s.calls <- struct{}{} }()
	if s.fail != nil {
		return s.fail
	}
	s.inbound = append(s.inbound, ev)
	return nil
}

func (s *sink) wait(t *testing.T) {
	t.Helper()
	select {
	case <-s.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("the sandbox reported nothing")
	}
}

func (s *sink) statuses() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.receipts {
		out = append(out, r.ChannelMessageID+":"+string(r.Status))
	}
	return out
}

type env struct {
	t      *testing.T
	dir    string
	timers *timers
	sink   *sink
	sb     *sandbox.Adapter
	stop   func()
}

func start(t *testing.T, dir string, cfg sandbox.Config) *env {
	t.Helper()
	e := &env{t: t, dir: dir, timers: &timers{scheduled: make(chan struct{}, 1)}, sink: newSink()}
	cfg.Channel, cfg.Account, cfg.Dir, cfg.AfterFunc = gateway.WhatsApp, "sales", dir, e.timers.AfterFunc
	sb, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.sb = sb
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sb.Run(ctx, e.sink) }()
	e.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := sb.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
		}
	})
	return e
}

func (e *env) shutdown() {
	e.stop()
	e.stop = nil
}

func outbound(t *testing.T, id, cid, body string) adapters.Outbound {
	t.Helper()
	to, err := gateway.ParseAddress(gateway.WhatsApp, number)
	if err != nil {
		t.Fatal(err)
	}
	return adapters.Outbound{MessageID: id, ChannelMessageID: cid, To: to, Content: gateway.Content{Text: body}, Attempt: 1}
}

// fireWhenScheduled waits until n timers are pending (Run and the sink calls schedule them on
// their own goroutines), then fires them.
func (e *env) fireWhenScheduled(n int) []time.Duration {
	e.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		e.timers.mu.Lock()
		k := 0
		for _, t := range e.timers.pending {
			if !t.fired && !t.stopped {
				k++
			}
		}
		e.timers.mu.Unlock()
		if k >= n {
			return e.timers.fire()
		}
		select {
		case <-e.timers.scheduled:
		case <-deadline:
			e.t.Fatalf("%d timers scheduled, want %d", k, n)
		}
	}
}

func TestReceiptsInOrderAndLedgerHoldsNoContent(t *testing.T) {
	e := start(t, t.TempDir(), sandbox.Config{DeliveredAfter: 2 * time.Second, ReadAfter: 5 * time.Second})
	cid := e.sb.NewChannelMessageID()
	got, err := e.sb.Send(context.Background(), outbound(t, "msg_1", cid, text))
	if err != nil || got != cid {
		t.Fatalf("Send = %q, %v; want %q", got, err, cid)
	}
	if ds := e.fireWhenScheduled(1); len(ds) != 1 || ds[0] != 2*time.Second {
		t.Fatalf("delivered timer delays %v", ds)
	}
	e.sink.wait(t)
	if ds := e.fireWhenScheduled(1); len(ds) != 1 || ds[0] != 5*time.Second {
		t.Fatalf("read timer delays %v", ds)
	}
	e.sink.wait(t)
	if got := e.sink.statuses(); !equal(got, []string{cid + ":delivered", cid + ":read"}) {
		t.Fatalf("receipts %v", got)
	}
	e.shutdown()
	st := e.sb.Stats()
	if st.Sent != 1 || st.Delivered != 1 || st.Read != 1 || st.Duplicates != 0 {
		t.Fatalf("stats %+v", st)
	}
	data, err := os.ReadFile(sandbox.LedgerPath(e.dir, gateway.WhatsApp, "sales"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "invoice") || strings.Contains(string(data), number) {
		t.Fatalf("the ledger holds content or the number:\n%s", data)
	}
	if !strings.Contains(string(data), "+49******5678") {
		t.Fatalf("the ledger should name the masked recipient:\n%s", data)
	}
}

func TestResendIsDroppedAndRestartReplaysPendingReceipts(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir, sandbox.Config{})
	cid := e.sb.NewChannelMessageID()
	if _, err := e.sb.Send(context.Background(), outbound(t, "msg_1", cid, text)); err != nil {
		t.Fatal(err)
	}
	e.fireWhenScheduled(1)
	e.sink.wait(t) // delivered reported
	// Crash before the read receipt: the read timer is pending.
	e.shutdown()

	e2 := start(t, dir, sandbox.Config{})
	// The runner retries the send after the crash, with the stored channel id: dropped.
	got, err := e2.sb.Send(context.Background(), outbound(t, "msg_1", cid, text))
	if err != nil || got != cid {
		t.Fatalf("resend = %q, %v", got, err)
	}
	if st := e2.sb.Stats(); st.Sent != 1 || st.Duplicates != 1 || st.Delivered != 1 || st.Read != 0 {
		t.Fatalf("stats after restart %+v", st)
	}
	e2.fireWhenScheduled(1)
	e2.sink.wait(t)
	if got := e2.sink.statuses(); !equal(got, []string{cid + ":read"}) {
		t.Fatalf("after restart the sandbox reported %v; want only the owed read receipt", got)
	}
	e2.shutdown()
	l, err := sandbox.ReadLedger(dir, gateway.WhatsApp, "sales")
	if err != nil {
		t.Fatal(err)
	}
	if l.Sends["msg_1"] != 1 || l.Duplicates != 1 || !l.Read[cid] {
		t.Fatalf("ledger %+v", l)
	}
}

func TestTornLedgerLine(t *testing.T) {
	dir := t.TempDir()
	path := sandbox.LedgerPath(dir, gateway.WhatsApp, "sales")
	if err := os.WriteFile(path, []byte("sent SBAAA msg_1 +49******5678\ndelivered SBAAA\nsent SBBB"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := start(t, dir, sandbox.Config{})
	if st := e.sb.Stats(); st.Sent != 1 || st.Delivered != 1 {
		t.Fatalf("stats %+v: the torn line must be skipped", st)
	}
	if _, err := e.sb.Send(context.Background(), outbound(t, "msg_2", "SBCCC", text)); err != nil {
		t.Fatal(err)
	}
	e.shutdown()
	l, err := sandbox.ReadLedger(dir, gateway.WhatsApp, "sales")
	if err != nil {
		t.Fatal(err)
	}
	if l.Sent["SBCCC"] != "msg_2" || len(l.Sent) != 2 {
		t.Fatalf("ledger after repair %+v", l.Sent)
	}
}

func TestScriptedFailure(t *testing.T) {
	tests := []struct {
		name, code, want string
	}{
		{"default code", "", gateway.EInvalidRecipient},
		{"configured code", "not_on_whatsapp", "not_on_whatsapp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, t.TempDir(), sandbox.Config{Fail: []string{"+49 151 1234 5678"}, FailCode: tt.code})
			_, err := e.sb.Send(context.Background(), outbound(t, "msg_1", "SB1", text))
			se := adapters.AsSendError(err)
			if err == nil || !se.Permanent || se.Code != tt.want {
				t.Fatalf("Send: %v; want a permanent %s", err, tt.want)
			}
			if strings.Contains(err.Error(), number) {
				t.Fatalf("the error names the number: %v", err)
			}
			if st := e.sb.Stats(); st.Failed != 1 || st.Sent != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestScriptedReplyAfterRead(t *testing.T) {
	e := start(t, t.TempDir(), sandbox.Config{Replies: []sandbox.Reply{{Match: "PRICE", Text: "too expensive"}, {Match: "", Text: "ok"}}})
	if _, err := e.sb.Send(context.Background(), outbound(t, "msg_1", "SB1", text)); err != nil {
		t.Fatal(err)
	}
	for range 3 { // delivered, read, reply
		e.fireWhenScheduled(1)
		e.sink.wait(t)
	}
	e.sink.mu.Lock()
	defer e.sink.mu.Unlock()
	if len(e.sink.inbound) != 1 {
		t.Fatalf("inbound %+v", e.sink.inbound)
	}
	in := e.sink.inbound[0]
	if in.From.String() != number || in.Content.Text != "too expensive" || in.ChannelMessageID == "" || in.Account != "sales" {
		t.Fatalf("reply %+v", in)
	}
}

func TestSinkFailureIsRetried(t *testing.T) {
	e := start(t, t.TempDir(), sandbox.Config{ReadAfter: -1})
	e.sink.fail = errors.New("bus down")
	if _, err := e.sb.Send(context.Background(), outbound(t, "msg_1", "SB1", text)); err != nil {
		t.Fatal(err)
	}
	e.fireWhenScheduled(1)
	e.sink.wait(t) // refused
	e.sink.mu.Lock()
	e.sink.fail = nil
	e.sink.mu.Unlock()
	if ds := e.fireWhenScheduled(1); len(ds) != 1 || ds[0] <= 0 {
		t.Fatalf("retry delays %v: want a backoff", ds)
	}
	e.sink.wait(t)
	if got := e.sink.statuses(); !equal(got, []string{"SB1:delivered"}) {
		t.Fatalf("receipts %v", got)
	}
	if st := e.sb.Stats(); st.Delivered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInject(t *testing.T) {
	dir := t.TempDir()
	sb, err := sandbox.New(sandbox.Config{Channel: gateway.Teams, Account: "ops", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	gone, cancelGone := context.WithCancel(context.Background())
	cancelGone()
	if _, err := sb.Inject(gone, "teams:user:8b081ef6", "hi"); gateway.ErrorCode(err) != gateway.EUnavailable {
		t.Fatalf("Inject before Run, its context ended: %v; want unavailable", err)
	}
	// During start-up an inject waits for Run instead of failing.
	early := make(chan error, 1)
	go func() {
		_, err := sb.Inject(context.Background(), "teams:user:8b081ef6", "early")
		early <- err
	}()
	s := newSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sb.Run(ctx, s) }()
	if err := <-early; err != nil {
		t.Fatalf("Inject during start-up: %v", err)
	}
	tests := []struct {
		from, text, code string
	}{
		{"+4915112345678", "hi", gateway.EInvalidRecipient}, // not a Teams address
		{"teams:user:8b081ef6", "  ", gateway.EMissingField},
		{"teams:user:8b081ef6", "HELP", ""},
	}
	for _, tt := range tests {
		cid, err := sb.Inject(context.Background(), tt.from, tt.text)
		if gateway.ErrorCode(err) != tt.code {
			t.Fatalf("Inject(%q, %q): %v; want code %q", tt.from, tt.text, err, tt.code)
		}
		if tt.code != "" {
			continue
		}
		s.mu.Lock()
		in := s.inbound[len(s.inbound)-1]
		s.mu.Unlock()
		if in.ChannelMessageID != cid || in.From.String() != "teams:user:8b081ef6" || in.Content.Text != "HELP" || in.Channel != gateway.Teams {
			t.Fatalf("inbound %+v", in)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Inject(context.Background(), "teams:user:8b081ef6", "late"); gateway.ErrorCode(err) != gateway.EUnavailable {
		t.Fatalf("Inject after Run stopped: %v; want unavailable", err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
