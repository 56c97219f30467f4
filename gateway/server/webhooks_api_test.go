package server_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

const apiWebhooks = `
data_dir: %s
server: {listen: "127.0.0.1:0"}
tenants:
  - id: demo
    webhooks_allow_private: true
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts: [{name: sales, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
  - id: other
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts: [{name: support, driver: sandbox}]
`

type webhookOut struct {
	ID, URL, Status, Source, Secret string
	Events                          []string
	AllowPrivate                    bool `json:"allow_private"`
	Secrets                         []struct {
		CreatedAt time.Time  `json:"created_at"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
}

type errOut struct {
	Error struct{ Code, Field, Message string }
}

// TestWebhooksThroughTheAPI creates an endpoint through the API on a running gateway: it gets the
// message's statuses signed with the secret returned once, without a restart; the delivery log
// lists every attempt; another tenant sees none of it; the secret is nowhere in the data dir.
func TestWebhooksThroughTheAPI(t *testing.T) {
	dir := t.TempDir()
	type hook struct {
		id, sig, ts string
		body        []byte
	}
	hooks := make(chan hook, 32)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hooks <- hook{r.Header.Get("webhook-id"), r.Header.Get("webhook-signature"), r.Header.Get("webhook-timestamp"), body}
	}))
	defer recv.Close()
	g := startWithConfig(t, dir, fmt.Sprintf(apiWebhooks, dir))

	var created webhookOut
	if code := g.do(http.MethodPost, "/v1/webhooks", "demo", map[string]any{
		"url": recv.URL + "/hook", "events": []string{"message.status"}, "allow_private": true,
	}, &created); code != http.StatusCreated || !strings.HasPrefix(created.Secret, "whsec_") || created.Status != "enabled" || created.Source != "api" {
		t.Fatalf("create: HTTP %d %+v", code, created)
	}

	sent := time.Now()
	id := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "hi"})
	var statuses, firstIDs []string
	for len(statuses) == 0 || statuses[len(statuses)-1] != "read" {
		select {
		case h := <-hooks:
			if !signedWith(created.Secret, h.id, h.ts, h.body, h.sig) {
				t.Fatalf("a webhook not signed with the secret returned at creation: %s", h.sig)
			}
			var p struct {
				Type string
				Data gateway.StatusEvent
			}
			json.Unmarshal(h.body, &p)
			if p.Data.MessageID != id {
				t.Fatalf("hook %s", h.body)
			}
			statuses = append(statuses, string(p.Data.Status))
			firstIDs = append(firstIDs, h.id)
		case <-time.After(30 * time.Second):
			t.Fatalf("webhooks so far: %v", statuses)
		}
	}

	var list struct{ Webhooks []webhookOut }
	if code := g.do(http.MethodGet, "/v1/webhooks", "demo", nil, &list); code != http.StatusOK || len(list.Webhooks) != 1 ||
		list.Webhooks[0].ID != created.ID || list.Webhooks[0].Secret != "" || len(list.Webhooks[0].Secrets) != 1 {
		t.Fatalf("list: HTTP %d %+v", code, list)
	}
	var deliveries struct {
		Deliveries []map[string]any
		NextCursor *string `json:"next_cursor"`
	}
	// An attempt is logged once the receiver has answered: poll the log with a deadline.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code := g.do(http.MethodGet, "/v1/webhooks/"+created.ID+"/deliveries", "demo", nil, &deliveries); code != http.StatusOK {
			t.Fatalf("deliveries: HTTP %d", code)
		}
		if len(deliveries.Deliveries) >= len(statuses) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries %+v for %d webhooks", deliveries, len(statuses))
		}
	}
	d := deliveries.Deliveries[0]
	for _, k := range []string{"id", "event", "event_id", "message_id", "attempt", "status_code", "latency_ms", "error", "at"} {
		if _, ok := d[k]; !ok {
			t.Errorf("a delivery without %q: %v", k, d)
		}
	}
	if d["message_id"] != id || d["status_code"] != float64(200) || d["event"] != "message.status" {
		t.Errorf("delivery %v", d)
	}

	// A replay since before the send re-delivers its statuses with their first webhook-ids.
	var replay struct{ Replaying bool }
	if code := g.do(http.MethodPost, "/v1/webhooks/"+created.ID+"/replay?since="+sent.Add(-time.Second).UTC().Format(time.RFC3339), "demo", nil, &replay); code != http.StatusAccepted || !replay.Replaying {
		t.Fatalf("replay: HTTP %d", code)
	}
	for i := range firstIDs {
		select {
		case h := <-hooks:
			if h.id != firstIDs[i] {
				t.Fatalf("replayed webhook-id %s, first delivered as %s", h.id, firstIDs[i])
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the replay delivered nothing")
		}
	}
	var e errOut
	if code := g.do(http.MethodPost, "/v1/webhooks/"+created.ID+"/replay?since=yesterday", "demo", nil, &e); code != http.StatusBadRequest || e.Error.Field != "since" {
		t.Fatalf("replay with a bad since: HTTP %d %+v", code, e)
	}

	var rotated webhookOut
	if code := g.do(http.MethodPost, "/v1/webhooks/"+created.ID+"/secrets", "demo", nil, &rotated); code != http.StatusOK ||
		!strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == created.Secret || len(rotated.Secrets) != 2 || rotated.Secrets[1].ExpiresAt == nil {
		t.Fatalf("rotate: HTTP %d %+v", code, rotated)
	}

	// Another tenant: not found, whatever it tries.
	for _, tt := range []struct{ method, path string }{
		{http.MethodGet, "/v1/webhooks/" + created.ID},
		{http.MethodDelete, "/v1/webhooks/" + created.ID},
		{http.MethodPost, "/v1/webhooks/" + created.ID + "/secrets"},
		{http.MethodGet, "/v1/webhooks/" + created.ID + "/deliveries"},
		{http.MethodGet, "/v1/webhooks/wh_nope"},
		{http.MethodPost, "/v1/webhooks/" + created.ID + "/replay?since=2026-01-01T00:00:00Z"},
	} {
		var e errOut
		if code := g.do(tt.method, tt.path, "other", nil, &e); code != http.StatusNotFound || e.Error.Code != gateway.ENotFound {
			t.Errorf("other tenant %s %s: HTTP %d %+v", tt.method, tt.path, code, e)
		}
	}
	var otherList struct{ Webhooks []webhookOut }
	if g.do(http.MethodGet, "/v1/webhooks", "other", nil, &otherList); len(otherList.Webhooks) != 0 {
		t.Errorf("other tenant lists %+v", otherList)
	}

	if code := g.do(http.MethodDelete, "/v1/webhooks/"+created.ID, "demo", nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: HTTP %d", code)
	}
	e = errOut{}
	if code := g.do(http.MethodGet, "/v1/webhooks/"+created.ID, "demo", nil, &e); code != http.StatusNotFound || e.Error.Code != gateway.ENotFound {
		t.Fatalf("after delete: HTTP %d %+v", code, e)
	}
	g.stop()
	requireNoPlaintext(t, dir, created.Secret, strings.TrimPrefix(created.Secret, "whsec_"), rotated.Secret, strings.TrimPrefix(rotated.Secret, "whsec_"))
}

// TestWebhookCreationRefusals: bad input gets a clear error with a stable code and field, and
// internal targets are refused at creation (by address and by a name that resolves there).
func TestWebhookCreationRefusals(t *testing.T) {
	dir := t.TempDir()
	g := startWithConfig(t, dir, fmt.Sprintf(apiWebhooks, dir))
	for _, tt := range []struct {
		name, tenant string
		body         map[string]any
		status       int
		code, field  string
	}{
		{"loopback", "demo", map[string]any{"url": "http://127.0.0.1:9/hook", "events": []string{"message.status"}}, 403, gateway.EForbidden, "url"},
		{"metadata service", "demo", map[string]any{"url": "http://169.254.169.254/latest", "events": []string{"message.status"}}, 403, gateway.EForbidden, "url"},
		{"name resolving to loopback", "demo", map[string]any{"url": "http://localhost:9/hook", "events": []string{"message.status"}}, 403, gateway.EForbidden, "url"},
		{"private not permitted", "other", map[string]any{"url": "http://127.0.0.1:9/hook", "events": []string{"message.status"}, "allow_private": true}, 403, gateway.EForbidden, "allow_private"},
		{"not http", "demo", map[string]any{"url": "ftp://example.com/hook", "events": []string{"message.status"}}, 400, gateway.EInvalidField, "url"},
		{"no url", "demo", map[string]any{"events": []string{"message.status"}}, 400, gateway.EMissingField, "url"},
		{"unknown event", "demo", map[string]any{"url": "https://93.184.215.14/hook", "events": []string{"message.nope"}}, 400, gateway.EInvalidField, "events"},
		{"no events", "demo", map[string]any{"url": "https://93.184.215.14/hook"}, 400, gateway.EMissingField, "events"},
		{"unknown field", "demo", map[string]any{"url": "https://93.184.215.14/hook", "events": []string{"message.status"}, "secret": "x"}, 400, gateway.EUnknownField, "secret"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var e errOut
			if code := g.do(http.MethodPost, "/v1/webhooks", tt.tenant, tt.body, &e); code != tt.status || e.Error.Code != tt.code || e.Error.Field != tt.field {
				t.Fatalf("HTTP %d %+v, want %d %s on %s", code, e, tt.status, tt.code, tt.field)
			}
		})
	}
	var list struct{ Webhooks []webhookOut }
	if g.do(http.MethodGet, "/v1/webhooks", "demo", nil, &list); len(list.Webhooks) != 0 {
		t.Fatalf("a refused webhook was stored: %+v", list)
	}
}

// signedWith verifies a Standard Webhooks signature header, independently of pipeline/delivery.
func signedWith(secret, id, ts string, body []byte, header string) bool {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	return strings.Contains(" "+header+" ", " v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil))+" ")
}

// TestConsentChangedReachesWebhooks: a consent change through the API is pushed as
// consent.changed to an endpoint subscribed to it, with the subject masked, never in full.
func TestConsentChangedReachesWebhooks(t *testing.T) {
	dir := t.TempDir()
	bodies := make(chan []byte, 8)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		bodies <- body
	}))
	defer recv.Close()
	g := startWithConfig(t, dir, fmt.Sprintf(apiWebhooks, dir))
	var created webhookOut
	if code := g.do(http.MethodPost, "/v1/webhooks", "demo", map[string]any{
		"url": recv.URL, "events": []string{"consent.changed"}, "allow_private": true,
	}, &created); code != http.StatusCreated {
		t.Fatalf("create: HTTP %d", code)
	}
	const number = "+4915112349876"
	if code := g.do(http.MethodPut, "/v1/consent/whatsapp/%2B4915112349876", "demo", map[string]any{"state": "opted_out"}, nil); code != http.StatusOK {
		t.Fatalf("consent: HTTP %d", code)
	}
	select {
	case body := <-bodies:
		var p struct {
			Type string
			Data gateway.ConsentChangedData
		}
		if err := json.Unmarshal(body, &p); err != nil || p.Type != "consent.changed" || p.Data.State != "opted_out" ||
			p.Data.Channel != gateway.WhatsApp || p.Data.Masked == "" || !strings.HasPrefix(p.Data.Subject, "s_") {
			t.Fatalf("consent.changed %s: %v", body, err)
		}
		if strings.Contains(string(body), strings.TrimPrefix(number, "+")) {
			t.Fatalf("the full number is in the event: %s", body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no consent.changed webhook")
	}
}
