package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline/automation"
	"github.com/switchboard-gateway/switchboard/store"
)

const automationYAML = `
data_dir: DATA
server: {listen: "127.0.0.1:0"}
tenants:
  - id: demo
    channels:
      whatsapp:
        accounts: [{name: sales, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
      teams:
        accounts: [{name: ops, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
    automations:
      - name: invoices-to-finance
        when: {inbound: {channel: whatsapp, text: {contains_any: [invoice, factura]}}}
        if: 'not contact.tags.contains("vip")'
        do:
          - forward: {to: "teams:channel:team1/chan1", template: "WhatsApp {{.From.Masked}}: {{.Text}}"}
          - reply:   {text: "Thanks, Finance will answer within a day."}
      - name: escalate
        when: {inbound: {channel: whatsapp, text: {keyword: escalate}}}
        do: [{forward: {to: "+4915199999999"}}]
      - name: ping
        when: {inbound: {channel: whatsapp, text: {keyword: ping}}}
        do: [{reply: {text: "PONG_V1"}}]
`

// harness runs a whole gateway in the test process and reports what happens as events.
type harness struct {
	t        *testing.T
	s        *Server
	path     string
	outcomes chan automation.Outcome
	reloads  chan automation.ReloadResult
	hup      chan struct{}

	mu      sync.Mutex
	read    map[string]bool
	changed chan struct{}
}

func startAutomations(t *testing.T) *harness {
	return startAutomationsWith(t, automationYAML, nil)
}

// startAutomationsWith runs a gateway on the configuration src (DATA is the data dir); lookupEnv
// is its environment for the automations' secrets.
func startAutomationsWith(t *testing.T, src string, lookupEnv func(string) (string, bool)) *harness {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "switchboard.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(src, "DATA", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t: t, path: path, outcomes: make(chan automation.Outcome, 100), reloads: make(chan automation.ReloadResult, 10),
		hup: make(chan struct{}), read: map[string]bool{}, changed: make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, Options{
		Dev: true, Log: zerolog.Nop(), ConfigFile: path, ReloadSignal: h.hup, LookupEnv: lookupEnv,
		OnReload:     func(r automation.ReloadResult) { h.reloads <- r },
		OnAutomation: func(o automation.Outcome) { h.outcomes <- o },
		OnApplied: func(_ context.Context, applied []store.Applied) {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, a := range applied {
				if a.Advanced && a.Event.Status == gateway.StatusRead {
					h.read[a.Event.MessageID] = true
				}
			}
			close(h.changed)
			h.changed = make(chan struct{})
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h.s = s
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func (h *harness) inject(text string) string {
	h.t.Helper()
	// The runner starts the sandbox in the background and announces nothing: poll, with a deadline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		cid, err := h.s.sandboxes[accountKey{"demo", gateway.WhatsApp, "sales"}].Inject(context.Background(), "+4915112345678", text)
		if err == nil {
			return cid
		}
		if gateway.ErrorCode(err) != gateway.EUnavailable || time.Now().After(deadline) {
			h.t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) outcome() automation.Outcome {
	h.t.Helper()
	select {
	case o := <-h.outcomes:
		return o
	case <-time.After(30 * time.Second):
		h.t.Fatal("no automation outcome")
	}
	return automation.Outcome{}
}

func (h *harness) reload() automation.ReloadResult {
	h.t.Helper()
	select {
	case r := <-h.reloads:
		return r
	case <-time.After(30 * time.Second):
		h.t.Fatal("no reload")
	}
	return automation.ReloadResult{}
}

func (h *harness) waitRead(id string) {
	h.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		ok, changed := h.read[id], h.changed
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			h.t.Fatalf("message %s never read", id)
		}
	}
}

func (h *harness) message(id string) *gateway.Message {
	h.t.Helper()
	m, err := h.s.db.Message(context.Background(), "demo", id, true)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// TestAutomationForwardReplyRedeliveryOptOut: an inbound WhatsApp "Invoice 42 attached" is
// forwarded to the Teams sandbox account with the template text and the reply reaches the sender;
// the same INBOUND message delivered again forwards nothing more; a forward to an opted-out subject
// is rejected like an API send.
func TestAutomationForwardReplyRedeliveryOptOut(t *testing.T) {
	h := startAutomations(t)
	ctx := context.Background()
	h.inject("Invoice 42 attached")

	fw, reply := h.outcome(), h.outcome()
	if fw.Kind != "forward" || fw.Result != "accepted" || reply.Kind != "reply" || reply.Result != "accepted" {
		t.Fatalf("outcomes %+v / %+v", fw, reply)
	}
	h.waitRead(fw.MessageID)
	h.waitRead(reply.MessageID)
	m := h.message(fw.MessageID)
	if m.Channel != gateway.Teams || m.Account != "ops" || m.Peer.String() != "teams:channel:team1/chan1" ||
		m.Content.Text != "WhatsApp +49******5678: Invoice 42 attached" || m.Hops != 1 || m.Status != gateway.StatusRead {
		t.Fatalf("forward = %+v", m)
	}
	r := h.message(reply.MessageID)
	if r.Channel != gateway.WhatsApp || r.Peer.String() != "+4915112345678" || r.Content.Text != "Thanks, Finance will answer within a day." {
		t.Fatalf("reply = %+v", r)
	}
	teams := h.s.sandboxes[accountKey{"demo", gateway.Teams, "ops"}]
	if st := teams.Stats(); st.Sent != 1 {
		t.Fatalf("teams sandbox sent %d", st.Sent)
	}

	// Redeliver the very INBOUND message the recorder handled, as the bus does after a failure.
	fctx, stop := context.WithCancel(ctx)
	var first *bus.Msg
	_ = h.s.bus.Follow(fctx, bus.InboundSubject("demo", "whatsapp"), true, func(m *bus.Msg) error {
		if first == nil {
			first = m
		}
		stop()
		return nil
	})
	stop()
	if first == nil {
		t.Fatal("no inbound message on the bus")
	}
	first.NumDelivered = 2
	if err := h.s.inbound.Handle(ctx, first); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if o := h.outcome(); o.Result != "duplicate" {
			t.Fatalf("redelivery outcome %+v", o)
		}
	}
	out, _, err := h.s.db.ListMessages(ctx, "demo", store.MessageFilter{Channel: gateway.Teams, Direction: gateway.Outbound})
	if err != nil || len(out) != 1 {
		t.Fatalf("teams messages after redelivery: %d %v", len(out), err)
	}
	if st := teams.Stats(); st.Sent != 1 {
		t.Fatalf("teams sandbox sent %d after redelivery", st.Sent)
	}

	// The forward target opted out: the automation's message is refused at intake, like an API send.
	to, _ := gateway.ParseAddress(gateway.WhatsApp, "+4915199999999")
	if _, err := h.s.consentRegistry().Record(ctx, store.ConsentChange{
		Tenant: "demo", Channel: gateway.WhatsApp, Subject: to, State: store.ConsentOptedOut, Source: store.SourceAdmin, Actor: "test", At: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	sentBefore := h.s.sandboxes[accountKey{"demo", gateway.WhatsApp, "sales"}].Stats().Sent
	h.inject("escalate")
	o := h.outcome()
	if o.Rule != "escalate" || o.Result != "rejected" || o.ErrorCode != gateway.ERecipientOptedOut {
		t.Fatalf("opted-out forward: %+v", o)
	}
	if _, err := h.s.db.Message(ctx, "demo", o.MessageID, false); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatal("a rejected forward was stored")
	}
	if got := h.s.sandboxes[accountKey{"demo", gateway.WhatsApp, "sales"}].Stats().Sent; got != sentBefore {
		t.Fatalf("the opted-out subject got a message (%d → %d)", sentBefore, got)
	}
}

// TestAutomationHotReload: a valid change to the file applies (the next PING is answered by the new
// rule), an invalid one is refused and the rules in force keep working, and SIGHUP reloads.
func TestAutomationHotReload(t *testing.T) {
	h := startAutomations(t)
	pong := func() string {
		h.t.Helper()
		h.inject("ping")
		o := h.outcome()
		if o.Rule != "ping" || o.Result != "accepted" {
			t.Fatalf("ping outcome %+v", o)
		}
		return o.Text
	}
	if got := pong(); got != "PONG_V1" {
		t.Fatalf("before reload: %q", got)
	}
	write := func(s string) {
		data := strings.ReplaceAll(strings.ReplaceAll(automationYAML, "DATA", filepath.Dir(h.path)), "PONG_V1", s)
		// Replace the file atomically, as editors do, so the watcher never reads half of it.
		tmp := h.path + ".tmp"
		if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, h.path); err != nil {
			t.Fatal(err)
		}
	}

	write("PONG_V2")
	if r := h.reload(); !r.Applied {
		t.Fatalf("valid change refused: %v", r.Err)
	}
	if got := pong(); got != "PONG_V2" {
		t.Fatalf("after a valid reload: %q", got)
	}

	write(`{{.Nope}}"}}]
      - name: broken
        when: {inbound: {channel: whatsapp, text: {regex: "(oops"}}}
        do: [{reply: {text: "x`)
	r := h.reload()
	if r.Applied || len(r.Problems) != 2 {
		t.Fatalf("invalid change: applied=%v problems=%v", r.Applied, r.Problems)
	}
	if !strings.Contains(r.Problems[0].String(), "do[0].reply.text: template does not work") ||
		!strings.Contains(r.Problems[1].String(), "text.regex: invalid regular expression") {
		t.Fatalf("problems: %v", r.Problems)
	}
	if got := pong(); got != "PONG_V2" {
		t.Fatalf("after a refused reload the old rule must act: %q", got)
	}

	write("PONG_V3")
	if r := h.reload(); !r.Applied {
		t.Fatalf("fixed file refused: %v", r.Err)
	}
	h.hup <- struct{}{} // SIGHUP reloads even an unchanged file
	if r := h.reload(); !r.Applied {
		t.Fatalf("SIGHUP reload: %v", r.Err)
	}
	if got := pong(); got != "PONG_V3" {
		t.Fatalf("after SIGHUP: %q", got)
	}
}
