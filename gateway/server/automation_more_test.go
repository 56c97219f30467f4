package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/automation"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
	"github.com/switchboard-gateway/switchboard/store"
)

const moreYAML = `
data_dir: DATA
server: {listen: "127.0.0.1:0"}
tenants:
  - id: demo
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts:
          - name: sales
            driver: sandbox
            sandbox: {delivered_after: 5ms, read_after: 10ms, fail: ["+4915100000001"], replies: [{match: invoice, text: "echo invoice"}]}
      teams:
        accounts: [{name: ops, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms, replies: [{match: invoice, text: "echo invoice"}]}}]
    lists: {customers: ["+4915100000001"]}
    templates: {shipped: "Order {{.Hook.order_id}} has shipped"}
    automations:
      - name: wa-to-teams
        when: {inbound: {channel: whatsapp, text: {contains_any: [invoice]}}}
        do: [{forward: {to: "teams:channel:team1/chan1", template: "WhatsApp: {{.Text}}"}}]
      - name: teams-to-wa
        when: {inbound: {channel: teams, text: {contains_any: [invoice]}}}
        do: [{forward: {to: "+4915112345678", template: "Teams: {{.Text}}"}}]
      - name: shipped
        when: {hook: {name: order-shipped}}
        do: [{send: {channel: whatsapp, to_list: customers, template_name: shipped}}]
      - name: failures
        when: {status: {in: [failed], channel: whatsapp}}
        do:
          - webhook: {url: "HOOKURL", secret_env: OPS_SECRET, allow_private: true}
          - tag: {add: [unreachable]}
      - name: nomore
        when: {inbound: {channel: whatsapp, text: {keyword: nomore}}}
        do: [{set_consent: {state: opt_out}}]
`

func (h *harness) outcomeOf(rule string) automation.Outcome {
	h.t.Helper()
	for {
		o := h.outcome()
		if o.Rule == rule {
			return o
		}
	}
}

// TestAutomationLoopStopsAtHopLimit: WhatsApp → Teams → WhatsApp → Teams, each sandbox echoing
// what it receives: every echo inherits the hop count stored with the forward it answers, and the
// chain stops at the limit.
func TestAutomationLoopStopsAtHopLimit(t *testing.T) {
	h := startAutomationsWith(t, strings.Replace(moreYAML, "HOOKURL", "https://ops.example.com/hook", 1), nil)
	h.inject("Invoice 7")
	var hops []int
	for {
		o := h.outcome()
		if o.Result == "loop_stopped" {
			if o.Rule != "teams-to-wa" || o.Hops != 3 {
				t.Fatalf("stopped %+v", o)
			}
			break
		}
		if o.Result != "accepted" {
			t.Fatalf("outcome %+v", o)
		}
		m := h.message(o.MessageID)
		if m.Hops != o.Hops || m.Metadata["hops"] != strconv.Itoa(o.Hops) || m.Metadata["cause"] == "" {
			t.Fatalf("stored message hops %d metadata %v", m.Hops, m.Metadata)
		}
		hops = append(hops, o.Hops)
		if len(hops) > 5 {
			t.Fatalf("the loop does not stop: hops %v", hops)
		}
	}
	if len(hops) != 3 || hops[0] != 1 || hops[2] != 3 {
		t.Fatalf("forwards with hops %v, want 1 2 3 then a stop", hops)
	}
}

// TestAutomationHookStatusWebhookConsent: POST /v1/hooks/order-shipped sends the named template to
// the list; the send fails on the channel, and the FAILED status starts the status rule, which
// posts a signed webhook and tags the contact; a keyword rule opts a subject out through the
// consent registry, and a send to it is then rejected.
func TestAutomationHookStatusWebhookConsent(t *testing.T) {
	secret := delivery.NewSecret()
	posted := make(chan *http.Request, 10)
	bodies := make(chan []byte, 10)
	ops := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		posted <- r
		bodies <- b
	}))
	defer ops.Close()
	env := func(name string) (string, bool) { return secret, name == "OPS_SECRET" }
	h := startAutomationsWith(t, strings.Replace(moreYAML, "HOOKURL", ops.URL+"/hook", 1), env)
	ctx := context.Background()

	key, err := os.ReadFile(filepath.Join(filepath.Dir(h.path), "demo.apikey"))
	if err != nil {
		t.Fatal(err)
	}
	call := func(name, idem string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+h.s.Addr()+"/v1/hooks/"+name, strings.NewReader(`{"order_id":"A-7"}`))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
		req.Header.Set("Idempotency-Key", idem)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if status, body := call("unknown", "k0"); status != http.StatusNotFound || body["error"].(map[string]any)["code"] != gateway.ENotFound {
		t.Fatalf("unknown hook: %d %v", status, body)
	}
	status, body := call("order-shipped", "k1")
	if status != http.StatusAccepted {
		t.Fatalf("hook: %d %v", status, body)
	}
	sent := h.outcomeOf("shipped")
	if sent.Result != "accepted" || sent.Text != "Order A-7 has shipped" || sent.Cause != body["event_id"] {
		t.Fatalf("hook send %+v (event %v)", sent, body["event_id"])
	}
	if status, again := call("order-shipped", "k1"); status != http.StatusAccepted || again["event_id"] != body["event_id"] {
		t.Fatalf("repeated hook: %d %v", status, again)
	}
	if o := h.outcomeOf("shipped"); o.Result != "duplicate" {
		t.Fatalf("repeated hook acted: %+v", o)
	}

	// The channel fails the send; the FAILED status starts the status rule.
	wh := h.outcomeOf("failures")
	if wh.Kind != "webhook" || wh.Result != "accepted" {
		t.Fatalf("webhook outcome %+v", wh)
	}
	r, b := <-posted, <-bodies
	if r.Header.Get("webhook-id") != wh.IdempotencyKey || r.Header.Get("webhook-signature") == "" {
		t.Fatalf("webhook headers %v", r.Header)
	}
	if !strings.Contains(string(b), `"status":"failed"`) || !strings.Contains(string(b), sent.MessageID) || strings.Contains(string(b), "4915100000001") {
		t.Fatalf("webhook body %s", b)
	}
	if tg := h.outcomeOf("failures"); tg.Kind != "tag" || tg.Result != "accepted" {
		t.Fatalf("tag outcome %+v", tg)
	}
	failing, _ := gateway.ParseAddress(gateway.WhatsApp, "+4915100000001")
	if tags, err := h.s.db.Tags(ctx, "demo", failing); err != nil || strings.Join(tags, ",") != "unreachable" {
		t.Fatalf("tags %v %v", tags, err)
	}

	// set_consent through the registry the API uses: evidence from the automation, then a send is refused.
	h.inject("NOMORE")
	if o := h.outcomeOf("nomore"); o.Result != "accepted" {
		t.Fatalf("set_consent %+v", o)
	}
	sender, _ := gateway.ParseAddress(gateway.WhatsApp, "+4915112345678")
	c, err := h.s.consentRegistry().Get(ctx, "demo", gateway.WhatsApp, sender)
	if err != nil || len(c.Current) != 1 || c.Current[0].State != store.ConsentOptedOut || c.Current[0].Source != store.SourceAutomation {
		t.Fatalf("consent %+v %v", c, err)
	}
	_, _, _, err = h.s.intake.Accept(ctx, store.NewMessage{Message: &gateway.Message{
		ID: gateway.NewMessageID(), Tenant: "demo", Direction: gateway.Outbound, Channel: gateway.WhatsApp, Account: "sales",
		Peer: sender, Content: gateway.Content{Text: "hi"}, CreatedAt: time.Now(),
	}})
	if gateway.ErrorCode(err) != gateway.ERecipientOptedOut {
		t.Fatalf("send after the automation's opt-out: %v", err)
	}
}
