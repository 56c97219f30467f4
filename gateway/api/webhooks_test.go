package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/store"
)

// oneWebhook is a registry holding one disabled endpoint of acme.
type oneWebhook struct {
	api.WebhookRegistry
	w store.Webhook
}

func (o *oneWebhook) GetWebhook(_ context.Context, tenant, id string) (api.WebhookInfo, error) {
	if tenant != o.w.Tenant || id != o.w.ID {
		return api.WebhookInfo{}, gateway.Errorf(gateway.ENotFound, "no webhook %s", id)
	}
	return api.WebhookInfo{Webhook: o.w}, nil
}

func (o *oneWebhook) EnableWebhook(ctx context.Context, tenant, id string) (api.WebhookInfo, error) {
	if _, err := o.GetWebhook(ctx, tenant, id); err != nil {
		return api.WebhookInfo{}, err
	}
	o.w.DisabledAt, o.w.DisabledReason = time.Time{}, ""
	return api.WebhookInfo{Webhook: o.w}, nil
}

func (o *oneWebhook) WebhookDeliveries(ctx context.Context, tenant, id, cursor string) ([]store.WebhookAttempt, string, error) {
	if _, err := o.GetWebhook(ctx, tenant, id); err != nil {
		return nil, "", err
	}
	if cursor == "" {
		return []store.WebhookAttempt{{Seq: 9, Event: "message.status", EventID: "evt_status_4", MessageID: "msg_1", Attempt: 2,
			StatusCode: 502, LatencyMS: 31, Error: "http_5xx", At: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)}}, "9", nil
	}
	return nil, "", nil
}

// TestWebhookStatusAndDeliveries: a disabled endpoint shows as disabled with its reason until
// enabled; the delivery log has the documented shape and pages; another tenant gets not_found.
func TestWebhookStatusAndDeliveries(t *testing.T) {
	reg := &oneWebhook{w: store.Webhook{ID: "wh_1", Tenant: "acme", URL: "https://crm.example.com/hook", Events: []string{"message.status"},
		DisabledAt: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC), DisabledReason: "persistent_failure"}}
	e := newEnv(t, func(_ *api.Config, d *api.Deps) { d.Webhooks = reg })

	r := e.do(req{method: http.MethodGet, path: "/v1/webhooks/wh_1", secret: secretAcme})
	if r.status != http.StatusOK || r.body["status"] != "disabled" || r.body["disabled_reason"] != "persistent_failure" || r.body["secret"] != nil {
		t.Fatalf("GET: %d %s", r.status, r.raw)
	}
	if r := e.do(req{method: http.MethodGet, path: "/v1/webhooks/wh_1", secret: secretBeta}); r.status != http.StatusNotFound || r.errorField("code") != gateway.ENotFound {
		t.Fatalf("another tenant: %d %s", r.status, r.raw)
	}
	r = e.do(req{method: http.MethodPost, path: "/v1/webhooks/wh_1/enable", secret: secretAcme})
	if r.status != http.StatusOK || r.body["status"] != "enabled" || r.body["disabled_at"] != nil {
		t.Fatalf("enable: %d %s", r.status, r.raw)
	}

	r = e.do(req{method: http.MethodGet, path: "/v1/webhooks/wh_1/deliveries", secret: secretAcme})
	list, _ := r.body["deliveries"].([]any)
	if r.status != http.StatusOK || len(list) != 1 || r.body["next_cursor"] != "9" {
		t.Fatalf("deliveries: %d %s", r.status, r.raw)
	}
	d, _ := list[0].(map[string]any)
	want := map[string]any{"id": "9", "event": "message.status", "event_id": "evt_status_4", "message_id": "msg_1", "attempt": float64(2),
		"status_code": float64(502), "latency_ms": float64(31), "error": "http_5xx", "at": "2026-11-22T09:00:00Z"}
	if len(d) != len(want) {
		t.Errorf("delivery fields %v, want exactly %v", d, want)
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("delivery %s = %v, want %v", k, d[k], v)
		}
	}
	r = e.do(req{method: http.MethodGet, path: "/v1/webhooks/wh_1/deliveries?cursor=9", secret: secretAcme})
	if v, present := r.body["next_cursor"]; r.status != http.StatusOK || !present || v != nil {
		t.Fatalf("last page: %d %s", r.status, r.raw)
	}
	if r := e.do(req{method: http.MethodGet, path: "/v1/webhooks/wh_1/deliveries?page=2", secret: secretAcme}); r.status != http.StatusBadRequest || r.errorField("code") != gateway.EUnknownField {
		t.Fatalf("unknown query parameter: %d %s", r.status, r.raw)
	}
}
