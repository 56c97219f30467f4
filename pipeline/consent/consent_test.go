package consent_test

import (
	"context"
	"fmt"
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
	"github.com/switchboard-gateway/switchboard/pipeline/consent"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	sqlstore "github.com/switchboard-gateway/switchboard/store/sql"
	"github.com/switchboard-gateway/switchboard/store/sql/sqltest"
)

// fakeClock is the consent stage's clock; the test moves it.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// harness is a pipeline on real parts: a SQLite store with the real keyring, the embedded
// JetStream bus, Intake, Router and Recorder running, and a sandbox runner started on demand —
// each with the consent stage.
type harness struct {
	t      *testing.T
	dir    string
	db     *sqlstore.DB
	kr     *crypt.Keyring
	bus    *bus.Bus
	intake *pipeline.Intake
	reg    *consent.Registry
	kw     *consent.Handler
	clock  *fakeClock
	policy consent.Policy
	logs   *gatewaytest.LogBuffer
	log    zerolog.Logger

	mu      sync.Mutex
	status  map[string]gateway.Status
	errs    map[string]string
	changed chan struct{}

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	sandbox *sandbox.Adapter
}

func newHarness(t *testing.T, policy consent.Policy) *harness {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	h := &harness{t: t, dir: dir, policy: policy, logs: &gatewaytest.LogBuffer{}, clock: &fakeClock{},
		status: map[string]gateway.Status{}, errs: map[string]string{}, changed: make(chan struct{})}
	h.clock.set(time.Now())
	h.log = zerolog.New(h.logs).With().Timestamp().Logger()
	db, kr := sqltest.Open(t, dir)
	h.db, h.kr = db, kr
	b, err := bus.Open(ctx, bus.Config{Embedded: &bus.Embedded{StoreDir: filepath.Join(dir, "nats"), StoreKey: string(kr.DeriveKey("test"))}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	h.bus = b
	h.ctx, h.cancel = context.WithCancel(ctx)
	t.Cleanup(func() {
		h.cancel()
		h.wg.Wait()
		if h.sandbox != nil {
			h.sandbox.Close()
		}
		b.Close(context.Background())
	})
	h.reg = &consent.Registry{Store: db, Log: h.log}
	h.intake, err = pipeline.NewIntake(pipeline.IntakeConfig{Store: db, Bus: b, Replays: db, Stages: []pipeline.Stage{h.stage("intake")}, Log: h.log})
	if err != nil {
		t.Fatal(err)
	}
	h.kw = &consent.Handler{Registry: h.reg, Store: db, Intake: h.intake, Policy: h.policyFor, Log: h.log}
	router, err := pipeline.NewRouter(pipeline.RouterConfig{Store: db, Bus: b, Stages: []pipeline.Stage{h.stage("router"), pipeline.RouteStage{}}, Log: h.log})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := pipeline.NewRecorder(pipeline.RecorderConfig{Store: db, Bus: b, Log: h.log, OnApplied: h.onApplied})
	if err != nil {
		t.Fatal(err)
	}
	h.run(router.Run)
	h.run(rec.Run)
	return h
}

func (h *harness) policyFor(tenant string, ch gateway.Channel) (consent.Policy, bool) {
	return h.policy, tenant == "acme" && ch == gateway.WhatsApp
}

func (h *harness) stage(point string) *consent.Stage {
	return &consent.Stage{Store: h.db, Policy: h.policyFor, Point: point, Log: h.log, Clock: h.clock.now}
}

func (h *harness) run(fn func(context.Context) error) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := fn(h.ctx); err != nil && h.ctx.Err() == nil {
			h.t.Errorf("run: %v", err)
		}
	}()
}

// startRunner starts the sandbox account's dispatch consumer, with the consent stage.
func (h *harness) startRunner() {
	h.t.Helper()
	sb, err := sandbox.New(sandbox.Config{Channel: gateway.WhatsApp, Account: "sales", Dir: h.dir, ReadAfter: -1})
	if err != nil {
		h.t.Fatal(err)
	}
	h.sandbox = sb
	r, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Adapter: sb,
		Store: h.db, Bus: h.bus, Sealer: h.kr, Stages: []pipeline.Stage{h.stage("runner")}, Log: h.log,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.run(r.Run)
}

func (h *harness) onApplied(_ context.Context, as []store.Applied) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range as {
		if a.Advanced {
			h.status[a.Event.MessageID] = a.Event.Status
			if a.Event.Error != nil {
				h.errs[a.Event.MessageID] = a.Event.Error.Code
			}
		}
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// waitAll waits until every id is at want.
func (h *harness) waitAll(ids []string, want gateway.Status) {
	h.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		h.mu.Lock()
		done := 0
		for _, id := range ids {
			if h.status[id] == want {
				done++
			}
		}
		ch := h.changed
		h.mu.Unlock()
		if done == len(ids) {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			h.t.Fatalf("%d of %d messages reached %s", done, len(ids), want)
		}
	}
}

func (h *harness) accept(to string) (*gateway.Message, error) {
	h.t.Helper()
	m := &gateway.Message{Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: addr(h.t, to), Content: gateway.Content{Text: "hello"}}
	got, _, _, err := h.intake.Accept(context.Background(), store.NewMessage{Message: m})
	return got, err
}

func addr(t testing.TB, s string) gateway.Address {
	t.Helper()
	a, err := gateway.ParseAddress(gateway.WhatsApp, s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// inbound hands the keyword handler a message the person wrote, as the InboundRecorder does.
func (h *harness) inbound(from, text string, at time.Time) pipeline.Inbound {
	h.t.Helper()
	a := addr(h.t, from)
	cmid := gateway.NewID("SB")
	m := &gateway.Message{
		ID: pipeline.InboundID("acme", gateway.WhatsApp, "sales", cmid, at), Tenant: "acme", Direction: gateway.Inbound,
		Channel: gateway.WhatsApp, Account: "sales", Peer: a, Content: gateway.Content{Text: text}, Status: gateway.StatusReceived,
		ChannelMessageID: cmid, CreatedAt: at, UpdatedAt: at,
	}
	return pipeline.Inbound{Message: m, Event: gateway.InboundEvent{ID: m.ID, From: a, Content: m.Content, At: at}}
}

func code(err error) string { return gateway.ErrorCode(err) }

var defaultKeywords = consent.Keywords{
	OptOut: []string{"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"},
	OptIn:  []string{"START", "YES", "UNSTOP"},
	Help:   []string{"HELP", "INFO"},
}

// TestOptOutWhileHundredQueued: 100 messages wait in DISPATCH (their runner is not running yet)
// when the person sends STOP. None of them reaches the network; every one ends rejected
// recipient_opted_out, in its status and in its delivery-log line. The confirmation goes out.
func TestOptOutWhileHundredQueued(t *testing.T) {
	h := newHarness(t, consent.Policy{ReplyWindow: 24 * time.Hour, Keywords: defaultKeywords, Replies: consent.Replies{OptOut: "bye"}})
	const number = "+4915112345670"
	ids := make([]string, 100)
	for i := range ids {
		m, err := h.accept(number)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = m.ID
	}
	h.waitAll(ids, gateway.StatusQueued)

	in := h.inbound(number, "Stop", time.Now())
	if err := h.kw.HandleInbound(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	reply := consent.ReplyID("acme", gateway.WhatsApp, "sales", in.Message.ID, in.Message.CreatedAt)
	h.startRunner()
	h.waitAll(ids, gateway.StatusRejected)
	h.waitAll([]string{reply}, gateway.StatusDelivered)

	h.mu.Lock()
	for _, id := range ids {
		if h.errs[id] != gateway.ERecipientOptedOut {
			t.Errorf("%s ended with %q", id, h.errs[id])
		}
	}
	h.mu.Unlock()
	if st := h.sandbox.Stats(); st.Sent != 1 {
		t.Fatalf("the network took %d messages; want only the confirmation", st.Sent)
	}
	l, err := sandbox.ReadLedger(h.dir, gateway.WhatsApp, "sales")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Sends) != 1 || l.Sends[reply] != 1 {
		t.Fatalf("ledger: %v", l.Sends)
	}
	rejected := 0
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(line, `"event":"delivery"`) && strings.Contains(line, `"status":"rejected"`) &&
			strings.Contains(line, `"error_code":"recipient_opted_out"`) && strings.Contains(line, `"subject":"s_`) {
			rejected++
		}
	}
	if rejected != 100 {
		t.Fatalf("%d rejected delivery-log lines, want 100", rejected)
	}
	if strings.Contains(h.logs.String(), "4915112345670") {
		t.Fatal("the log holds the number")
	}
}

// TestRequireOptInReplyWindow: with require_opt_in a send needs consent; an inbound message opens
// a window of reply_window, measured by the stage's clock at accept and again before the send.
func TestRequireOptInReplyWindow(t *testing.T) {
	h := newHarness(t, consent.Policy{RequireOptIn: true, ReplyWindow: 24 * time.Hour, Keywords: defaultKeywords})
	const number = "+4915112345671"
	if _, err := h.accept(number); code(err) != gateway.EConsentRequired {
		t.Fatalf("before any contact: %v, want consent_required", err)
	}
	wrote := h.clock.now()
	if err := h.kw.HandleInbound(context.Background(), h.inbound(number, "hello there", wrote)); err != nil {
		t.Fatal(err)
	}
	early, err := h.accept(number)
	if err != nil {
		t.Fatalf("right after the inbound message: %v", err)
	}
	h.clock.advance(23 * time.Hour)
	late, err := h.accept(number)
	if err != nil {
		t.Fatalf("23h after the inbound message: %v", err)
	}
	h.waitAll([]string{early.ID, late.ID}, gateway.StatusQueued)
	h.clock.advance(2 * time.Hour)
	if _, err := h.accept(number); code(err) != gateway.EOutsideWindow {
		t.Fatalf("25h after: %v, want outside_window", err)
	}
	// The two queued messages now wait outside the window: the runner refuses them.
	h.startRunner()
	h.waitAll([]string{early.ID, late.ID}, gateway.StatusRejected)
	h.mu.Lock()
	got := h.errs[late.ID]
	h.mu.Unlock()
	if got != gateway.EOutsideWindow || h.sandbox.Stats().Sent != 0 {
		t.Fatalf("late message error %q, sent %d", got, h.sandbox.Stats().Sent)
	}
	// A new message from the person restarts the window; an opt-in needs no window at all.
	if err := h.kw.HandleInbound(context.Background(), h.inbound(number, "still there?", h.clock.now())); err != nil {
		t.Fatal(err)
	}
	if _, err := h.accept(number); err != nil {
		t.Fatalf("after a new inbound message: %v", err)
	}
	const other = "+4915112345672"
	if _, err := h.reg.Record(context.Background(), store.ConsentChange{Tenant: "acme", Channel: gateway.WhatsApp, Subject: addr(t, other),
		State: store.ConsentOptedIn, Source: store.SourceAPI, Actor: "key_test"}); err != nil {
		t.Fatal(err)
	}
	h.clock.advance(1000 * time.Hour)
	if _, err := h.accept(other); err != nil {
		t.Fatalf("opted in: %v", err)
	}
}

// TestKeywordRedeliveryAndBypass: the handler records one piece of evidence and one confirmation
// per inbound message however often it is delivered, and the bypass lets only that confirmation
// through.
func TestKeywordRedeliveryAndBypass(t *testing.T) {
	h := newHarness(t, consent.Policy{ReplyWindow: 24 * time.Hour, Keywords: defaultKeywords,
		Replies: consent.Replies{OptOut: "bye", OptIn: "hi", Help: "help text"}})
	ctx := context.Background()
	const number = "+4915112345673"
	in := h.inbound(number, "  UNSUBSCRIBE.", time.Now())
	for i := 0; i < 3; i++ {
		in.Redelivered = i > 0
		if err := h.kw.HandleInbound(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	c, err := h.db.Consent(ctx, "acme", gateway.WhatsApp, addr(t, number))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.History) != 1 || c.History[0].State != store.ConsentOptedOut || c.History[0].Source != store.SourceKeyword || c.History[0].InboundMessageID != in.Message.ID {
		t.Fatalf("history after three deliveries: %+v", c.History)
	}
	out, _, err := h.db.ListMessages(ctx, "acme", store.MessageFilter{Direction: gateway.Outbound})
	if err != nil {
		t.Fatal(err)
	}
	reply := consent.ReplyID("acme", gateway.WhatsApp, "sales", in.Message.ID, in.Message.CreatedAt)
	if len(out) != 1 || out[0].ID != reply {
		t.Fatalf("outbound after three deliveries: %d messages", len(out))
	}
	// Any other message to the subject is refused, whatever its id.
	if _, err := h.accept(number); code(err) != gateway.ERecipientOptedOut {
		t.Fatalf("a new send: %v", err)
	}
	forged := &gateway.Message{ID: gateway.NewMessageID(), Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: addr(t, number), Content: gateway.Content{Text: "x"}}
	if _, _, _, err := h.intake.Accept(ctx, store.NewMessage{Message: forged}); code(err) != gateway.ERecipientOptedOut {
		t.Fatalf("a second message: %v", err)
	}
	// The bypass belongs to the subject: the confirmation's id to someone else who opted out is refused.
	const other = "+4915112345674"
	if _, err := h.reg.Record(ctx, store.ConsentChange{Tenant: "acme", Channel: gateway.WhatsApp, Subject: addr(t, other),
		State: store.ConsentOptedOut, Source: store.SourceAPI}); err != nil {
		t.Fatal(err)
	}
	stage := h.stage("test")
	m := &gateway.Message{ID: reply, Tenant: "acme", Direction: gateway.Outbound, Channel: gateway.WhatsApp, Account: "sales", Peer: addr(t, other)}
	if err := stage.Check(ctx, m); code(err) != gateway.ERecipientOptedOut {
		t.Fatalf("the bypass applied to another subject: %v", err)
	}
	// HELP from someone who opted out gets no answer (the STOP confirmation was the one message).
	if err := h.kw.HandleInbound(ctx, h.inbound(number, "help", time.Now())); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := h.db.ListMessages(ctx, "acme", store.MessageFilter{Direction: gateway.Outbound}); len(out) != 1 {
		t.Fatalf("HELP after STOP was answered: %d outbound", len(out))
	}
	if !strings.Contains(h.logs.String(), `"event":"keyword_reply_suppressed"`) {
		t.Fatal("no log of the suppressed reply")
	}
	// START: opted in, answered; then HELP is answered too.
	if err := h.kw.HandleInbound(ctx, h.inbound(number, "yes", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := h.kw.HandleInbound(ctx, h.inbound(number, "Info?", time.Now())); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := h.db.ListMessages(ctx, "acme", store.MessageFilter{Direction: gateway.Outbound}); len(out) != 3 {
		t.Fatalf("after START and INFO: %d outbound, want 3", len(out))
	}
	if _, err := h.accept(number); err != nil {
		t.Fatalf("after START: %v", err)
	}
}

// TestCategories: a plain opt-out covers every category; a category opt-out covers its category.
func TestCategories(t *testing.T) {
	h := newHarness(t, consent.Policy{ReplyWindow: 24 * time.Hour})
	ctx := context.Background()
	record := func(to, cat string, st store.ConsentState) {
		t.Helper()
		if _, err := h.reg.Record(ctx, store.ConsentChange{Tenant: "acme", Channel: gateway.WhatsApp, Subject: addr(t, to),
			Category: cat, State: st, Source: store.SourceAdmin}); err != nil {
			t.Fatal(err)
		}
	}
	const plain, marketing = "+4915112345675", "+4915112345676"
	record(plain, "", store.ConsentOptedOut)
	record(plain, store.CategoryUtility, store.ConsentOptedIn)
	record(marketing, store.CategoryMarketing, store.ConsentOptedOut)
	tests := []struct {
		to, category, want string
	}{
		{plain, "", gateway.ERecipientOptedOut},
		{plain, store.CategoryUtility, gateway.ERecipientOptedOut},
		{plain, store.CategoryMarketing, gateway.ERecipientOptedOut},
		{marketing, store.CategoryMarketing, gateway.ERecipientOptedOut},
		{marketing, store.CategoryUtility, ""},
		{marketing, "", ""},
	}
	stage := h.stage("test")
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.to[len(tt.to)-2:], tt.category), func(t *testing.T) {
			m := &gateway.Message{ID: gateway.NewMessageID(), Tenant: "acme", Direction: gateway.Outbound, Channel: gateway.WhatsApp,
				Account: "sales", Peer: addr(t, tt.to), Metadata: map[string]string{"category": tt.category}}
			if got := code(stage.Check(ctx, m)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRequireOptInIsForPeople: a WhatsApp group has no opt-in and no reply window of its own, so
// require_opt_in does not block it; a person is blocked.
func TestRequireOptInIsForPeople(t *testing.T) {
	h := newHarness(t, consent.Policy{RequireOptIn: true, ReplyWindow: 24 * time.Hour})
	stage := h.stage("test")
	for _, tt := range []struct{ to, want string }{
		{"120363000000000001@g.us", ""},
		{"+4915112345677", gateway.EConsentRequired},
	} {
		m := &gateway.Message{ID: gateway.NewMessageID(), Tenant: "acme", Direction: gateway.Outbound, Channel: gateway.WhatsApp, Account: "sales", Peer: addr(t, tt.to)}
		if got := code(stage.Check(context.Background(), m)); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.to, got, tt.want)
		}
	}
}

// A restriction of processing is read with consent, in the same query: a restricted person gets
// nothing (subject_restricted), even with an opt-in or the one opt-out confirmation; an opt-out
// is still reported as such; a lifted restriction sends again.
func TestRestrictedSubject(t *testing.T) {
	h := newHarness(t, consent.Policy{RequireOptIn: false})
	ctx := context.Background()
	stage := h.stage("test")
	restrict := func(to string, on bool) {
		t.Helper()
		idx, err := h.kr.BlindIndex(ctx, "acme", addr(t, to).String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.db.SetRestriction(ctx, "acme", idx, "test", on); err != nil {
			t.Fatal(err)
		}
	}
	const restricted, optedOut, other = "+4915112345681", "+4915112345682", "+4915112345683"
	restrict(restricted, true)
	restrict(optedOut, true)
	if _, err := h.reg.Record(ctx, store.ConsentChange{Tenant: "acme", Channel: gateway.WhatsApp, Subject: addr(t, optedOut),
		State: store.ConsentOptedOut, Source: store.SourceAPI, Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	send := func(to, id string) string {
		m := &gateway.Message{ID: id, Tenant: "acme", Direction: gateway.Outbound, Channel: gateway.WhatsApp, Account: "sales", Peer: addr(t, to)}
		return code(stage.Check(ctx, m))
	}
	if err := h.db.GrantOptOutBypass(ctx, "acme", addr(t, restricted), "msg_confirm", "msg_stop"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, to, id, want string }{
		{"restricted", restricted, gateway.NewMessageID(), gateway.ESubjectRestricted},
		{"restricted, opt-out confirmation", restricted, "msg_confirm", gateway.ESubjectRestricted},
		{"restricted and opted out", optedOut, gateway.NewMessageID(), gateway.ERecipientOptedOut},
		{"not restricted", other, gateway.NewMessageID(), ""},
		{"a group is no person", "120363000000000001@g.us", gateway.NewMessageID(), ""},
	} {
		if got := send(tt.to, tt.id); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
	restrict(restricted, false)
	if got := send(restricted, gateway.NewMessageID()); got != "" {
		t.Fatalf("after lifting: %q", got)
	}
}
