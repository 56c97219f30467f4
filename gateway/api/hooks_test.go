package api_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
)

// fakeHooks knows the hook "order-shipped" of tenant acme and records each call.
type fakeHooks struct {
	mu    sync.Mutex
	calls []hookCall
}

type hookCall struct {
	tenant, name, id string
	body             map[string]any
}

func (f *fakeHooks) HandleHook(_ context.Context, tenant, name, id string, body map[string]any, _ time.Time) error {
	if tenant != "acme" || name != "order-shipped" {
		return gateway.FieldErrorf(gateway.ENotFound, "name", "no automation of this tenant listens to hook %q", name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, hookCall{tenant, name, id, body})
	return nil
}

func TestHooks(t *testing.T) {
	hooks := &fakeHooks{}
	e := newEnv(t, func(_ *api.Config, d *api.Deps) { d.Hooks = hooks })
	call := func(name, body, key, secret string) resp {
		h := map[string]string{}
		if key != "" {
			h["Idempotency-Key"] = key
		}
		return e.do(req{method: http.MethodPost, path: "/v1/hooks/" + name, secret: secret, body: body, header: h})
	}

	first := call("order-shipped", `{"order_id":"A-1","total":129.5}`, "k1", secretAcme)
	if first.status != http.StatusAccepted || !strings.HasPrefix(first.body["event_id"].(string), "hook_") || first.body["hook"] != "order-shipped" {
		t.Fatalf("first call: %d %s", first.status, first.raw)
	}
	again := call("order-shipped", `{"order_id":"A-1","total":129.5}`, "k1", secretAcme)
	other := call("order-shipped", `{"order_id":"A-2"}`, "", secretAcme)
	if again.body["event_id"] != first.body["event_id"] || other.body["event_id"] == first.body["event_id"] {
		t.Fatalf("event ids %v %v %v: the same key is the same event, no key a new one", first.body["event_id"], again.body["event_id"], other.body["event_id"])
	}
	if c := hooks.calls[0]; c.tenant != "acme" || c.body["order_id"] != "A-1" || c.body["total"] != 129.5 || c.id != first.body["event_id"] {
		t.Fatalf("call %+v", c)
	}

	for _, tt := range []struct {
		name, hook, body, secret string
		status                   int
		code                     string
	}{
		{"unknown hook", "nothing", `{}`, secretAcme, http.StatusNotFound, gateway.ENotFound},
		{"another tenant's hook", "order-shipped", `{}`, secretBeta, http.StatusNotFound, gateway.ENotFound},
		{"no key", "order-shipped", `{}`, "", http.StatusUnauthorized, ""},
		{"not an object", "order-shipped", `[1,2]`, secretAcme, http.StatusBadRequest, gateway.EInvalidJSON},
		{"null", "order-shipped", `null`, secretAcme, http.StatusBadRequest, gateway.EInvalidJSON},
		{"malformed", "order-shipped", `{"a":`, secretAcme, http.StatusBadRequest, gateway.EInvalidJSON},
		{"too large", "order-shipped", `{"a":"` + strings.Repeat("x", testMaxBody) + `"}`, secretAcme, http.StatusRequestEntityTooLarge, gateway.EBodyTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := call(tt.hook, tt.body, "", tt.secret)
			if r.status != tt.status || (tt.code != "" && r.errorField("code") != tt.code) {
				t.Fatalf("HTTP %d %s, want %d %s", r.status, r.raw, tt.status, tt.code)
			}
		})
	}
	if len(hooks.calls) != 3 {
		t.Fatalf("%d calls reached the hooks, want 3", len(hooks.calls))
	}
}
