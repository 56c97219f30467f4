package adapters_test

// End-to-end tests on real parts: the embedded NATS JetStream bus, a SQLite store with the real
// keyring in t.TempDir(), and the sandbox adapter. Intake.Accept → SEND → Router → DISPATCH →
// Runner(sandbox) → STATUS → Recorder → store and delivery log.

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/sandbox"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	sqlstore "github.com/switchboard-gateway/switchboard/store/sql"
	"github.com/switchboard-gateway/switchboard/store/sql/sqltest"
)

// logLines returns the parsed JSON lines of log b whose field k is v.
func logLines(t *testing.T, b *gatewaytest.LogBuffer, k, v string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if l == "" {
			continue
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m[k] == v {
			out = append(out, m)
		}
	}
	return out
}

// flakyBus fails publishes to one stream while failStream is set.
type flakyBus struct {
	*bus.Bus
	failStream atomic.Value // string
	failures   atomic.Int32 // how many more publishes fail; <0 forever
}

func (f *flakyBus) Publish(ctx context.Context, subject, msgID string, data []byte) error {
	if s, _ := f.failStream.Load().(string); s != "" && bus.StreamFor(subject) == s && f.failures.Load() != 0 {
		f.failures.Add(-1)
		return gateway.Errorf(gateway.EUnavailable, "bus: injected failure on %s", subject)
	}
	return f.Bus.Publish(ctx, subject, msgID, data)
}

func (f *flakyBus) failNext(stream string, n int32) {
	f.failures.Store(n)
	f.failStream.Store(stream)
}

type system struct {
	t       testing.TB
	dir     string
	bus     *flakyBus
	db      *sqlstore.DB
	kr      *crypt.Keyring
	logs    *gatewaytest.LogBuffer
	intake  *pipeline.Intake
	resumer *pipeline.Resumer
	applied chan store.Applied
	inbound chan pipeline.Inbound

	mu      sync.Mutex
	status  map[string]gateway.Status // current status per message, from the recorder's hook
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	runErrs chan error

	sandbox   *sandbox.Adapter
	runner    *adapters.Runner
	runCancel context.CancelFunc
	runDone   chan error
	optedOut  atomic.Bool // the pre-dispatch stage rejects while set
}

type options struct {
	sandbox  sandbox.Config
	noRunner bool
}

func newSystem(t testing.TB, o options) *system {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	logs := &gatewaytest.LogBuffer{}
	log := zerolog.New(logs).With().Timestamp().Logger()

	db, kr := sqltest.Open(t, dir)
	if err := db.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(ctx, bus.Config{Embedded: &bus.Embedded{
		StoreDir: filepath.Join(dir, "nats"),
		StoreKey: string(kr.DeriveKey("test-jetstream")),
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s := &system{
		t: t, dir: dir, bus: &flakyBus{Bus: b}, db: db, kr: kr, logs: logs,
		applied: make(chan store.Applied, 10000), inbound: make(chan pipeline.Inbound, 100),
		status: map[string]gateway.Status{}, runErrs: make(chan error, 10),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)

	s.resumer, err = pipeline.NewResumer(pipeline.ResumerConfig{Store: db, Bus: s.bus, Interval: time.Hour, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	s.intake, err = pipeline.NewIntake(pipeline.IntakeConfig{Store: db, Bus: s.bus, Retry: s.resumer.Retry, Indexer: kr, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	router, err := pipeline.NewRouter(pipeline.RouterConfig{Store: db, Bus: s.bus, Stages: []pipeline.Stage{pipeline.RouteStage{}}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := pipeline.NewRecorder(pipeline.RecorderConfig{Store: db, Bus: s.bus, Log: log, OnApplied: s.onApplied})
	if err != nil {
		t.Fatal(err)
	}
	inrec, err := pipeline.NewInboundRecorder(pipeline.InboundRecorderConfig{
		Store: db, Bus: s.bus, Sealer: kr, Log: log, Concurrency: 1,
		Handlers: []pipeline.InboundHandler{pipeline.InboundHandlerFunc(func(_ context.Context, in pipeline.Inbound) error {
			s.inbound <- in
			return nil
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range []func(context.Context) error{router.Run, rec.Run, inrec.Run} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := run(s.ctx); err != nil {
				s.runErrs <- err
			}
		}()
	}
	t.Cleanup(s.close)
	if !o.noRunner {
		s.startRunner(o.sandbox)
	}
	return s
}

func (s *system) onApplied(_ context.Context, as []store.Applied) {
	s.mu.Lock()
	for _, a := range as {
		if a.Advanced {
			s.status[a.Event.MessageID] = a.Event.Status
		}
	}
	s.mu.Unlock()
	for _, a := range as {
		s.applied <- a
	}
}

// startRunner runs a sandbox account "sales" on WhatsApp (a new adapter on the same ledger).
func (s *system) startRunner(cfg sandbox.Config) { s.start(cfg, false) }

// startManual runs only the sandbox, with a runner as its sink that does not consume DISPATCH:
// the test calls Handle itself.
func (s *system) startManual(cfg sandbox.Config) { s.start(cfg, true) }

func (s *system) start(cfg sandbox.Config, manual bool) {
	s.t.Helper()
	cfg.Channel, cfg.Account, cfg.Dir = gateway.WhatsApp, "sales", s.dir
	sb, err := sandbox.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	consent := pipeline.StageFunc(func(context.Context, *gateway.Message) error {
		if s.optedOut.Load() {
			return gateway.Errorf(gateway.ERecipientOptedOut, "the recipient opted out")
		}
		return nil
	})
	r, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Adapter: sb,
		Store: s.db, Bus: s.bus, Sealer: s.kr, Stages: []pipeline.Stage{consent},
		BackOff: []time.Duration{10 * time.Millisecond}, Log: zerolog.New(s.logs),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.sandbox, s.runner, s.runCancel, s.runDone = sb, r, cancel, make(chan error, 1)
	if manual {
		go func() { s.runDone <- sb.Run(ctx, r) }()
		return
	}
	go func() { s.runDone <- r.Run(ctx) }()
}

func (s *system) stopRunner() {
	s.t.Helper()
	if s.runCancel == nil {
		return
	}
	s.runCancel()
	if err := <-s.runDone; err != nil {
		s.t.Errorf("runner: %v", err)
	}
	if err := s.sandbox.Close(); err != nil {
		s.t.Errorf("sandbox close: %v", err)
	}
	s.runCancel = nil
}

func (s *system) close() {
	s.stopRunner()
	s.cancel()
	s.wg.Wait()
	close(s.runErrs)
	for err := range s.runErrs {
		s.t.Errorf("consumer: %v", err)
	}
	if err := s.bus.Close(context.Background()); err != nil {
		s.t.Errorf("bus close: %v", err)
	}
	if err := s.db.Close(); err != nil {
		s.t.Errorf("store close: %v", err)
	}
}

func (s *system) accept(to, body string) *gateway.Message {
	s.t.Helper()
	addr, err := gateway.ParseAddress(gateway.WhatsApp, to)
	if err != nil {
		s.t.Fatal(err)
	}
	m, _, created, err := s.intake.Accept(context.Background(), store.NewMessage{Message: &gateway.Message{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: addr, Content: gateway.Content{Text: body},
	}})
	if err != nil || !created {
		s.t.Fatalf("Accept: %v (created %v)", err, created)
	}
	return m
}

// waitStatus waits for the recorder to move message id to status.
func (s *system) waitStatus(id string, want gateway.Status) {
	s.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		s.mu.Lock()
		cur := s.status[id]
		s.mu.Unlock()
		if cur == want {
			return
		}
		if cur.Final() {
			s.t.Fatalf("message %s ended %s, want %s", id, cur, want)
		}
		select {
		case <-s.applied:
		case <-timeout:
			s.t.Fatalf("message %s is %q after 30s, want %s", id, cur, want)
		}
	}
}

func (s *system) history(id string) []gateway.StatusEvent {
	s.t.Helper()
	h, err := s.db.History(context.Background(), "acme", id)
	if err != nil {
		s.t.Fatal(err)
	}
	return h
}

func statuses(h []gateway.StatusEvent) []gateway.Status {
	var out []gateway.Status
	for _, e := range h {
		out = append(out, e.Status)
	}
	return out
}

// grepDir fails the test when any file under dir contains one of needles.
func grepDir(t *testing.T, dir string, needles ...string) {
	t.Helper()
	for _, n := range needles {
		paths, _ := gatewaytest.FilesHolding(t, dir, []byte(n))
		for _, p := range paths {
			t.Errorf("%s contains %q in plaintext", p, n)
		}
	}
}

func TestEndToEndReachesRead(t *testing.T) {
	s := newSystem(t, options{})
	const body = "Your parcel XJ-55821 arrives tomorrow"
	m := s.accept(number, body)
	s.waitStatus(m.ID, gateway.StatusRead)

	got, err := s.db.Message(context.Background(), "acme", m.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != gateway.StatusRead || got.Content.Text != body || got.ChannelMessageID == "" {
		t.Fatalf("stored %+v", got)
	}
	h := s.history(m.ID)
	want := []gateway.Status{gateway.StatusAccepted, gateway.StatusQueued, gateway.StatusSent, gateway.StatusDelivered, gateway.StatusRead}
	if !equalStatus(statuses(h), want) {
		t.Fatalf("history %v, want %v", statuses(h), want)
	}
	if h[2].ChannelMessageID != got.ChannelMessageID {
		t.Fatalf("sent event names %q, the message %q", h[2].ChannelMessageID, got.ChannelMessageID)
	}

	// One delivery line per transition, with every field of DESIGN.md §3.4.
	lines := logLines(t, s.logs, "msg_id", m.ID)
	var seen []gateway.Status
	for _, l := range lines {
		if l["event"] != "delivery" {
			continue
		}
		seen = append(seen, gateway.Status(l["status"].(string)))
		for _, k := range []string{"level", "tenant", "channel", "account", "to", "subject", "status", "previous", "latency_ms", "time"} {
			if _, ok := l[k]; !ok {
				t.Errorf("delivery line without %s: %v", k, l)
			}
		}
		if l["level"] != "info" || l["to"] != "+49******5678" || !strings.HasPrefix(l["subject"].(string), "s_") || l["channel"] != "whatsapp" {
			t.Errorf("delivery line %v", l)
		}
	}
	if !equalStatus(seen, want) {
		t.Fatalf("delivery lines for %v, want %v", seen, want)
	}
	if logs := s.logs.String(); strings.Contains(logs, body) || strings.Contains(logs, number) || strings.Contains(logs, "15112345678") {
		t.Fatal("the log holds content or the number")
	}
	s.stopRunner()
	grepDir(t, s.dir, body, "XJ-55821", number, "15112345678")
}

func TestEndToEndPermanentFailure(t *testing.T) {
	s := newSystem(t, options{sandbox: sandbox.Config{Fail: []string{number}, FailCode: "not_on_whatsapp"}})
	m := s.accept(number, "hello")
	s.waitStatus(m.ID, gateway.StatusFailed)
	h := s.history(m.ID)
	last := h[len(h)-1]
	if last.Status != gateway.StatusFailed || last.Error == nil || last.Error.Code != "not_on_whatsapp" {
		t.Fatalf("history %+v", h)
	}
	var found bool
	for _, l := range logLines(t, s.logs, "msg_id", m.ID) {
		if l["event"] == "delivery" && l["status"] == "failed" {
			found = l["error_code"] == "not_on_whatsapp" && l["previous"] == "queued"
		}
	}
	if !found {
		t.Fatalf("no failed line with its error code: %s", s.logs.String())
	}
}

func TestEndToEndRejectedBeforeDispatch(t *testing.T) {
	s := newSystem(t, options{})
	s.optedOut.Store(true) // the person opted out while the message waited
	m := s.accept(number, "hello")
	s.waitStatus(m.ID, gateway.StatusRejected)
	h := s.history(m.ID)
	last := h[len(h)-1]
	if last.Error == nil || last.Error.Code != gateway.ERecipientOptedOut {
		t.Fatalf("history %+v", h)
	}
	if st := s.sandbox.Stats(); st.Sent != 0 {
		t.Fatalf("a rejected message reached the network: %+v", st)
	}
}

func TestEndToEndNoSecondSend(t *testing.T) {
	s := newSystem(t, options{})
	m := s.accept(number, "hello")
	s.waitStatus(m.ID, gateway.StatusRead)

	// A redelivery after sent (a replay, a crash before the ack): acked, not sent again.
	data, _ := json.Marshal(gateway.Dispatch{MessageID: m.ID, Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales"})
	if err := s.runner.Handle(context.Background(), &bus.Msg{Subject: s.runner.Subject(), Data: data, NumDelivered: 2}); err != nil {
		t.Fatal(err)
	}
	if st := s.sandbox.Stats(); st.Sent != 1 || st.Duplicates != 0 {
		t.Fatalf("stats %+v: want one send, no resend", st)
	}
}

func TestEndToEndCrashAfterSendBeforeSentEvent(t *testing.T) {
	s := newSystem(t, options{noRunner: true})
	m := s.accept(number, "hello")
	s.waitStatus(m.ID, gateway.StatusQueued)
	// No receipts during the test: a delivered receipt would make the second attempt a no-op.
	s.startManual(sandbox.Config{DeliveredAfter: time.Hour})

	// The sent event is lost the first time (as if the process died right after Send): the bus
	// redelivers, the runner sends again under the same channel id, and the network drops it.
	s.bus.failNext(bus.StreamStatus, 1)
	data, _ := json.Marshal(gateway.Dispatch{MessageID: m.ID, Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales"})
	msg := &bus.Msg{Subject: s.runner.Subject(), Data: data, NumDelivered: 1}
	if err := s.runner.Handle(context.Background(), msg); err == nil {
		t.Fatal("Handle must fail when the sent event cannot be published")
	}
	msg.NumDelivered = 2
	if err := s.runner.Handle(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(m.ID, gateway.StatusSent)
	s.stopRunner()
	if st := s.sandbox.Stats(); st.Sent != 1 || st.Duplicates != 1 {
		t.Fatalf("stats %+v: want one send and the resend dropped", st)
	}
	l, err := sandbox.ReadLedger(s.dir, gateway.WhatsApp, "sales")
	if err != nil {
		t.Fatal(err)
	}
	if l.Sends[m.ID] != 1 {
		t.Fatalf("ledger: %d sends of %s", l.Sends[m.ID], m.ID)
	}
}

func TestEndToEndSandboxRestartReplaysReceipts(t *testing.T) {
	// The person never reads while the first sandbox runs; after a restart they do.
	s := newSystem(t, options{sandbox: sandbox.Config{ReadAfter: -1}})
	m := s.accept(number, "hello")
	s.waitStatus(m.ID, gateway.StatusDelivered)
	s.stopRunner()

	s.startRunner(sandbox.Config{})
	s.waitStatus(m.ID, gateway.StatusRead)
	s.stopRunner() // the sandbox counts a receipt after the sink took it: let it finish
	if st := s.sandbox.Stats(); st.Sent != 1 || st.Delivered != 1 || st.Read != 1 || st.Duplicates != 0 {
		t.Fatalf("stats %+v", st)
	}
	if h := statuses(s.history(m.ID)); !equalStatus(h, []gateway.Status{gateway.StatusAccepted, gateway.StatusQueued, gateway.StatusSent, gateway.StatusDelivered, gateway.StatusRead}) {
		t.Fatalf("history %v", h)
	}
}

func TestEndToEndOutbox(t *testing.T) {
	s := newSystem(t, options{})
	s.bus.failNext(bus.StreamSend, -1)
	m := s.accept(number, "hello") // stored; the publish fails; Accept still succeeds
	got, err := s.db.Message(context.Background(), "acme", m.ID, false)
	if err != nil || got.Status != gateway.StatusAccepted {
		t.Fatalf("stored %+v, %v", got, err)
	}
	s.bus.failNext("", 0)
	n, err := s.resumer.Scan(context.Background(), 0)
	if err != nil || n != 1 {
		t.Fatalf("resume: %d, %v", n, err)
	}
	s.waitStatus(m.ID, gateway.StatusRead)
}

func TestEndToEndInboundStoredOnce(t *testing.T) {
	s := newSystem(t, options{})
	ctx := context.Background()
	const words = "Where is my parcel XJ-55821?"
	// Run starts on its own goroutine; Inject says unavailable until it has.
	var cid string
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		cid, err = s.sandbox.Inject(ctx, "+49 151 1234 5678", words)
		if gateway.ErrorCode(err) != gateway.EUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	first := <-s.inbound
	if first.Message.Content.Text != words || first.Message.Peer.String() != number || first.Message.ChannelMessageID != cid {
		t.Fatalf("handled %+v", first.Message)
	}

	// The same message published twice more: once with the same Nats-Msg-Id (the bus drops it),
	// once past the bus's duplicate window (a new msg id): the store drops it.
	env, err := pipeline.SealInbound(ctx, s.kr, first.Event)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(env)
	subject := bus.InboundSubject("acme", "whatsapp")
	if err := s.bus.Publish(ctx, subject, pipeline.InboundMsgID(gateway.WhatsApp, "sales", cid), data); err != nil {
		t.Fatal(err)
	}
	if err := s.bus.Publish(ctx, subject, "later:"+cid, data); err != nil {
		t.Fatal(err)
	}
	// A different message after them: the recorder runs one at a time, so once this one is handled,
	// the duplicates have been seen.
	if _, err := s.sandbox.Inject(ctx, number, "thanks"); err != nil {
		t.Fatal(err)
	}
	second := <-s.inbound
	if second.Message.Content.Text != "thanks" {
		t.Fatalf("a duplicate reached the handlers: %+v", second.Message)
	}
	msgs, _, err := s.db.ListMessages(ctx, "acme", store.MessageFilter{Direction: gateway.Inbound})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d inbound messages stored, want 2", len(msgs))
	}
	if n := len(logLines(t, s.logs, "event", "inbound")); n != 2 {
		t.Fatalf("%d inbound log lines, want 2", n)
	}
	if strings.Contains(s.logs.String(), "parcel") || strings.Contains(s.logs.String(), number) {
		t.Fatal("the log holds inbound content or the number")
	}
	s.stopRunner()
	grepDir(t, s.dir, "XJ-55821", number)
}

func equalStatus(a, b []gateway.Status) bool {
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

// BenchmarkEndToEnd accepts b.N messages from 32 goroutines and waits until every one is read:
// the whole chain on the embedded bus, SQLite and the sandbox.
func BenchmarkEndToEnd(b *testing.B) {
	s := newSystem(b, options{})
	b.ResetTimer()
	ids := make(chan string, b.N)
	var wg sync.WaitGroup
	next := make(chan struct{}, b.N)
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				ids <- s.accept(number, "bench").ID
			}
		}()
	}
	wg.Wait()
	close(ids)
	for id := range ids {
		s.waitStatus(id, gateway.StatusRead)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
