package automation

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/store"
)

// hookServer is a webhook receiver: it answers with the queued status codes (then 200) and
// keeps every request.
type hookServer struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []*http.Request
	bodies   [][]byte
}

func newHookServer(t *testing.T, statuses ...int) *hookServer {
	h := &hookServer{statuses: statuses}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got, h.bodies = append(h.got, r), append(h.bodies, b)
		status := http.StatusOK
		if len(h.statuses) > 0 {
			status, h.statuses = h.statuses[0], h.statuses[1:]
		}
		h.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

var testSecret = delivery.NewSecret()

type consentLog struct {
	mu      sync.Mutex
	changes []store.ConsentChange
}

func (c *consentLog) Record(_ context.Context, ch store.ConsentChange) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, old := range c.changes {
		if old.InboundMessageID == ch.InboundMessageID {
			return false, nil
		}
	}
	c.changes = append(c.changes, ch)
	return true, nil
}

type actionEnv struct {
	e       *Engine
	in      *fakeIntake
	st      *fakeStore
	consent *consentLog
	rec     *recorder
}

func newActionEnv(t *testing.T, rules string, tune func(*Config)) *actionEnv {
	in := &fakeIntake{byKey: map[string]*gateway.Message{}, optedOut: map[string]bool{}}
	a := &actionEnv{in: in, st: newFakeStore(in), consent: &consentLog{}, rec: &recorder{}}
	cfg := Config{
		Intake: in, Store: a.st, Consent: a.consent, Log: zerolog.Nop(), OnAction: a.rec.add,
		Secret:         func(name string) (string, bool) { return testSecret, name == "HOOK_SECRET" },
		WebhookBackoff: time.Millisecond, Clock: func() time.Time { return eventTime.Add(time.Minute) },
	}
	if tune != nil {
		tune(&cfg)
	}
	a.e = New(cfg, parse(t, rules))
	return a
}

func (a *actionEnv) results() []string {
	a.rec.mu.Lock()
	defer a.rec.mu.Unlock()
	var out []string
	for _, o := range a.rec.out {
		s := o.Kind + ":" + o.Result
		if o.ErrorCode != "" {
			s += ":" + o.ErrorCode
		}
		out = append(out, s)
	}
	return out
}

// TestWebhookAction: the event is posted signed per Standard Webhooks with the action id as
// webhook-id, retried after failures, and not posted again when the event is redelivered.
func TestWebhookAction(t *testing.T) {
	srv := newHookServer(t, 500, 503)
	a := newActionEnv(t, `
      - name: to-ops
        when: {inbound: {channel: whatsapp}}
        do: [{webhook: {url: "`+srv.URL+`/hook", secret_env: HOOK_SECRET, allow_private: true}}]
`, nil)
	ev := event(gateway.WhatsApp, "sales", "+4915112345678", "Invoice 42")
	for range 2 {
		if err := a.e.HandleInbound(t.Context(), inbound(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if srv.count() != 3 {
		t.Fatalf("%d requests, want 3 (two failures, one success, nothing on the redelivery)", srv.count())
	}
	if got := strings.Join(a.results(), ","); got != "webhook:accepted,webhook:duplicate" {
		t.Fatalf("outcomes %s", got)
	}
	r, body := srv.got[2], srv.bodies[2]
	id := r.Header.Get("webhook-id")
	if id != "automation:"+ev.ID+":to-ops:0" || srv.got[0].Header.Get("webhook-id") != id {
		t.Fatalf("webhook-id %q", id)
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(testSecret, delivery.SecretPrefix))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + r.Header.Get("webhook-timestamp") + "."))
	mac.Write(body)
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.Header.Get("webhook-signature") != want {
		t.Fatalf("signature %q, want %q", r.Header.Get("webhook-signature"), want)
	}
	if ts, _ := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64); ts == 0 {
		t.Fatal("no timestamp")
	}
	var p struct {
		Type string `json:"type"`
		Data struct {
			Rule    string                `json:"rule"`
			EventID string                `json:"event_id"`
			Inbound *gateway.InboundEvent `json:"inbound"`
			Subject string                `json:"subject"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != "automation.inbound" || p.Data.Rule != "to-ops" || p.Data.EventID != ev.ID || p.Data.Inbound.Content.Text != "Invoice 42" || p.Data.Subject != "+49******5678" {
		t.Fatalf("payload %s", body)
	}
}

func TestWebhookActionRefusals(t *testing.T) {
	rule := func(url, extra string) string {
		return `
      - name: to-ops
        when: {inbound: {channel: whatsapp}}
        do: [{webhook: {url: "` + url + `", secret_env: HOOK_SECRET` + extra + `}}]
`
	}
	t.Run("loopback refused unless allowed", func(t *testing.T) {
		srv := newHookServer(t)
		a := newActionEnv(t, rule(srv.URL, ""), nil)
		if err := a.e.HandleInbound(t.Context(), inbound(event(gateway.WhatsApp, "sales", "+4915112345678", "x"))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(a.results(), ","); got != "webhook:rejected:"+gateway.EForbidden || srv.count() != 0 {
			t.Fatalf("outcomes %s, %d requests", got, srv.count())
		}
	})
	t.Run("4xx is final", func(t *testing.T) {
		srv := newHookServer(t, 410)
		a := newActionEnv(t, rule(srv.URL, ", allow_private: true"), nil)
		if err := a.e.HandleInbound(t.Context(), inbound(event(gateway.WhatsApp, "sales", "+4915112345678", "x"))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(a.results(), ","); got != "webhook:rejected:"+gateway.EInvalidField || srv.count() != 1 {
			t.Fatalf("outcomes %s, %d requests", got, srv.count())
		}
	})
	t.Run("secret not set", func(t *testing.T) {
		srv := newHookServer(t)
		a := newActionEnv(t, strings.Replace(rule(srv.URL, ", allow_private: true"), "HOOK_SECRET", "OTHER_SECRET", 1), nil)
		if err := a.e.HandleInbound(t.Context(), inbound(event(gateway.WhatsApp, "sales", "+4915112345678", "x"))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(a.results(), ","); got != "webhook:rejected:"+gateway.EMissingField || srv.count() != 0 {
			t.Fatalf("outcomes %s, %d requests", got, srv.count())
		}
	})
	t.Run("down: the event is retried later", func(t *testing.T) {
		srv := newHookServer(t, 500, 500, 500)
		a := newActionEnv(t, rule(srv.URL, ", allow_private: true"), nil)
		ev := event(gateway.WhatsApp, "sales", "+4915112345678", "x")
		if err := a.e.HandleInbound(t.Context(), inbound(ev)); gateway.ErrorCode(err) != gateway.EUnavailable {
			t.Fatalf("err = %v, want unavailable (redeliver)", err)
		}
		if err := a.e.HandleInbound(t.Context(), inbound(ev)); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(a.results(), ","); got != "webhook:accepted" || srv.count() != 4 {
			t.Fatalf("outcomes %s, %d requests", got, srv.count())
		}
	})
	t.Run("timeout", func(t *testing.T) {
		block := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}))
		defer slow.Close()
		defer close(block)
		a := newActionEnv(t, rule(slow.URL, ", allow_private: true"), func(c *Config) {
			c.WebhookTimeout, c.WebhookAttempts = 50*time.Millisecond, 2
		})
		err := a.e.HandleInbound(t.Context(), inbound(event(gateway.WhatsApp, "sales", "+4915112345678", "x")))
		if gateway.ErrorCode(err) != gateway.EUnavailable {
			t.Fatalf("err = %v, want unavailable after the attempts timed out", err)
		}
	})
}

// TestConsentAndTagActions: set_consent goes to the consent registry as automation evidence;
// tags land on the contact and a later condition reads them as contact.tags.
func TestConsentAndTagActions(t *testing.T) {
	a := newActionEnv(t, `
      - name: remind-me
        when: {inbound: {channel: whatsapp, text: {keyword: remind}}}
        do:
          - set_consent: {state: opt_in, category: utility}
          - tag: {add: [reminders, vip], remove: [lapsed]}
      - name: vip-greeting
        when: {inbound: {channel: whatsapp, text: {keyword: hello}}}
        if: 'contact.tags.contains("vip")'
        do: [{reply: {text: "Welcome back"}}]
`, nil)
	hello := event(gateway.WhatsApp, "sales", "+4915112345678", "hello")
	if err := a.e.HandleInbound(t.Context(), inbound(hello)); err != nil {
		t.Fatal(err)
	}
	if len(a.in.accepted) != 0 {
		t.Fatal("greeted before the tag")
	}
	remind := event(gateway.WhatsApp, "sales", "+4915112345678", "REMIND")
	for range 2 {
		if err := a.e.HandleInbound(t.Context(), inbound(remind)); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.consent.changes) != 1 {
		t.Fatalf("%d consent changes", len(a.consent.changes))
	}
	c := a.consent.changes[0]
	if c.State != store.ConsentOptedIn || c.Category != "utility" || c.Source != store.SourceAutomation || c.Subject != remind.From ||
		c.Channel != gateway.WhatsApp || c.Actor != "automation:remind-me" || c.InboundMessageID != "automation:"+remind.ID+":remind-me:0" {
		t.Fatalf("consent change %+v", c)
	}
	if tags, _ := a.st.Tags(t.Context(), "acme", remind.From); strings.Join(tags, ",") != "reminders,vip" {
		t.Fatalf("tags %v", tags)
	}
	hello.ID = gateway.NewMessageID()
	if err := a.e.HandleInbound(t.Context(), inbound(hello)); err != nil {
		t.Fatal(err)
	}
	if len(a.in.accepted) != 1 || a.in.accepted[0].Content.Text != "Welcome back" {
		t.Fatalf("accepted %+v", a.in.accepted)
	}
	if got := strings.Join(a.results(), ","); got != "set_consent:accepted,tag:accepted,set_consent:duplicate,tag:duplicate,reply:accepted" {
		t.Fatalf("outcomes %s", got)
	}
}

// TestStatusRule: a failed status starts the status rule once (also when delivered again), with
// the message's recipient as the subject and the failure in templates and conditions; other
// statuses, old events and erased messages start nothing.
func TestStatusRule(t *testing.T) {
	srv := newHookServer(t)
	a := newActionEnv(t, `
      - name: failures
        when: {status: {in: [failed, rejected], channel: whatsapp}}
        if: 'error_code != "recipient_opted_out"'
        do:
          - webhook: {url: "`+srv.URL+`", secret_env: HOOK_SECRET, allow_private: true}
          - send: {channel: teams, to: "teams:channel:team1/chan1", text: "{{.Status.MessageID}} to {{.Status.To}}: {{.Status.Status}} {{.Status.ErrorCode}}"}
          - tag: {add: [unreachable]}
`, nil)
	orig := &gateway.Message{ID: "msg_orig", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales",
		Peer: mustAddress(gateway.WhatsApp, "+4915112345678"), IdempotencyKey: "orig"}
	if _, _, _, err := a.in.Accept(t.Context(), store.NewMessage{Message: orig}); err != nil {
		t.Fatal(err)
	}
	failed := gateway.StatusEvent{MessageID: "msg_orig", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales",
		Status: gateway.StatusFailed, At: eventTime, Error: &gateway.ErrorDetail{Code: "channel_error", Message: "x"}}
	for _, se := range []gateway.StatusEvent{
		failed, failed, // redelivered
		{MessageID: "msg_orig", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: gateway.StatusDelivered, At: eventTime},
		{MessageID: "msg_orig", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: gateway.StatusRejected, At: eventTime,
			Error: &gateway.ErrorDetail{Code: gateway.ERecipientOptedOut}},
		{MessageID: "msg_gone", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: gateway.StatusFailed, At: eventTime},
		{MessageID: "msg_orig", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: gateway.StatusRejected, At: eventTime.Add(-2 * time.Hour)},
	} {
		if err := a.e.HandleStatus(t.Context(), se); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(a.results(), ","); got != "webhook:accepted,send:accepted,tag:accepted,webhook:duplicate,send:duplicate,tag:duplicate" {
		t.Fatalf("outcomes %s", got)
	}
	sent := a.in.accepted[1]
	if sent.Content.Text != "msg_orig to +49******5678: failed channel_error" || sent.Channel != gateway.Teams || sent.Hops != 1 {
		t.Fatalf("sent %+v", sent)
	}
	if tags, _ := a.st.Tags(t.Context(), "acme", orig.Peer); strings.Join(tags, ",") != "unreachable" {
		t.Fatalf("tags %v", tags)
	}
	// Once the subject's processing is restricted, its statuses start nothing.
	a.e.cfg.Restricted = func(_ context.Context, tenant string, subject gateway.Address) (bool, error) {
		return tenant == "acme" && subject == orig.Peer, nil
	}
	failed.Status = gateway.StatusRejected
	if err := a.e.HandleStatus(t.Context(), failed); err != nil {
		t.Fatal(err)
	}
	if n := len(a.results()); n != 6 {
		t.Fatalf("a restricted subject's status acted: %v", a.results())
	}
	if !strings.Contains(string(srv.bodies[0]), `"type":"automation.status"`) || !strings.Contains(string(srv.bodies[0]), `"status":"failed"`) {
		t.Fatalf("webhook body %s", srv.bodies[0])
	}
}

// TestHookRule: a hook call starts its rules with the body in conditions and templates, once per
// event id; an unknown hook is not found.
func TestHookRule(t *testing.T) {
	a := newActionEnv(t, `
      - name: shipped
        when: {hook: {name: order-shipped}}
        if: 'hook.total > 100'
        do: [{send: {channel: whatsapp, to: "+4915112345678", text: "Order {{.Hook.order_id}} is on its way"}}]
      - name: broken
        when: {hook: {name: order-shipped}}
        do: [{send: {channel: whatsapp, to: "+4915112345678", text: "{{.Hook.missing}}"}}]
`, nil)
	for _, body := range []map[string]any{{"order_id": "A-1", "total": 129.5}, {"order_id": "A-1", "total": 129.5}} {
		if err := a.e.HandleHook(t.Context(), "acme", "order-shipped", "hook_1", body, eventTime); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.e.HandleHook(t.Context(), "acme", "order-shipped", "hook_2", map[string]any{"order_id": "A-2", "total": 5}, eventTime); err != nil {
		t.Fatal(err)
	}
	if len(a.in.accepted) != 1 || a.in.accepted[0].Content.Text != "Order A-1 is on its way" {
		t.Fatalf("accepted %+v", a.in.accepted)
	}
	if got := strings.Join(a.results(), ","); got != "send:accepted,:error,send:duplicate,:error,:error" {
		t.Fatalf("outcomes %s", got)
	}
	if err := a.e.HandleHook(t.Context(), "acme", "nothing", "hook_3", map[string]any{}, eventTime); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatalf("unknown hook: %v", err)
	}
}

// TestSendToListWithNamedTemplate: a send to a list creates one message per member, each with its
// own id, from the named template; a redelivery creates none.
func TestSendToListWithNamedTemplate(t *testing.T) {
	a := newActionEnv(t, `
      - name: news
        when: {inbound: {channel: teams, text: {keyword: publish}}}
        do: [{send: {channel: whatsapp, to_list: reminders, template_name: reminder}}]
`, nil)
	ev := event(gateway.Teams, "ops", "teams:user:11111111-2222-3333-4444-555555555555", "publish")
	for range 2 {
		if err := a.e.HandleInbound(t.Context(), inbound(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.in.accepted) != 2 {
		t.Fatalf("%d messages, want one per member", len(a.in.accepted))
	}
	m0, m1 := a.in.accepted[0], a.in.accepted[1]
	if m0.Peer.String() != "+4915112345678" || m1.Peer.String() != "+4915112345679" || m0.ID == m1.ID ||
		m0.Content.Text != "Reminder from news" || strings.Contains(m0.IdempotencyKey, "4915") {
		t.Fatalf("messages %+v %+v", m0, m1)
	}
}

// TestHookCallCutShort: when the call's deadline ends before the actions are done, the caller is
// told to call again (unavailable), and the call again acts once.
func TestHookCallCutShort(t *testing.T) {
	srv := newHookServer(t)
	a := newActionEnv(t, `
      - name: shipped
        when: {hook: {name: order-shipped}}
        do: [{webhook: {url: "`+srv.URL+`", secret_env: HOOK_SECRET, allow_private: true}}]
`, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := a.e.HandleHook(ctx, "acme", "order-shipped", "hook_1", map[string]any{}, eventTime); gateway.ErrorCode(err) != gateway.EUnavailable {
		t.Fatalf("err = %v, want unavailable", err)
	}
	for range 2 {
		if err := a.e.HandleHook(t.Context(), "acme", "order-shipped", "hook_1", map[string]any{}, eventTime); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(a.results(), ","); got != "webhook:accepted,webhook:duplicate" || srv.count() != 1 {
		t.Fatalf("outcomes %s, %d requests", got, srv.count())
	}
}
