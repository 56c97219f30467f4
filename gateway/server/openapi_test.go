package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway/server"
)

// openAPIGateway has what the document's examples name: the sandbox accounts whatsapp/sales and
// teams/ops, the hook order-shipped, and webhooks allowed on loopback (the test's receiver).
const openAPIGateway = `
data_dir: %s
server: {listen: "127.0.0.1:0"}
tenants:
  - id: demo
    webhooks_allow_private: true
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts: [{name: sales, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
      teams:
        accounts: [{name: ops, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
    lists: {customers: ["+4915112345678"]}
    templates: {shipped: "Order {{.Hook.order_id}} has shipped"}
    automations:
      - name: shipped
        when: {hook: {name: order-shipped}}
        do: [{send: {channel: whatsapp, to_list: customers, template_name: shipped}}]
`

// notExercised are the documented operations this test cannot run against the gateway, each with
// why. Everything else in the document is run.
var notExercised = map[string]string{
	"POST /v1/channels/teams/notifications": teamsRoutes,
	"POST /v1/channels/teams/lifecycle":     teamsRoutes,
}

const teamsRoutes = "registered only by cmd/switchboard with the Graph driver (adapters/teams: msgraph is too heavy for this package); TestTeamsThroughTheBinary runs the documented validation handshake on both; a notification body needs a live subscription's clientState"

type specParameter struct {
	Name    string          `json:"name"`
	In      string          `json:"in"`
	Example json.RawMessage `json:"example"`
	Schema  struct {
		Example json.RawMessage `json:"example"`
	} `json:"schema"`
}

type specMedia struct {
	Schema   json.RawMessage `json:"schema"`
	Example  json.RawMessage `json:"example"`
	Examples map[string]struct {
		Value json.RawMessage `json:"value"`
	} `json:"examples"` // more request bodies, each run too
}

type specOperation struct {
	method, path string
	OperationID  string          `json:"operationId"`
	Security     *[]any          `json:"security"` // [] on public routes
	Parameters   []specParameter `json:"parameters"`
	RequestBody  *struct {
		Required bool                 `json:"required"`
		Content  map[string]specMedia `json:"content"`
	} `json:"requestBody"`
	Responses map[string]specResponse `json:"responses"`
}

type specResponse struct {
	Ref     string               `json:"$ref"`
	Content map[string]specMedia `json:"content"`
	Headers map[string]struct {
		Required bool `json:"required"`
	} `json:"headers"`
}

func (op specOperation) key() string { return op.method + " " + op.path }

func (op specOperation) public() bool { return op.Security != nil && len(*op.Security) == 0 }

// order runs each path's operations as create, change, read; deletions after all of them; and the
// erasure of the examples' subject last: the objects later operations need are still there.
func (op specOperation) order() string {
	phase := "0"
	switch {
	case op.key() == "POST /v1/erasures":
		phase = "2"
	case op.method == http.MethodDelete:
		phase = "1"
	}
	return phase + op.path + " " + strconv.Itoa(strings.Index("POST PUT GET", op.method))
}

type openAPISpec struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Webhooks   map[string]map[string]json.RawMessage `json:"webhooks"`
	Components struct {
		Schemas   map[string]json.RawMessage `json:"schemas"`
		Responses map[string]specResponse    `json:"responses"`
	} `json:"components"`
}

// specDoc is what the checks need of the document besides the operation at hand.
type specDoc struct {
	schemas   schemaSet
	responses map[string]specResponse
}

// answer checks a JSON answer of op with status code against what the document says of it.
func (d specDoc) answer(op specOperation, code int, body []byte) []string {
	resp, ok := op.Responses[strconv.Itoa(code)]
	if !ok {
		return []string{fmt.Sprintf("answered %d, which is not documented", code)}
	}
	if name, ok := strings.CutPrefix(resp.Ref, "#/components/responses/"); ok {
		resp = d.responses[name]
	}
	media, ok := resp.Content["application/json"]
	if !ok {
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return []string{fmt.Sprintf("answered %d with %.200q, not JSON", code, body)}
	}
	problems := d.schemas.check(media.Schema, v, "body")
	for i := range problems {
		problems[i] = fmt.Sprintf("%d: %s (answer %.300s)", code, problems[i], body)
	}
	return problems
}

// TestOpenAPIAgainstTheGateway fetches /v1/openapi.json from a running dev gateway and runs every
// documented operation's example request against it: each must reach its own route (the access
// log names it) and answer a documented success status, with the documented content type and a
// JSON body that fits the documented schema. Without a key, and with generic bad input, each must
// answer a documented status; every JSON example must fit its schema.
func TestOpenAPIAgainstTheGateway(t *testing.T) {
	g := startGatewayWith(t, t.TempDir(), openAPIGateway, func(o *server.Options) {
		o.SandboxLinkStep = time.Millisecond
		o.WebhookResolver = exampleHosts{}
	})
	hooks := &deliveries{}
	receiver := httptest.NewServer(hooks)
	t.Cleanup(receiver.Close)

	resp, err := http.Get(g.url + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var spec openAPISpec
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &spec) != nil || spec.OpenAPI != "3.1.0" {
		t.Fatalf("GET /v1/openapi.json: %d %.200s", resp.StatusCode, raw)
	}
	var ops []specOperation
	for path, methods := range spec.Paths {
		for m, rawOp := range methods {
			op := specOperation{method: strings.ToUpper(m), path: path}
			if err := json.Unmarshal(rawOp, &op); err != nil {
				t.Fatalf("%s: %v", op.key(), err)
			}
			ops = append(ops, op)
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].order() < ops[j].order() })
	for key := range notExercised {
		if !slices.ContainsFunc(ops, func(op specOperation) bool { return op.key() == key }) {
			t.Errorf("%s is listed as not exercised but is not documented", key)
		}
	}

	// The objects the path parameters without a fixed example name, by the path they are under.
	created := map[string]string{
		"/v1/messages/{id}": g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "openapi"}),
		"/v1/media/{id}":    g.created("/v1/media?filename=a.pdf", "application/pdf", "%PDF-1.7", http.StatusCreated),
		"/v1/webhooks/{id}": g.created("/v1/webhooks", "application/json", `{"url":"`+receiver.URL+`","events":["message.status","message.inbound","consent.changed","account.state","webhook.disabled"],"allow_private":true}`, http.StatusCreated),
		"/v1/erasures/{id}": g.created("/v1/erasures", "application/json", `{"subject":"+4915199990000"}`, http.StatusAccepted),
	}

	doc := specDoc{schemas: schemaSet(spec.Components.Schemas), responses: spec.Components.Responses}
	t.Run("documented errors", func(t *testing.T) { g.documentedErrors(t, doc, ops, created) })
	for name, r := range doc.responses {
		m := r.Content["application/json"]
		if len(m.Example) == 0 {
			t.Errorf("components/responses/%s has no example", name)
			continue
		}
		for _, problem := range doc.schemas.check(m.Schema, exampleValue(t, m), "example") {
			t.Errorf("components/responses/%s: %s", name, problem)
		}
	}
	for _, op := range ops {
		checkExamples(t, doc.schemas, op)
		if why, ok := notExercised[op.key()]; ok {
			t.Logf("%s not exercised: %s", op.key(), why)
			continue
		}
		t.Run(op.OperationID, func(t *testing.T) {
			if !op.public() {
				req := g.exampleRequest(t, op, created)
				req.Header.Del("Authorization")
				code, body := readStatus(t, req)
				if code != http.StatusUnauthorized {
					t.Errorf("without an API key: %d", code)
				}
				for _, problem := range doc.answer(op, code, body) {
					t.Errorf("without an API key: %s", problem)
				}
			}
			g.probeBadInput(t, doc, op, created)
			g.namedExamples(t, doc, op, created)
			req := g.exampleRequest(t, op, created)
			rec, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readAnswer(rec)
			g.eventually(op.key()+" in the access log", func() bool { return g.accessLogged(op, rec.StatusCode) })

			want, ok := op.Responses[strconv.Itoa(rec.StatusCode)]
			if !ok || rec.StatusCode/100 != 2 {
				t.Fatalf("example answered %d, want a documented success: %.300s", rec.StatusCode, body)
			}
			for name, h := range want.Headers {
				if h.Required && rec.Header.Get(name) == "" {
					t.Errorf("the answer lacks the documented header %s", name)
				}
			}
			if want.Ref != "" || len(want.Content) == 0 {
				if len(body) > 0 {
					t.Errorf("%d documents no body, got %.200s", rec.StatusCode, body)
				}
				return
			}
			ct, _, _ := mime.ParseMediaType(rec.Header.Get("Content-Type"))
			media, ok := want.Content[ct]
			if !ok {
				t.Fatalf("answered %s, documented %v", ct, slices.Collect(maps.Keys(want.Content)))
			}
			if ct == "text/event-stream" && regexp.MustCompile(`(?m)^event: (error|timeout)$`).Match(body) {
				t.Fatalf("the stream ended in failure: %s", body)
			}
			if ct != "application/json" {
				return
			}
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatalf("not JSON: %v %.200s", err, body)
			}
			if report, ok := v.(map[string]any); ok {
				if rows, _ := report["rejected"].([]any); len(rows) > 0 {
					t.Errorf("the example's rows were rejected: %s", body) // 200 with nothing imported is no success
				}
			}
			for _, problem := range doc.schemas.check(media.Schema, v, "body") {
				t.Errorf("%s (answer %.300s)", problem, body)
			}
		})
	}
	// The webhook created above got the events these operations caused, as documented.
	t.Run("webhooks", func(t *testing.T) { checkWebhooks(t, doc, spec.Webhooks, hooks) })
	// The event stream carries the same events, each data the webhook's data.
	t.Run("event stream", func(t *testing.T) { g.checkEventStream(t, doc, spec.Webhooks) })
}

// checkEventStream reads GET /v1/events from the start until it has seen a message.status, a
// message.inbound and a consent.changed event (the operations above caused them), and checks
// each event's data against the data of the documented webhook of its type.
func (g *gw) checkEventStream(t *testing.T, doc specDoc, documented map[string]map[string]json.RawMessage) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.url+"/v1/events?last_event_id=0-0", nil)
	req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := map[string]bool{"message.status": true, "message.inbound": true, "consent.changed": true}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var typ string
	for len(want) > 0 && sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			typ = v
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var hook struct {
			Post struct {
				RequestBody struct {
					Content map[string]struct {
						Schema struct {
							Properties struct {
								Data json.RawMessage `json:"data"`
							} `json:"properties"`
						} `json:"schema"`
					} `json:"content"`
				} `json:"requestBody"`
			} `json:"post"`
		}
		raw, _ := json.Marshal(documented[typ])
		_ = json.Unmarshal(raw, &hook)
		schema := hook.Post.RequestBody.Content["application/json"].Schema.Properties.Data
		if len(schema) == 0 {
			t.Errorf("event %q has no documented webhook to describe its data", typ)
		}
		var v any
		_ = json.Unmarshal([]byte(data), &v)
		for _, problem := range doc.schemas.check(schema, v, typ) {
			t.Errorf("event stream: %s (data %.300s)", problem, data)
		}
		delete(want, typ)
	}
	if len(want) > 0 {
		// An inbound message of the subject POST /v1/erasures erases is not in the stream any more.
		t.Errorf("the stream ended (%v) before events of %v", sc.Err(), slices.Collect(maps.Keys(want)))
	}
}

// notExercisedWebhooks are the documented webhook events this test does not cause, with why.
var notExercisedWebhooks = map[string]string{
	"account.state":    "sandbox accounts never pause; adapters/state_test.go tests the state reports behind it",
	"webhook.disabled": "needs days of failed attempts; pipeline/delivery TestPersistentFailureDisablesTheEndpoint runs it on a fake clock",
}

// checkWebhooks checks each documented webhook event's example, waits for the receiver to get
// every event type the test causes, and checks each request it got against the document.
func checkWebhooks(t *testing.T, doc specDoc, documented map[string]map[string]json.RawMessage, hooks *deliveries) {
	events := map[string]specOperation{}
	var want []string
	for typ, item := range documented {
		op := specOperation{method: http.MethodPost, path: "webhook " + typ}
		if err := json.Unmarshal(item["post"], &op); err != nil || op.RequestBody == nil {
			t.Fatalf("webhook %s: %v", typ, err)
		}
		checkExamples(t, doc.schemas, op)
		events[typ] = op
		if _, ok := notExercisedWebhooks[typ]; !ok {
			want = append(want, typ)
		}
	}
	var got []hookRequest
	deadline := time.Now().Add(30 * time.Second)
	for ok := false; !ok; got, ok = hooks.all(want...) {
		if time.Now().After(deadline) {
			t.Fatalf("the receiver never got all of %v", want)
		}
		time.Sleep(10 * time.Millisecond) // polling the receiver, which has no event to wait on
	}
	for _, r := range got {
		var ev struct{ Type string }
		_ = json.Unmarshal(r.body, &ev)
		op, ok := events[ev.Type]
		if !ok {
			t.Errorf("the gateway sent a %q webhook, which is not documented: %s", ev.Type, r.body)
			continue
		}
		for _, p := range op.Parameters {
			if p.In == "header" && r.header.Get(p.Name) == "" {
				t.Errorf("%s webhook without its %s header", ev.Type, p.Name)
			}
		}
		var v any
		_ = json.Unmarshal(r.body, &v)
		for _, problem := range doc.schemas.check(op.RequestBody.Content["application/json"].Schema, v, ev.Type) {
			t.Errorf("%s (request %.300s)", problem, r.body)
		}
	}
}

// exampleHosts resolves the document's example host to a documentation address (RFC 5737): the
// test has no DNS, and the host is a placeholder an integrator replaces.
type exampleHosts struct{}

func (exampleHosts) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if host == "crm.example.com" {
		return []netip.Addr{netip.MustParseAddr("203.0.113.10")}, nil
	}
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}

// checkExamples checks op's JSON examples fit their schemas, and that an integrator has one to
// copy for every JSON request body and success answer.
func checkExamples(t *testing.T, schemas schemaSet, op specOperation) {
	t.Helper()
	check := func(what string, m specMedia) {
		if len(m.Example) == 0 {
			t.Errorf("%s: %s has no example", op.key(), what)
			return
		}
		for _, problem := range schemas.check(m.Schema, exampleValue(t, m), "example") {
			t.Errorf("%s: %s %s", op.key(), what, problem)
		}
	}
	if op.RequestBody != nil {
		if m, ok := op.RequestBody.Content["application/json"]; ok {
			check("the request body", m)
		}
	}
	for code, resp := range op.Responses {
		if m, ok := resp.Content["application/json"]; ok && (code[0] == '2' || len(m.Example) > 0) {
			check("answer "+code, m)
		}
	}
}

// probeBadInput sends op's example spoiled in the ways any caller gets wrong: an unknown query
// parameter, a body that is not JSON, one over the size limit, an id that does not exist. Each
// answer's status must be documented.
func (g *gw) probeBadInput(t *testing.T, doc specDoc, op specOperation, created map[string]string) {
	t.Helper()
	probes := map[string]func(*http.Request){}
	// Every route refuses it (public ones ignore it): no route acts on a request it misread.
	probes["an unknown query parameter"] = func(r *http.Request) { r.URL.RawQuery += "&zz_unknown=1" }
	if ct := "application/json"; op.RequestBody != nil && op.RequestBody.Content[ct].Example != nil {
		probes["a body that is not JSON"] = func(r *http.Request) { setBody(r, ct, []byte("{")) }
		probes["a body over 1 MiB"] = func(r *http.Request) { setBody(r, ct, bytes.Repeat([]byte(" "), 1<<20+1)) }
	}
	if strings.Contains(op.path, "{id}") {
		probes["an id that does not exist"] = func(r *http.Request) {
			for _, id := range created {
				r.URL.Path = strings.Replace(r.URL.Path, id, "zz_1", 1)
			}
		}
	}
	for what, spoil := range probes {
		req := g.exampleRequest(t, op, created)
		spoil(req)
		code, body := readStatus(t, req)
		for _, problem := range doc.answer(op, code, body) {
			t.Errorf("%s: %s", what, problem)
		}
	}
}

// namedExamples sends each of op's named JSON body examples (examples: {name: {value}}) and
// requires a documented success whose answer fits the document.
func (g *gw) namedExamples(t *testing.T, doc specDoc, op specOperation, created map[string]string) {
	t.Helper()
	if op.RequestBody == nil {
		return
	}
	m := op.RequestBody.Content["application/json"]
	for _, name := range slices.Sorted(maps.Keys(m.Examples)) {
		for _, problem := range doc.schemas.check(m.Schema, exampleValue(t, specMedia{Example: m.Examples[name].Value}), "example") {
			t.Errorf("example %q: %s", name, problem)
		}
		req := g.exampleRequest(t, op, created)
		req.Header.Del("Idempotency-Key") // the key's example goes with the main example's body
		setBody(req, "application/json", m.Examples[name].Value)
		code, body := readStatus(t, req)
		if code/100 != 2 {
			t.Errorf("example %q answered %d: %.300s", name, code, body)
		}
		for _, problem := range doc.answer(op, code, body) {
			t.Errorf("example %q: %s", name, problem)
		}
	}
}

func setBody(r *http.Request, contentType string, b []byte) {
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	r.Header.Set("Content-Type", contentType)
}

// exampleValue decodes m's example (nil when there is none).
func exampleValue(t *testing.T, m specMedia) any {
	t.Helper()
	var v any
	if len(m.Example) > 0 {
		if err := json.Unmarshal(m.Example, &v); err != nil {
			t.Errorf("example %.100s: %v", m.Example, err)
		}
	}
	return v
}

// readStatus does req and returns its status and body.
func readStatus(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAnswer(resp)
	return resp.StatusCode, body
}

// deliveries records the webhook requests the gateway makes to the test's receiver.
type deliveries struct {
	mu   sync.Mutex
	got  []hookRequest
	seen map[string]bool // event types
}

type hookRequest struct {
	header http.Header
	body   []byte
}

func (d *deliveries) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var ev struct{ Type string }
	_ = json.Unmarshal(b, &ev)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, hookRequest{r.Header.Clone(), b})
	if d.seen == nil {
		d.seen = map[string]bool{}
	}
	d.seen[ev.Type] = true
}

func (d *deliveries) all(types ...string) ([]hookRequest, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, typ := range types {
		if !d.seen[typ] {
			return nil, false
		}
	}
	return slices.Clone(d.got), true
}

// documentedErrors provokes the errors particular to an operation and requires each to be
// documented for it, with a body that fits.
func (g *gw) documentedErrors(t *testing.T, doc specDoc, ops []specOperation, created map[string]string) {
	t.Helper()
	wh := created["/v1/webhooks/{id}"]
	cases := []struct {
		op, path, body string
		header         map[string]string
		status         int
	}{
		{"POST /v1/messages", "/v1/messages", `{"channel":"whatsapp","to":"+4915112345678","text":"one"}`, map[string]string{"Idempotency-Key": "k-409"}, 202},
		{"POST /v1/messages", "/v1/messages", `{"channel":"whatsapp","to":"+4915112345678","text":"two"}`, map[string]string{"Idempotency-Key": "k-409"}, 409},
		{"PUT /v1/consent/{channel}/{subject}", "/v1/consent/whatsapp/%2B4915199990001", `{"state":"opted_out"}`, nil, 200},
		{"DELETE /v1/consent/{channel}/{subject}", "/v1/consent/whatsapp/%2B4915199990001", "", nil, 409},
		{"POST /v1/hooks/{name}", "/v1/hooks/no-such-hook", `{}`, nil, 404},
		{"POST /v1/erasures", "/v1/erasures", `{"tenant":true}`, nil, 403},
		{"POST /v1/accounts/{channel}/{account}/link", "/v1/accounts/whatsapp/nope/link", "", nil, 404},
		{"POST /v1/accounts/{channel}/{account}/link", "/v1/accounts/teams/ops/link", "", nil, 400},
		{"POST /v1/sandbox/{channel}/{account}/inbound", "/v1/sandbox/whatsapp/nope/inbound", `{"from":"+4915112345678","text":"hi"}`, nil, 400},
		{"POST /v1/webhooks/{id}/replay", "/v1/webhooks/" + wh + "/replay?since=2999-01-01T00:00:00Z", "", nil, 400},
		{"POST /v1/webhooks", "/v1/webhooks", `{"url":"http://169.254.169.254/","events":["message.status"]}`, nil, 403},
		{"GET /v1/media/{id}", "/v1/media/med_nope", "", nil, 404},
		{"GET /v1/events", "/v1/events?type=nope", "", nil, 400},
		{"PUT /v1/consent/{channel}/{subject}", "/v1/consent/whatsapp/%2B4915112345678", `{"state":"none"}`, nil, 400},
	}
	for _, c := range cases {
		i := slices.IndexFunc(ops, func(op specOperation) bool { return op.key() == c.op })
		if i < 0 {
			t.Errorf("%s is not documented", c.op)
			continue
		}
		method, _, _ := strings.Cut(c.op, " ")
		req, _ := http.NewRequest(method, g.url+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
		req.Header.Set("Content-Type", "application/json")
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		code, body := readStatus(t, req)
		if code != c.status {
			t.Errorf("%s %s: %d, want %d: %.200s", method, c.path, code, c.status, body)
		}
		for _, problem := range doc.answer(ops[i], code, body) {
			t.Errorf("%s %s: %s", method, c.path, problem)
		}
	}
}

// created does a request as tenant demo that must answer status, and returns the id it created.
func (g *gw) created(path, contentType, body string, status int) string {
	g.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	var out struct{ ID string }
	b := readAnswer(resp)
	if resp.StatusCode != status || json.Unmarshal(b, &out) != nil || out.ID == "" {
		g.t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
	return out.ID
}

// exampleRequest builds op's documented example: parameter examples (path parameters without one
// take the object created for that path), and the first request body example in content order.
func (g *gw) exampleRequest(t *testing.T, op specOperation, created map[string]string) *http.Request {
	t.Helper()
	path, query, header := op.path, url.Values{}, http.Header{}
	for _, p := range op.Parameters {
		ex := p.Example
		if len(ex) == 0 {
			ex = p.Schema.Example
		}
		var value string
		if len(ex) > 0 {
			if err := json.Unmarshal(ex, &value); err != nil {
				value = string(ex) // a number or boolean example
			}
		}
		switch p.In {
		case "path":
			if value == "" {
				for prefix, id := range created {
					if strings.HasPrefix(op.path, prefix) && p.Name == "id" {
						value = id
					}
				}
			}
			if value == "" {
				t.Fatalf("path parameter %s has no example and the test created nothing for it", p.Name)
			}
			path = strings.Replace(path, "{"+p.Name+"}", url.PathEscape(value), 1)
		case "query":
			if value != "" {
				query.Set(p.Name, value)
			}
		case "header":
			if value != "" {
				header.Set(p.Name, value)
			}
		}
	}
	var body io.Reader
	if op.RequestBody != nil {
		types := slices.Sorted(maps.Keys(op.RequestBody.Content))
		for _, ct := range types {
			ex := op.RequestBody.Content[ct].Example
			if len(ex) == 0 {
				continue
			}
			if ct != "application/json" {
				var s string
				if err := json.Unmarshal(ex, &s); err != nil {
					t.Fatalf("the %s example is not a string: %v", ct, err)
				}
				ex = []byte(s)
			}
			body = bytes.NewReader(ex)
			header.Set("Content-Type", ct)
			break
		}
		if body == nil && op.RequestBody.Required {
			t.Fatalf("the request body is required but has no example")
		}
	}
	target := g.url + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequest(op.method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	if !op.public() {
		req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	}
	return req
}

// readAnswer reads a response; an event stream that does not end by itself (GET /v1/events) is
// read up to its first line, which is enough to know it started.
func readAnswer(resp *http.Response) []byte {
	defer resp.Body.Close()
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if ct == "text/event-stream" && resp.Request.URL.Path == "/v1/events" {
		return nil
	}
	b, _ := io.ReadAll(resp.Body)
	return b
}

// accessLogged says whether the access log has a line for op's own route (not the catch-all) that
// answered status.
func (g *gw) accessLogged(op specOperation, status int) bool {
	for _, line := range strings.Split(g.log.String(), "\n") {
		var rec struct {
			Event, Route string
			Status       int
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Event == "access" && rec.Route == op.key() && rec.Status == status {
			return true
		}
	}
	return false
}

// schemaSet checks JSON values against the document's schemas: the subset of JSON Schema it uses
// ($ref, type, required, properties, additionalProperties, items, enum, const, oneOf/anyOf/allOf).
type schemaSet map[string]json.RawMessage

type schema struct {
	Ref                  string                     `json:"$ref"`
	Type                 any                        `json:"type"`
	Required             []string                   `json:"required"`
	Properties           map[string]json.RawMessage `json:"properties"`
	AdditionalProperties json.RawMessage            `json:"additionalProperties"`
	Items                json.RawMessage            `json:"items"`
	Enum                 []any                      `json:"enum"`
	Const                any                        `json:"const"`
	OneOf                []json.RawMessage          `json:"oneOf"`
	AnyOf                []json.RawMessage          `json:"anyOf"`
	AllOf                []json.RawMessage          `json:"allOf"`
}

func (s schemaSet) check(raw json.RawMessage, v any, at string) []string {
	if len(raw) == 0 {
		return nil
	}
	var sc schema
	if err := json.Unmarshal(raw, &sc); err != nil {
		return []string{fmt.Sprintf("%s: schema: %v", at, err)}
	}
	if sc.Ref != "" {
		name := strings.TrimPrefix(sc.Ref, "#/components/schemas/")
		if s[name] == nil {
			return []string{fmt.Sprintf("%s: dangling %s", at, sc.Ref)}
		}
		return s.check(s[name], v, at)
	}
	var problems []string
	for _, sub := range sc.AllOf {
		problems = append(problems, s.check(sub, v, at)...)
	}
	if alts := append(sc.OneOf, sc.AnyOf...); len(alts) > 0 {
		var all []string
		for _, alt := range alts {
			p := s.check(alt, v, at)
			if len(p) == 0 {
				all = nil
				break
			}
			all = append(all, p...)
		}
		problems = append(problems, all...)
	}
	if sc.Type != nil && !typeMatches(sc.Type, v) {
		return append(problems, fmt.Sprintf("%s: %T is not %v", at, v, sc.Type))
	}
	if len(sc.Enum) > 0 && !slices.ContainsFunc(sc.Enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		problems = append(problems, fmt.Sprintf("%s: %v is not one of %v", at, v, sc.Enum))
	}
	if sc.Const != nil && fmt.Sprint(sc.Const) != fmt.Sprint(v) {
		problems = append(problems, fmt.Sprintf("%s: %v is not %v", at, v, sc.Const))
	}
	switch v := v.(type) {
	case map[string]any:
		for _, r := range sc.Required {
			if _, ok := v[r]; !ok {
				problems = append(problems, fmt.Sprintf("%s: required field %q is missing", at, r))
			}
		}
		closed := sc.Properties != nil && (len(sc.AdditionalProperties) == 0 || string(sc.AdditionalProperties) == "false")
		for k, val := range v {
			if p, ok := sc.Properties[k]; ok {
				problems = append(problems, s.check(p, val, at+"."+k)...)
			} else if closed && len(sc.OneOf)+len(sc.AnyOf)+len(sc.AllOf) == 0 {
				problems = append(problems, fmt.Sprintf("%s: field %q is not documented", at, k))
			} else if len(sc.AdditionalProperties) > 0 && sc.AdditionalProperties[0] == '{' {
				problems = append(problems, s.check(sc.AdditionalProperties, val, at+"."+k)...)
			}
		}
	case []any:
		for i, item := range v {
			problems = append(problems, s.check(sc.Items, item, fmt.Sprintf("%s[%d]", at, i))...)
		}
	}
	return problems
}

func typeMatches(t, v any) bool {
	if list, ok := t.([]any); ok {
		return slices.ContainsFunc(list, func(one any) bool { return typeMatches(one, v) })
	}
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case "number":
		_, ok := v.(float64)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	}
	return true
}
