package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/store"
)

// Two tenants, one key each. acme has WhatsApp sales (default) and support, and Teams ops;
// beta has WhatsApp main only.
const (
	secretAcme  = "sbk_acmeacmeacmeacmeacmeacmeacmeacmeacmeacmeacmeacmeacme"
	secretBeta  = "sbk_betabetabetabetabetabetabetabetabetabetabetabetabeta"
	phone       = "+4915112345678"
	testMaxBody = 16 << 10
)

type env struct {
	t       *testing.T
	srv     *httptest.Server
	intake  *fakeIntake
	msgs    *fakeMessages
	keys    *fakeKeys
	sandbox *fakeSandbox
	clock   *clock
	logs    logLines
}

type option func(*api.Config, *api.Deps)

func newEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	e := &env{
		t:      t,
		intake: newFakeIntake(),
		msgs:   newFakeMessages(),
		keys: &fakeKeys{keys: map[string]gateway.APIKey{
			secretAcme: {ID: "key_acme", Tenant: "acme", Name: "test", Prefix: api.APIKeyDisplayPrefix(secretAcme)},
			secretBeta: {ID: "key_beta", Tenant: "beta", Name: "test", Prefix: api.APIKeyDisplayPrefix(secretBeta)},
		}},
		sandbox: &fakeSandbox{},
		clock:   &clock{t: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)},
		logs:    logLines{ch: make(chan string, 1000)},
	}
	cfg := api.Config{
		MaxBody: testMaxBody,
		Timeout: 5 * time.Second,
		Log:     zerolog.New(e.logs).Level(zerolog.DebugLevel),
		Now:     e.clock.Now,
	}
	deps := api.Deps{
		Intake:   e.intake,
		Messages: e.msgs,
		Keys:     e.keys,
		Directory: fakeDirectory{
			"acme": {gateway.WhatsApp: {"sales", "support"}, gateway.Teams: {"ops"}},
			"beta": {gateway.WhatsApp: {"main"}},
		},
		Sandbox: e.sandbox,
	}
	for _, o := range opts {
		o(&cfg, &deps)
	}
	e.srv = httptest.NewServer(api.New(cfg, deps))
	t.Cleanup(e.srv.Close)
	return e
}

// req is one HTTP request in a test.
type req struct {
	method, path string
	secret       string // "" sends no Authorization header
	auth         string // a raw Authorization header, overrides secret
	body         string
	chunked      bool // send the body without Content-Length
	header       map[string]string
}

type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (e *env) do(r req) resp {
	e.t.Helper()
	var body io.Reader
	if r.body != "" {
		if r.chunked {
			body = io.MultiReader(strings.NewReader(r.body)) // no Len: sent chunked
		} else {
			body = strings.NewReader(r.body)
		}
	}
	hr, err := http.NewRequest(r.method, e.srv.URL+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	switch {
	case r.auth != "":
		hr.Header.Set("Authorization", r.auth)
	case r.secret != "":
		hr.Header.Set("Authorization", "Bearer "+r.secret)
	}
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			e.t.Fatalf("%s %s: answer is not a JSON object: %v: %s", r.method, r.path, err, raw)
		}
	}
	return out
}

func (r resp) errorField(name string) string {
	eo, _ := r.body["error"].(map[string]any)
	s, _ := eo[name].(string)
	return s
}

func send(body string) req {
	return req{method: "POST", path: "/v1/messages", secret: secretAcme, body: body}
}

// TestBadInput: every bad input gets its stable code and status, and nothing is accepted.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.msgs.add(&gateway.Message{ID: "msg_acme1", Tenant: "acme", Direction: gateway.Outbound, Channel: gateway.WhatsApp,
		Account: "sales", Status: gateway.StatusSent})
	e.intake.hook = func(_ context.Context, nm store.NewMessage) error {
		switch nm.Message.Peer.Value {
		case "+4915199999999":
			return gateway.Errorf(gateway.ERecipientOptedOut, "the recipient has opted out")
		case "+4915188888888":
			return gateway.Errorf(gateway.EConsentRequired, "no opt-in on record")
		}
		return nil
	}
	long := strings.Repeat("x", api.MaxTextLen+1)
	huge := `{"channel":"whatsapp","to":"` + phone + `","text":"` + strings.Repeat("y", testMaxBody) + `"}`
	tooManyMeta := `{`
	for i := range api.MaxMetadataKeys + 1 {
		if i > 0 {
			tooManyMeta += ","
		}
		tooManyMeta += `"k` + string(rune('a'+i)) + `":"v"`
	}
	tooManyMeta += `}`

	tests := []struct {
		name   string
		req    req
		status int
		code   string
		field  string
		msg    string // a substring of the message
	}{
		// Request shape.
		{"malformed JSON", send(`{"channel": whatsapp}`), 400, "invalid_json", "", "byte 13"},
		{"truncated JSON", send(`{"channel":"whatsapp"`), 400, "invalid_json", "", "ends after 21 bytes"},
		{"empty body", req{method: "POST", path: "/v1/messages", secret: secretAcme}, 400, "invalid_json", "", "empty"},
		{"not an object", send(`["hi"]`), 400, "invalid_json", "", "expected a JSON object"},
		{"trailing data", send(`{"to":"` + phone + `","channel":"whatsapp","text":"hi"} {"x":1}`), 400, "invalid_json", "", "after the JSON object"},
		{"unknown field", send(`{"channel":"whatsapp","to":"` + phone + `","text":"hi","priority":"high"}`), 400, "unknown_field", "priority", ""},
		{"unknown nested field", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"url":"https://x.test/a.jpg","size":3}}`), 400, "unknown_field", "size", ""},
		{"wrong type", send(`{"channel":"whatsapp","to":"` + phone + `","text":42}`), 400, "invalid_field", "text", "must be a string, not a number"},
		{"wrong nested type", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"url":true}}`), 400, "invalid_field", "media.url", "must be a string"},
		{"wrong metadata type", send(`{"channel":"whatsapp","to":"` + phone + `","text":"hi","metadata":{"order":7}}`), 400, "invalid_field", "metadata", "values must be a string, not a number"},
		{"body over the limit", send(huge), 413, "body_too_large", "", ""},
		{"body over the limit, chunked", req{method: "POST", path: "/v1/messages", secret: secretAcme, body: huge, chunked: true}, 413, "body_too_large", "", ""},

		// Addressing.
		{"missing recipient", send(`{"channel":"whatsapp","text":"hi"}`), 400, "missing_field", "to", ""},
		{"invalid phone number", send(`{"channel":"whatsapp","to":"+49123","text":"hi"}`), 400, "invalid_recipient", "to", "not a valid phone number"},
		{"phone number without +", send(`{"channel":"whatsapp","to":"015112345678","text":"hi"}`), 400, "invalid_recipient", "to", "international"},
		{"unknown channel", send(`{"channel":"sms","to":"` + phone + `","text":"hi"}`), 400, "unknown_channel", "channel", ""},
		{"missing channel for a phone number", send(`{"to":"` + phone + `","text":"hi"}`), 400, "missing_field", "channel", ""},
		{"teams address on whatsapp", send(`{"channel":"whatsapp","to":"teams:chat:19abc","text":"hi"}`), 400, "invalid_recipient", "to", "channel teams"},
		{"phone number on teams", send(`{"channel":"teams","to":"` + phone + `","text":"hi"}`), 400, "invalid_recipient", "to", ""},
		{"malformed teams address", send(`{"to":"teams:channel:onlyteam","text":"hi"}`), 400, "invalid_recipient", "to", ""},
		{"teams object on whatsapp", send(`{"channel":"whatsapp","to":"` + phone + `","text":"hi","teams":{"mentions":[{"id":"a","name":"Ann"}]}}`), 400, "invalid_field", "teams", "channel teams"},
		{"mention without id", send(`{"to":"teams:chat:19abc","text":"hi","teams":{"mentions":[{"name":"Ann"}]}}`), 400, "invalid_field", "teams.mentions[0]", "AAD object id"},
		{"card not an object", send(`{"to":"teams:chat:19abc","text":"hi","teams":{"adaptive_card":[1,2]}}`), 400, "invalid_field", "teams.adaptive_card", "JSON object"},
		{"unknown account", send(`{"channel":"whatsapp","to":"` + phone + `","from":"marketing","text":"hi"}`), 400, "unknown_account", "from", ""},
		{"another tenant's account", send(`{"channel":"whatsapp","to":"` + phone + `","from":"main","text":"hi"}`), 400, "unknown_account", "from", ""},
		{"no account on the channel", req{method: "POST", path: "/v1/messages", secret: secretBeta, body: `{"to":"teams:chat:19abc","text":"hi"}`}, 400, "unknown_account", "from", ""},

		// Content.
		{"empty message", send(`{"channel":"whatsapp","to":"` + phone + `"}`), 400, "missing_field", "text", ""},
		{"too long text", send(`{"channel":"whatsapp","to":"` + phone + `","text":"` + long + `"}`), 400, "invalid_field", "text", "4097"},
		{"media without url", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"caption":"x"}}`), 400, "missing_field", "media.url", ""},
		{"media with a file url", send(`{"channel":"whatsapp","to":"` + phone + `","media":{"url":"file:///etc/passwd"}}`), 400, "invalid_field", "media.url", ""},
		{"template without name", send(`{"channel":"whatsapp","to":"` + phone + `","template":{"language":"en"}}`), 400, "missing_field", "template.name", ""},
		{"too much metadata", send(`{"channel":"whatsapp","to":"` + phone + `","text":"hi","metadata":` + tooManyMeta + `}`), 400, "invalid_field", "metadata", ""},
		{"long metadata value", send(`{"channel":"whatsapp","to":"` + phone + `","text":"hi","metadata":{"k":"` + strings.Repeat("v", 501) + `"}}`), 400, "invalid_field", "metadata.k", ""},

		// Auth.
		{"missing API key", req{method: "POST", path: "/v1/messages", body: `{}`}, 401, "unauthorized", "", ""},
		{"malformed API key", req{method: "POST", path: "/v1/messages", auth: "Bearer hunter2", body: `{}`}, 401, "unauthorized", "", ""},
		{"unknown API key", req{method: "POST", path: "/v1/messages", secret: api.NewAPIKeySecret(), body: `{}`}, 401, "unauthorized", "", ""},
		{"basic auth", req{method: "POST", path: "/v1/messages", auth: "Basic YWxhZGRpbjpvcGVuc2VzYW1l", body: `{}`}, 401, "unauthorized", "", ""},
		{"other tenant's message", req{method: "GET", path: "/v1/messages/msg_acme1", secret: secretBeta}, 404, "not_found", "", ""},
		{"unknown message", req{method: "GET", path: "/v1/messages/msg_nope", secret: secretAcme}, 404, "not_found", "", ""},
		{"not a message id", req{method: "GET", path: "/v1/messages/../../etc", secret: secretAcme}, 404, "not_found", "", ""},

		// Idempotency-Key header.
		{"idempotency key too long", req{method: "POST", path: "/v1/messages", secret: secretAcme,
			body:   `{"channel":"whatsapp","to":"` + phone + `","text":"hi"}`,
			header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}}, 400, "invalid_field", "Idempotency-Key", ""},

		// Policy at accept.
		{"recipient opted out", send(`{"channel":"whatsapp","to":"+4915199999999","text":"hi"}`), 422, "recipient_opted_out", "", ""},
		{"consent required", send(`{"channel":"whatsapp","to":"+4915188888888","text":"hi"}`), 422, "consent_required", "", ""},

		// Reads.
		{"unknown include", req{method: "GET", path: "/v1/messages/msg_acme1?include=everything", secret: secretAcme}, 400, "invalid_field", "include", ""},
		{"unknown list filter", req{method: "GET", path: "/v1/messages?statsu=sent", secret: secretAcme}, 400, "unknown_field", "statsu", ""},
		{"bad status filter", req{method: "GET", path: "/v1/messages?status=lost", secret: secretAcme}, 400, "invalid_field", "status", ""},
		{"bad channel filter", req{method: "GET", path: "/v1/messages?channel=sms", secret: secretAcme}, 400, "unknown_channel", "channel", ""},
		{"bad since", req{method: "GET", path: "/v1/messages?since=yesterday", secret: secretAcme}, 400, "invalid_field", "since", ""},
		{"bad limit", req{method: "GET", path: "/v1/messages?limit=501", secret: secretAcme}, 400, "invalid_field", "limit", ""},
		{"repeated filter", req{method: "GET", path: "/v1/messages?status=sent&status=read", secret: secretAcme}, 400, "invalid_field", "status", ""},

		// Routing.
		{"unknown route", req{method: "GET", path: "/v2/messages", secret: secretAcme}, 404, "not_found", "", ""},
		{"wrong method", req{method: "DELETE", path: "/v1/messages", secret: secretAcme}, 405, "method_not_allowed", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.intake.stored())
			r := e.do(tc.req)
			if r.status != tc.status || r.errorField("code") != tc.code || r.errorField("field") != tc.field {
				t.Fatalf("got %d %s field=%q, want %d %s field=%q: %s", r.status, r.errorField("code"), r.errorField("field"),
					tc.status, tc.code, tc.field, r.raw)
			}
			if !strings.Contains(r.errorField("message"), tc.msg) {
				t.Errorf("message %q does not mention %q", r.errorField("message"), tc.msg)
			}
			if r.errorField("message") == "" {
				t.Error("empty error message")
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got := len(e.intake.stored()); got != before {
				t.Errorf("a bad request stored a message (%d → %d)", before, got)
			}
			switch r.status {
			case 401:
				if r.header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			case 405:
				if r.header.Get("Allow") != "GET, POST, HEAD" {
					t.Errorf("Allow = %q", r.header.Get("Allow"))
				}
			}
		})
	}
}

func TestAccept(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name        string
		secret      string
		body        string
		wantChannel gateway.Channel
		wantAccount string
		wantPeer    string
	}{
		{"whatsapp, default account, spaced number", secretAcme,
			`{"channel":"whatsapp","to":"+49 151 1234 5678","text":"Your invoice is ready","metadata":{"order":"A-1"}}`,
			gateway.WhatsApp, "sales", phone},
		{"whatsapp, named account", secretAcme,
			`{"channel":"whatsapp","to":"` + phone + `","from":"support","media":{"url":"https://cdn.example.com/a.pdf","mime_type":"application/pdf","filename":"a.pdf"}}`,
			gateway.WhatsApp, "support", phone},
		{"teams inferred from the address", secretAcme,
			`{"to":"teams:channel:team1/chan1","template":{"name":"reminder","language":"en","params":{"1":"Ann"}}}`,
			gateway.Teams, "ops", "teams:channel:team1/chan1"},
		{"whatsapp group", secretBeta,
			`{"channel":"whatsapp","to":"120363025246125486@g.us","text":"hi all","reply_to":"msg_x"}`,
			gateway.WhatsApp, "main", "120363025246125486@g.us"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(req{method: "POST", path: "/v1/messages", secret: tc.secret, body: tc.body})
			if r.status != http.StatusAccepted {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			id, _ := r.body["id"].(string)
			if len(r.body) != 2 || r.body["status"] != "accepted" || !strings.HasPrefix(id, "msg_") {
				t.Fatalf("body = %s, want {id, status: accepted}", r.raw)
			}
			if loc := r.header.Get("Location"); loc != "/v1/messages/"+id {
				t.Errorf("Location = %q", loc)
			}
			if r.header.Get("Idempotent-Replayed") != "" {
				t.Error("a first request is marked replayed")
			}
			stored := e.intake.stored()
			m := stored[len(stored)-1]
			if m.ID != id || m.Channel != tc.wantChannel || m.Account != tc.wantAccount || m.Peer.String() != tc.wantPeer ||
				m.Direction != gateway.Outbound || m.Status != gateway.StatusAccepted || m.Tenant == "" {
				t.Errorf("intake got %+v", m)
			}
			if !m.CreatedAt.Equal(e.clock.Now()) || m.CreatedAt.Location() != time.UTC {
				t.Errorf("CreatedAt = %v", m.CreatedAt)
			}
		})
	}
	if m := e.intake.stored()[0]; m.Content.Text != "Your invoice is ready" || m.Metadata["order"] != "A-1" {
		t.Errorf("content/metadata not passed on: %+v", m)
	}
}

func TestIdempotency(t *testing.T) {
	e := newEnv(t)
	withKey := func(secret, key, body string) req {
		return req{method: "POST", path: "/v1/messages", secret: secret, body: body, header: map[string]string{"Idempotency-Key": key}}
	}
	body := `{"channel":"whatsapp","to":"` + phone + `","text":"hello","metadata":{"a":"1","b":"2"}}`
	// The same request, written differently: other key order and whitespace.
	same := "{\n  \"metadata\": {\"b\":\"2\", \"a\":\"1\"},\n  \"text\": \"hello\", \"to\": \"" + phone + "\", \"channel\": \"whatsapp\"\n}"
	other := `{"channel":"whatsapp","to":"` + phone + `","text":"goodbye"}`

	first := e.do(withKey(secretAcme, "order-42", body))
	if first.status != 202 || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %v %s", first.status, first.header, first.raw)
	}
	replay := e.do(withKey(secretAcme, "order-42", same))
	if replay.status != 202 || replay.body["id"] != first.body["id"] || replay.header.Get("Idempotent-Replayed") != "true" ||
		replay.header.Get("Location") != first.header.Get("Location") {
		t.Fatalf("replay: %d %v %s, want 202 with id %v", replay.status, replay.header, replay.raw, first.body["id"])
	}
	conflict := e.do(withKey(secretAcme, "order-42", other))
	if conflict.status != 409 || conflict.errorField("code") != "idempotency_conflict" || conflict.errorField("field") != "Idempotency-Key" {
		t.Fatalf("conflict: %d %s", conflict.status, conflict.raw)
	}
	// Keys belong to a tenant: beta's order-42 is its own.
	beta := e.do(withKey(secretBeta, "order-42", body))
	if beta.status != 202 || beta.body["id"] == first.body["id"] || beta.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("other tenant: %d %s", beta.status, beta.raw)
	}
	// A validation error is not remembered: the corrected request goes through under the same key.
	bad := e.do(withKey(secretAcme, "order-43", `{"channel":"whatsapp","to":"+49123","text":"hi"}`))
	if bad.status != 400 {
		t.Fatalf("bad: %d %s", bad.status, bad.raw)
	}
	good := e.do(withKey(secretAcme, "order-43", `{"channel":"whatsapp","to":"`+phone+`","text":"hi"}`))
	if good.status != 202 || good.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("after a validation error: %d %v %s", good.status, good.header, good.raw)
	}
	if n := len(e.intake.stored()); n != 3 {
		t.Errorf("stored %d messages, want 3", n)
	}
	stored := e.intake.stored()
	if stored[0].IdempotencyKey != "order-42" {
		t.Errorf("IdempotencyKey = %q", stored[0].IdempotencyKey)
	}
}

func TestGetMessage(t *testing.T) {
	e := newEnv(t)
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	e.msgs.add(&gateway.Message{
		ID: "msg_01", Tenant: "acme", Direction: gateway.Outbound, Channel: gateway.WhatsApp, Account: "sales",
		Peer:    gateway.Address{Channel: gateway.WhatsApp, Kind: gateway.KindPhone, Value: phone},
		Content: gateway.Content{Text: "the secret plan", Media: &gateway.Media{URL: "https://x.test/a.jpg", MIMEType: "image/jpeg"}},
		Status:  gateway.StatusRead, ChannelMessageID: "3EB0ABC", IdempotencyKey: "k1", Metadata: map[string]string{"order": "A-1"},
		CreatedAt: at, UpdatedAt: at.Add(3 * time.Second),
	},
		gateway.StatusEvent{MessageID: "msg_01", Status: gateway.StatusAccepted, At: at},
		gateway.StatusEvent{MessageID: "msg_01", Status: gateway.StatusQueued, Previous: gateway.StatusAccepted, At: at.Add(time.Millisecond)},
		gateway.StatusEvent{MessageID: "msg_01", Status: gateway.StatusSent, Previous: gateway.StatusQueued, At: at.Add(time.Second), ChannelMessageID: "3EB0ABC"},
		gateway.StatusEvent{MessageID: "msg_01", Status: gateway.StatusRead, Previous: gateway.StatusSent, At: at.Add(3 * time.Second)},
	)
	e.msgs.add(&gateway.Message{
		ID: "msg_02", Tenant: "acme", Direction: gateway.Inbound, Channel: gateway.Teams, Account: "ops",
		Peer:   gateway.Address{Channel: gateway.Teams, Kind: gateway.KindTeamsUser, Value: "aad-1"},
		Status: gateway.StatusReceived, CreatedAt: at, UpdatedAt: at,
	})
	e.msgs.add(&gateway.Message{
		ID: "msg_03", Tenant: "acme", Direction: gateway.Outbound, Channel: gateway.WhatsApp, Account: "sales",
		Peer:   gateway.Address{Channel: gateway.WhatsApp, Kind: gateway.KindPhone, Value: phone},
		Status: gateway.StatusRejected, ErrorCode: gateway.ERecipientOptedOut, ErrorMessage: "opted out", CreatedAt: at, UpdatedAt: at,
	}, gateway.StatusEvent{MessageID: "msg_03", Status: gateway.StatusRejected, Previous: gateway.StatusAccepted, At: at,
		Error: &gateway.ErrorDetail{Code: gateway.ERecipientOptedOut, Message: "opted out"}})

	r := e.do(req{method: "GET", path: "/v1/messages/msg_01", secret: secretAcme})
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	want := map[string]any{
		"id": "msg_01", "direction": "outbound", "channel": "whatsapp", "account": "sales", "from": "sales", "to": phone,
		"status": "read", "channel_message_id": "3EB0ABC", "idempotency_key": "k1", "metadata": map[string]any{"order": "A-1"},
		"created_at": "2026-11-22T09:00:00Z", "updated_at": "2026-11-22T09:00:03Z",
		"history": []any{
			map[string]any{"status": "accepted", "at": "2026-11-22T09:00:00Z"},
			map[string]any{"status": "queued", "previous": "accepted", "at": "2026-11-22T09:00:00.001Z"},
			map[string]any{"status": "sent", "previous": "queued", "at": "2026-11-22T09:00:01Z", "channel_message_id": "3EB0ABC"},
			map[string]any{"status": "read", "previous": "sent", "at": "2026-11-22T09:00:03Z"},
		},
	}
	assertJSON(t, r.body, want)
	if bytes.Contains(r.raw, []byte("secret plan")) {
		t.Error("content shown without include=content")
	}

	r = e.do(req{method: "GET", path: "/v1/messages/msg_01?include=content", secret: secretAcme})
	want["content"] = map[string]any{"text": "the secret plan", "media": map[string]any{"url": "https://x.test/a.jpg", "mime_type": "image/jpeg"}}
	assertJSON(t, r.body, want)

	r = e.do(req{method: "GET", path: "/v1/messages/msg_02", secret: secretAcme})
	if r.body["direction"] != "inbound" || r.body["from"] != "teams:user:aad-1" || r.body["to"] != "ops" {
		t.Errorf("inbound: %s", r.raw)
	}
	if h, ok := r.body["history"].([]any); !ok || len(h) != 0 {
		t.Errorf("history of a message without events = %v, want []", r.body["history"])
	}

	r = e.do(req{method: "GET", path: "/v1/messages/msg_03", secret: secretAcme})
	if !bytes.Contains(r.raw, []byte(`"error":{"code":"recipient_opted_out","message":"opted out"}`)) {
		t.Errorf("rejected message: %s", r.raw)
	}
}

func assertJSON(t *testing.T, got, want map[string]any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("got  %s\nwant %s", g, w)
	}
}

func TestListMessages(t *testing.T) {
	e := newEnv(t)
	base := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	for i, id := range []string{"msg_a", "msg_b", "msg_c"} {
		e.msgs.add(&gateway.Message{ID: id, Tenant: "acme", Direction: gateway.Outbound, Channel: gateway.WhatsApp, Account: "sales",
			Peer:    gateway.Address{Channel: gateway.WhatsApp, Kind: gateway.KindPhone, Value: phone},
			Content: gateway.Content{Text: "content " + id}, Status: gateway.StatusDelivered,
			CreatedAt: base.Add(time.Duration(i) * time.Minute), UpdatedAt: base})
	}
	e.msgs.add(&gateway.Message{ID: "msg_z", Tenant: "beta", Direction: gateway.Outbound, Channel: gateway.WhatsApp, Account: "main",
		Status: gateway.StatusSent, CreatedAt: base, UpdatedAt: base})

	ids := func(r resp) []string {
		var out []string
		data, ok := r.body["data"].([]any)
		if !ok {
			t.Fatalf("no data array: %s", r.raw)
		}
		for _, d := range data {
			out = append(out, d.(map[string]any)["id"].(string))
		}
		return out
	}
	r := e.do(req{method: "GET", path: "/v1/messages?limit=2&status=delivered&channel=whatsapp&direction=outbound&since=2026-11-22T08:00:00Z", secret: secretAcme})
	if r.status != 200 || strings.Join(ids(r), ",") != "msg_c,msg_b" {
		t.Fatalf("page 1: %d %s", r.status, r.raw)
	}
	cursor, ok := r.body["next_cursor"].(string)
	if !ok || cursor == "" {
		t.Fatalf("no next_cursor: %s", r.raw)
	}
	if bytes.Contains(r.raw, []byte("content msg_")) {
		t.Error("list shows content")
	}
	f := e.msgs.filters[0]
	if f.Limit != 2 || f.Status != gateway.StatusDelivered || f.Channel != gateway.WhatsApp || f.Direction != gateway.Outbound ||
		!f.Since.Equal(time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("filter = %+v", f)
	}
	r = e.do(req{method: "GET", path: "/v1/messages?limit=2&cursor=" + cursor, secret: secretAcme})
	if r.status != 200 || strings.Join(ids(r), ",") != "msg_a" {
		t.Fatalf("page 2: %d %s", r.status, r.raw)
	}
	if v, present := r.body["next_cursor"]; !present || v != nil {
		t.Errorf("last page next_cursor = %v (present %v), want null", v, present)
	}
	// Each tenant sees its own messages only.
	r = e.do(req{method: "GET", path: "/v1/messages", secret: secretBeta})
	if strings.Join(ids(r), ",") != "msg_z" {
		t.Errorf("beta sees %v", ids(r))
	}
	// An empty page is an empty array, not null.
	r = e.do(req{method: "GET", path: "/v1/messages?status=read", secret: secretBeta})
	if !bytes.Contains(r.raw, []byte(`"data":[]`)) {
		t.Errorf("empty list: %s", r.raw)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(c *api.Config, _ *api.Deps) { c.RatePerSecond, c.Burst = 0.5, 1 })
	body := `{"channel":"whatsapp","to":"` + phone + `","text":"hi"}`
	if r := e.do(send(body)); r.status != 202 {
		t.Fatalf("first: %d %s", r.status, r.raw)
	}
	r := e.do(send(body))
	if r.status != 429 || r.errorField("code") != "rate_limited" || r.header.Get("Retry-After") != "2" {
		t.Fatalf("second: %d Retry-After=%q %s", r.status, r.header.Get("Retry-After"), r.raw)
	}
	// Reads count too, and another tenant has its own bucket.
	if r := e.do(req{method: "GET", path: "/v1/messages", secret: secretAcme}); r.status != 429 {
		t.Errorf("read while limited: %d", r.status)
	}
	if r := e.do(req{method: "POST", path: "/v1/messages", secret: secretBeta, body: body}); r.status != 202 {
		t.Errorf("other tenant: %d %s", r.status, r.raw)
	}
	e.clock.Add(2 * time.Second)
	if r := e.do(send(body)); r.status != 202 {
		t.Errorf("after Retry-After: %d %s", r.status, r.raw)
	}
	// Probes are not limited.
	if r := e.do(req{method: "GET", path: "/healthz"}); r.status != 200 {
		t.Errorf("healthz: %d", r.status)
	}
}

func TestServerErrors(t *testing.T) {
	body := `{"channel":"whatsapp","to":"` + phone + `","text":"hi"}`
	tests := []struct {
		name   string
		hook   func(ctx context.Context, nm store.NewMessage) error
		status int
		code   string
	}{
		{"internal error hides its details", func(context.Context, store.NewMessage) error {
			return errors.New("pq: connection to 10.0.0.7 refused")
		}, 500, "internal"},
		{"unavailable", func(context.Context, store.NewMessage) error {
			return gateway.Errorf(gateway.EUnavailable, "the message bus is unavailable")
		}, 503, "unavailable"},
		{"deadline", func(ctx context.Context, _ store.NewMessage) error {
			<-ctx.Done() // the handler deadline fires
			return ctx.Err()
		}, 504, "timeout"},
		{"panic", func(context.Context, store.NewMessage) error { panic("boom") }, 500, "internal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *api.Config, _ *api.Deps) { c.Timeout = 100 * time.Millisecond })
			e.intake.hook = tc.hook
			r := e.do(send(body))
			if r.status != tc.status || r.errorField("code") != tc.code {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if bytes.Contains(r.raw, []byte("10.0.0.7")) || bytes.Contains(r.raw, []byte("boom")) {
				t.Errorf("internal details leaked: %s", r.raw)
			}
			if tc.code == "internal" && r.errorField("message") != "internal error" {
				t.Errorf("message = %q", r.errorField("message"))
			}
		})
	}
}

func TestKeyCache(t *testing.T) {
	e := newEnv(t, func(c *api.Config, _ *api.Deps) { c.KeyCacheTTL = time.Minute })
	get := req{method: "GET", path: "/v1/messages", secret: secretAcme}
	for range 3 {
		if r := e.do(get); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	}
	if n := e.keys.lookups.Load(); n != 1 {
		t.Errorf("%d key lookups for 3 requests, want 1", n)
	}
	e.clock.Add(time.Minute)
	e.do(get)
	if n := e.keys.lookups.Load(); n != 2 {
		t.Errorf("%d key lookups after the TTL, want 2", n)
	}
	// Unknown keys are looked up every time (not cached) and stay unauthorized.
	bad := req{method: "GET", path: "/v1/messages", secret: api.NewAPIKeySecret()}
	e.do(bad)
	if r := e.do(bad); r.status != 401 {
		t.Errorf("unknown key: %d", r.status)
	}
	if n := e.keys.lookups.Load(); n != 4 {
		t.Errorf("%d lookups, want 4", n)
	}
}

func TestAccessLog(t *testing.T) {
	e := newEnv(t)
	r := e.do(send(`{"channel":"whatsapp","to":"` + phone + `","text":"a distinctive text"}`))
	if r.status != 202 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	deadline := time.After(5 * time.Second)
	for {
		var line string
		select {
		case line = <-e.logs.ch:
		case <-deadline:
			t.Fatal("no access log line")
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["event"] != "access" {
			continue
		}
		if m["route"] != "POST /v1/messages" || m["method"] != "POST" || m["status"] != float64(202) ||
			m["tenant"] != "acme" || m["key_id"] != "key_acme" || m["latency_ms"] == nil {
			t.Errorf("access line: %s", line)
		}
		for _, secret := range []string{secretAcme, "distinctive", phone, "5678"} {
			if strings.Contains(line, secret) {
				t.Errorf("access line contains %q: %s", secret, line)
			}
		}
		return
	}
}

func TestHealth(t *testing.T) {
	var storeErr error
	e := newEnv(t, func(_ *api.Config, d *api.Deps) {
		d.Ready = []api.ReadyCheck{
			{Name: "store", Check: func(context.Context) error { return storeErr }},
			{Name: "bus", Check: func(context.Context) error { return nil }},
		}
	})
	if r := e.do(req{method: "GET", path: "/healthz"}); r.status != 200 || r.body["status"] != "ok" {
		t.Errorf("healthz: %d %s", r.status, r.raw)
	}
	r := e.do(req{method: "GET", path: "/readyz"})
	if r.status != 200 || r.body["status"] != "ready" {
		t.Errorf("readyz: %d %s", r.status, r.raw)
	}
	storeErr = errors.New("database is locked at /var/lib/secret.db")
	r = e.do(req{method: "GET", path: "/readyz"})
	if r.status != 503 || r.errorField("code") != "unavailable" || r.errorField("message") != "not ready: store" {
		t.Fatalf("failing readyz: %d %s", r.status, r.raw)
	}
	if !bytes.Contains(r.raw, []byte(`{"name":"store","status":"failed"}`)) || !bytes.Contains(r.raw, []byte(`{"name":"bus","status":"ok"}`)) {
		t.Errorf("checks: %s", r.raw)
	}
	if bytes.Contains(r.raw, []byte("secret.db")) {
		t.Errorf("check error leaked: %s", r.raw)
	}
}

func TestSandboxInbound(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		path   string
		body   string
		status int
		code   string
		field  string
	}{
		{"ok", "/v1/sandbox/whatsapp/sales/inbound", `{"from":"+49 151 12345678","text":"STOP"}`, 202, "", ""},
		{"teams", "/v1/sandbox/teams/ops/inbound", `{"from":"teams:user:aad-1","text":"hello"}`, 202, "", ""},
		{"unknown channel", "/v1/sandbox/sms/sales/inbound", `{"from":"+4915112345678","text":"hi"}`, 400, "unknown_channel", "channel"},
		{"unknown account", "/v1/sandbox/whatsapp/nope/inbound", `{"from":"+4915112345678","text":"hi"}`, 400, "unknown_account", "account"},
		{"bad sender", "/v1/sandbox/whatsapp/sales/inbound", `{"from":"12","text":"hi"}`, 400, "invalid_recipient", "from"},
		{"missing sender", "/v1/sandbox/whatsapp/sales/inbound", `{"text":"hi"}`, 400, "missing_field", "from"},
		{"missing text", "/v1/sandbox/whatsapp/sales/inbound", `{"from":"+4915112345678"}`, 400, "missing_field", "text"},
		{"unknown field", "/v1/sandbox/whatsapp/sales/inbound", `{"from":"+4915112345678","text":"hi","to":"x"}`, 400, "unknown_field", "to"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(req{method: "POST", path: tc.path, secret: secretAcme, body: tc.body})
			if r.status != tc.status || r.errorField("code") != tc.code || r.errorField("field") != tc.field {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
	}
	if got := strings.Join(e.sandbox.calls, "\n"); got != "acme|whatsapp|sales|+4915112345678|STOP\nacme|teams|ops|teams:user:aad-1|hello" {
		t.Errorf("injected:\n%s", got)
	}

	// Without an injector (production) the route does not exist.
	prod := newEnv(t, func(_ *api.Config, d *api.Deps) { d.Sandbox = nil })
	r := prod.do(req{method: "POST", path: "/v1/sandbox/whatsapp/sales/inbound", secret: secretAcme, body: `{"from":"+4915112345678","text":"hi"}`})
	if r.status != 404 || r.errorField("code") != "not_found" {
		t.Errorf("sandbox in production: %d %s", r.status, r.raw)
	}
}

func TestAPIKeySecret(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := api.NewAPIKeySecret()
		if !api.ValidAPIKeySecret(s) || !strings.HasPrefix(s, "sbk_") || len(s) != 56 || strings.ContainsAny(s, "=+/") {
			t.Fatalf("bad secret %q", s)
		}
		if seen[s] {
			t.Fatal("repeated secret")
		}
		seen[s] = true
	}
	for _, s := range []string{"", "sbk_", "sbk_short", "xbk_" + api.NewAPIKeySecret()[4:], api.NewAPIKeySecret() + "a", strings.ToUpper(api.NewAPIKeySecret())} {
		if api.ValidAPIKeySecret(s) {
			t.Errorf("ValidAPIKeySecret(%q) = true", s)
		}
	}
	if p := api.APIKeyDisplayPrefix(secretAcme); len(p) != 12 || !strings.HasPrefix(secretAcme, p) {
		t.Errorf("display prefix %q", p)
	}
}

func TestHTTPStatus(t *testing.T) {
	for code, want := range map[string]int{
		gateway.EInvalidJSON: 400, gateway.EUnknownField: 400, gateway.EInvalidField: 400, gateway.EMissingField: 400,
		gateway.EInvalidRecipient: 400, gateway.EUnknownChannel: 400, gateway.EUnknownAccount: 400,
		gateway.EUnauthorized: 401, gateway.EForbidden: 403, gateway.ENotFound: 404,
		gateway.EConflict: 409, gateway.EIdempotencyConflict: 409, gateway.EBodyTooLarge: 413,
		gateway.ERecipientOptedOut: 422, gateway.EConsentRequired: 422, gateway.EOutsideWindow: 422,
		gateway.ESubjectErased: 422, gateway.ESubjectRestricted: 422, gateway.ERateLimited: 429,
		gateway.EUnavailable: 503, gateway.ETimeout: 504, gateway.EInternal: 500, gateway.EChannelError: 500, "no_such_code": 500,
	} {
		if got := api.HTTPStatus(code); got != want {
			t.Errorf("HTTPStatus(%s) = %d, want %d", code, got, want)
		}
	}
}

// TestSlowBody: a client that stops sending its body mid-way gets 504 timeout when the
// handler deadline passes, instead of holding the handler forever.
func TestSlowBody(t *testing.T) {
	e := newEnv(t, func(c *api.Config, _ *api.Deps) { c.Timeout = 200 * time.Millisecond })
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go func() { _, _ = pw.Write([]byte(`{"channel":"whatsapp",`)) }() // and then nothing
	hr, _ := http.NewRequest("POST", e.srv.URL+"/v1/messages", pr)
	hr.Header.Set("Authorization", "Bearer "+secretAcme)
	res, err := e.srv.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != 504 || !bytes.Contains(raw, []byte(`"code":"timeout"`)) {
		t.Fatalf("%d %s", res.StatusCode, raw)
	}
}
