package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
)

// fakeAccounts answers GET /v1/accounts per tenant.
type fakeAccounts map[string][]api.Account

func (f fakeAccounts) Accounts(_ context.Context, tenant string) ([]api.Account, error) {
	return f[tenant], nil
}

// fakeLinker plays a script: its steps, then its result. With hold set, it waits for ctx to end
// after the steps (a person who never scans) and reports the cancellation on cancelled.
type fakeLinker struct {
	steps     []api.LinkEvent
	err       error
	hold      bool
	started   chan string // tenant|account|phone of each link
	cancelled chan struct{}
}

func newFakeLinker() *fakeLinker {
	return &fakeLinker{started: make(chan string, 10), cancelled: make(chan struct{}, 10)}
}

func (f *fakeLinker) Link(ctx context.Context, tenant, account, phone string, emit func(api.LinkEvent)) (string, error) {
	f.started <- tenant + "|" + account + "|" + phone
	for _, s := range f.steps {
		emit(s)
	}
	if f.hold {
		<-ctx.Done()
		f.cancelled <- struct{}{}
		return "", gateway.WrapError(gateway.ETimeout, ctx.Err(), "linking was cancelled")
	}
	if f.err != nil {
		return "", f.err
	}
	return "+49******5678", nil
}

// sseEvent is one event of a text/event-stream.
type sseEvent struct {
	event string
	data  map[string]any
}

// readSSE parses events from r until it ends (or n events when n > 0).
func readSSE(t *testing.T, r io.Reader, n int) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
				t.Fatalf("data is not JSON: %q", line)
			}
		case line == "" && cur.event != "":
			out = append(out, cur)
			cur = sseEvent{}
			if n > 0 && len(out) == n {
				return out
			}
		}
	}
	return out
}

func eventNames(evs []sseEvent) string {
	var names []string
	for _, e := range evs {
		names = append(names, e.event)
	}
	return strings.Join(names, ",")
}

func TestListAccounts(t *testing.T) {
	since := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	accts := fakeAccounts{
		"acme": {
			{Channel: gateway.WhatsApp, Account: "sales", Driver: "whatsmeow", State: api.AccountUnlinked, Since: &since, Linkable: true},
			{Channel: gateway.Teams, Account: "ops", Driver: "graph", State: api.AccountReady},
		},
	}
	e := newEnv(t, func(_ *api.Config, d *api.Deps) { d.Accounts = accts })
	r := e.do(req{method: "GET", path: "/v1/accounts", secret: secretAcme})
	want := `{"accounts":[{"channel":"whatsapp","account":"sales","driver":"whatsmeow","state":"unlinked","since":"2026-11-22T08:00:00Z","linkable":true},{"channel":"teams","account":"ops","driver":"graph","state":"ready","linkable":false}]}`
	if r.status != 200 || strings.TrimSpace(string(r.raw)) != want {
		t.Errorf("acme: %d %s", r.status, r.raw)
	}
	if r := e.do(req{method: "GET", path: "/v1/accounts", secret: secretBeta}); r.status != 200 || strings.TrimSpace(string(r.raw)) != `{"accounts":[]}` {
		t.Errorf("beta sees: %d %s", r.status, r.raw)
	}
	if r := e.do(req{method: "GET", path: "/v1/accounts"}); r.status != 401 {
		t.Errorf("without a key: %d", r.status)
	}
}

// postLink starts a link and returns the open response.
func (e *env) postLink(path, secret, body string) *http.Response {
	e.t.Helper()
	hr, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+secret)
	res, err := e.srv.Client().Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { res.Body.Close() })
	return res
}

// waitLinksEnded waits for the access log lines of n link streams: each is written after its
// handler returned and released the account.
func (e *env) waitLinksEnded(n int) {
	e.t.Helper()
	deadline := time.After(10 * time.Second)
	for n > 0 {
		select {
		case line := <-e.logs.ch:
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["event"] == "access" &&
				m["route"] == "POST /v1/accounts/{channel}/{account}/link" && m["status"] == float64(200) {
				n--
			}
		case <-deadline:
			e.t.Fatalf("%d link streams did not end", n)
		}
	}
}

func TestLinkStream(t *testing.T) {
	qr := func(code string) api.LinkEvent {
		return api.LinkEvent{Type: api.LinkEventQR, Code: code, Expires: 20 * time.Second}
	}
	tests := []struct {
		name      string
		body      string
		steps     []api.LinkEvent
		err       error
		wantPhone string
		want      string
		last      map[string]any
	}{
		{name: "qr codes then success", steps: []api.LinkEvent{qr("2@a"), qr("2@b")},
			want: "qr,qr,success", last: map[string]any{"phone": "+49******5678", "message": "linked"}},
		{name: "pairing code", body: `{"phone":"+49 151 12345678"}`, wantPhone: "+4915112345678",
			steps: []api.LinkEvent{{Type: api.LinkEventPairingCode, Code: "ABCD-EFGH", Message: "type it"}},
			want:  "pairing_code,success"},
		{name: "not scanned in time", steps: []api.LinkEvent{qr("2@a")},
			err:  gateway.Errorf(gateway.ETimeout, "the QR code was not scanned in time"),
			want: "qr,timeout", last: map[string]any{"code": "timeout", "message": "the QR code was not scanned in time"}},
		{name: "error after a code", steps: []api.LinkEvent{qr("2@a")},
			err:  gateway.Errorf(gateway.EUnavailable, "pairing failed"),
			want: "qr,error", last: map[string]any{"code": "unavailable", "message": "pairing failed"}},
		{name: "internal error hides details", steps: []api.LinkEvent{qr("2@a")},
			err:  gateway.Errorf(gateway.EInternal, "disk /var/lib/x full"),
			want: "qr,error", last: map[string]any{"code": "internal", "message": "internal error"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newFakeLinker()
			l.steps, l.err = tc.steps, tc.err
			e := newEnv(t, func(_ *api.Config, d *api.Deps) { d.Linker = l })
			res := e.postLink("/v1/accounts/whatsapp/sales/link", secretAcme, tc.body)
			if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("%d %s", res.StatusCode, res.Header.Get("Content-Type"))
			}
			evs := readSSE(t, res.Body, 0) // the stream ends by itself
			if got := eventNames(evs); got != tc.want {
				t.Fatalf("events %s, want %s", got, tc.want)
			}
			if got := <-l.started; got != "acme|sales|"+tc.wantPhone {
				t.Errorf("linker got %q", got)
			}
			if tc.steps[0].Type == api.LinkEventQR && (evs[0].data["qr"] != "2@a" || evs[0].data["expires_in"] != float64(20)) {
				t.Errorf("qr data %v", evs[0].data)
			}
			if tc.last != nil {
				got, _ := json.Marshal(evs[len(evs)-1].data)
				want, _ := json.Marshal(tc.last)
				if !bytes.Equal(got, want) {
					t.Errorf("last event data %s, want %s", got, want)
				}
			}
		})
	}
}

func TestLinkBadInput(t *testing.T) {
	l := newFakeLinker()
	l.err = gateway.Errorf(gateway.EConflict, "this account is already linked")
	e := newEnv(t, func(_ *api.Config, d *api.Deps) { d.Linker = l })
	tests := []struct {
		name, path, secret, body string
		status                   int
		code, field              string
	}{
		{"unknown account", "/v1/accounts/whatsapp/nope/link", secretAcme, "", 404, "not_found", ""},
		{"other tenant's account", "/v1/accounts/whatsapp/main/link", secretAcme, "", 404, "not_found", ""},
		{"teams account", "/v1/accounts/teams/ops/link", secretAcme, "", 400, "invalid_field", "channel"},
		{"unknown channel", "/v1/accounts/sms/sales/link", secretAcme, "", 400, "unknown_channel", "channel"},
		{"bad phone", "/v1/accounts/whatsapp/sales/link", secretAcme, `{"phone":"12"}`, 400, "invalid_recipient", "phone"},
		{"unknown field", "/v1/accounts/whatsapp/sales/link", secretAcme, `{"number":"+4915112345678"}`, 400, "unknown_field", "number"},
		{"no key", "/v1/accounts/whatsapp/sales/link", "", "", 401, "unauthorized", ""},
		// An error before any step is an ordinary answer with its status.
		{"already linked", "/v1/accounts/whatsapp/sales/link", secretAcme, "", 409, "conflict", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(req{method: "POST", path: tc.path, secret: tc.secret, body: tc.body})
			if r.status != tc.status || r.errorField("code") != tc.code || r.errorField("field") != tc.field {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
	}
	if n := len(l.started); n != 1 {
		t.Errorf("the linker ran %d times; only the well-formed request should reach it", n)
	}
}

func TestLinkOneAtATimeAndCancel(t *testing.T) {
	l := newFakeLinker()
	l.steps = []api.LinkEvent{{Type: api.LinkEventQR, Code: "2@a"}}
	l.hold = true
	e := newEnv(t, func(_ *api.Config, d *api.Deps) { d.Linker = l })
	first := e.postLink("/v1/accounts/whatsapp/sales/link", secretAcme, "")
	if evs := readSSE(t, first.Body, 1); eventNames(evs) != "qr" {
		t.Fatalf("first link: %v", evs)
	}
	r := e.do(req{method: "POST", path: "/v1/accounts/whatsapp/sales/link", secret: secretAcme})
	if r.status != 409 || r.errorField("code") != "link_in_progress" {
		t.Fatalf("second link of the same account: %d %s", r.status, r.raw)
	}
	// Another account links meanwhile.
	other := e.postLink("/v1/accounts/whatsapp/support/link", secretAcme, "")
	if evs := readSSE(t, other.Body, 1); eventNames(evs) != "qr" {
		t.Fatalf("other account: %v", evs)
	}

	// The client leaving cancels the link, and the account can be linked again.
	first.Body.Close()
	<-l.cancelled
	other.Body.Close()
	<-l.cancelled
	e.waitLinksEnded(2) // the handlers returned: the account is free again
	l.hold = false
	again := e.postLink("/v1/accounts/whatsapp/sales/link", secretAcme, "")
	if evs := readSSE(t, again.Body, 0); eventNames(evs) != "qr,success" {
		t.Fatalf("after the cancel: %d %v", again.StatusCode, evs)
	}
}

func TestReadyzShowsAccountState(t *testing.T) {
	e := newEnv(t, func(_ *api.Config, d *api.Deps) {
		d.Ready = []api.ReadyCheck{{
			Name:  "whatsapp/acme/sales",
			Check: func(context.Context) error { return gateway.Errorf(gateway.EUnavailable, "unlinked") },
			State: func() string { return api.AccountUnlinked },
		}}
	})
	r := e.do(req{method: "GET", path: "/readyz"})
	if r.status != 503 || !bytes.Contains(r.raw, []byte(`{"name":"whatsapp/acme/sales","status":"failed","state":"unlinked"}`)) {
		t.Errorf("readyz: %d %s", r.status, r.raw)
	}
}
