package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/store"
)

// Minimal collaborators, so every optional route is registered and the document's example
// requests can run.
type exampleConsent struct{ api.ConsentRegistry }

func (exampleConsent) Record(context.Context, store.ConsentChange) (bool, error) { return true, nil }
func (exampleConsent) Get(context.Context, string, gateway.Channel, gateway.Address) (store.Consent, error) {
	return store.Consent{Subject: "0123456789abcdef"}, nil
}

type examplePrivacy struct{ api.Privacy }

func (examplePrivacy) RequestErasure(_ context.Context, tenant string, _ store.Actor, _ gateway.Address) (store.Erasure, error) {
	return store.Erasure{ID: "era_1", Tenant: tenant}, nil
}

type exampleWebhooks struct{ api.WebhookRegistry }

func (exampleWebhooks) CreateWebhook(_ context.Context, tenant string, w api.NewWebhook) (api.WebhookInfo, error) {
	return api.WebhookInfo{Webhook: store.Webhook{ID: "wh_1", Tenant: tenant, URL: w.URL, Events: w.Events}, Secret: "whsec_example"}, nil
}

func allRoutes(_ *api.Config, d *api.Deps) {
	d.Webhooks = exampleWebhooks{}
	d.Consent = exampleConsent{}
	d.Privacy = examplePrivacy{}
	d.Media = &fakeMedia{files: map[string]gateway.MediaFile{}, data: map[string][]byte{}}
	d.Events = &fakeEvents{tenants: make(chan string, 1), from: make(chan api.EventCursor, 1)}
	d.Metrics = http.NotFoundHandler()
	graph := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
	d.Channel = map[string]http.Handler{"POST /v1/channels/teams/notifications": graph, "POST /v1/channels/teams/lifecycle": graph}
	d.Hooks = exampleHooks{}
	d.Accounts = fakeAccounts{}
	d.Linker = newFakeLinker()
}

type exampleHooks struct{}

func (exampleHooks) HandleHook(context.Context, string, string, string, map[string]any, time.Time) error {
	return nil
}

type openAPIDoc struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas   map[string]json.RawMessage `json:"schemas"`
		Responses map[string]json.RawMessage `json:"responses"`
	} `json:"components"`
}

type operation struct {
	OperationID string                     `json:"operationId"`
	Responses   map[string]json.RawMessage `json:"responses"`
	RequestBody *struct {
		Content map[string]struct {
			Example json.RawMessage `json:"example"`
		} `json:"content"`
	} `json:"requestBody"`
}

func TestOpenAPI(t *testing.T) {
	var doc openAPIDoc
	if err := json.Unmarshal(api.OpenAPIDocument(), &doc); err != nil {
		t.Fatalf("the document is not JSON: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}

	// Every registered route is documented, and every documented operation is registered.
	deps := api.Deps{Intake: noopIntake{}, Messages: newFakeMessages(), Keys: &fakeKeys{}, Directory: fakeDirectory{}, Sandbox: &fakeSandbox{}}
	allRoutes(&api.Config{}, &deps)
	registered := api.New(api.Config{}, deps).Routes()
	var documented []string
	ops := map[string]operation{}
	ids := map[string]bool{}
	for path, methods := range doc.Paths {
		for m, raw := range methods {
			if m == "parameters" {
				continue
			}
			key := strings.ToUpper(m) + " " + path
			documented = append(documented, key)
			var op operation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if op.OperationID == "" || ids[op.OperationID] || len(op.Responses) == 0 {
				t.Errorf("%s: needs a unique operationId and responses", key)
			}
			ids[op.OperationID] = true
			ops[key] = op
		}
	}
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %q is not documented in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("openapi.json documents %q, which is not a route", d)
		}
	}

	// Every $ref points at something.
	raw := string(api.OpenAPIDocument())
	for _, part := range strings.Split(raw, `"$ref": "`)[1:] {
		ref := part[:strings.IndexByte(part, '"')]
		name, ok := strings.CutPrefix(ref, "#/components/schemas/")
		if ok && doc.Components.Schemas[name] == nil {
			t.Errorf("dangling $ref %s", ref)
		}
		if name, ok := strings.CutPrefix(ref, "#/components/responses/"); ok && doc.Components.Responses[name] == nil {
			t.Errorf("dangling $ref %s", ref)
		}
		if !strings.HasPrefix(ref, "#/components/schemas/") && !strings.HasPrefix(ref, "#/components/responses/") {
			t.Errorf("unexpected $ref %s", ref)
		}
	}

	// The example requests succeed against a test server.
	e := newEnv(t, allRoutes)
	params := strings.NewReplacer("{channel}", "whatsapp", "{subject}", "%2B4915112345678", "{id}", "msg_1", "{account}", "sales", "{name}", "order-shipped")
	examples := 0
	for key, op := range ops {
		if op.RequestBody == nil || len(op.RequestBody.Content["application/json"].Example) == 0 {
			continue
		}
		if strings.Contains(string(op.Responses["200"]), "text/event-stream") {
			continue // a stream: the gateway/server test runs it against the whole gateway
		}
		examples++
		method, path, _ := strings.Cut(key, " ")
		r := e.do(req{method: method, path: params.Replace(path), secret: secretAcme, body: string(op.RequestBody.Content["application/json"].Example)})
		if r.status/100 != 2 {
			t.Errorf("example of %s: HTTP %d %s", key, r.status, r.raw)
		}
		if _, ok := op.Responses[strconv.Itoa(r.status)]; !ok {
			t.Errorf("example of %s answered %d, which the document does not list", key, r.status)
		}
	}
	if examples < 3 {
		t.Errorf("only %d example requests", examples)
	}

	// And the document is served.
	r := e.do(req{method: http.MethodGet, path: "/v1/openapi.json"})
	if r.status != http.StatusOK || r.body["openapi"] != "3.1.0" {
		t.Fatalf("GET /v1/openapi.json: %d", r.status)
	}
}
