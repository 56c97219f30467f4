package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway/server"
)

func TestAccountsAndSandboxLink(t *testing.T) {
	g := startGateway(t, t.TempDir(), func(o *server.Options) { o.SandboxLinkStep = time.Millisecond })

	var list struct {
		Accounts []struct {
			Channel, Account, Driver, State string
			Linkable                        bool
		}
	}
	if code := g.do(http.MethodGet, "/v1/accounts", "demo", nil, &list); code != 200 {
		t.Fatalf("GET /v1/accounts: %d", code)
	}
	got, _ := json.Marshal(list.Accounts)
	want := `[{"Channel":"whatsapp","Account":"sales","Driver":"sandbox","State":"ready","Linkable":true},{"Channel":"teams","Account":"ops","Driver":"sandbox","State":"ready","Linkable":false}]`
	if string(got) != want {
		t.Errorf("demo's accounts:\n%s\nwant\n%s", got, want)
	}
	if g.do(http.MethodGet, "/v1/accounts", "other", nil, &list); len(list.Accounts) != 1 || list.Accounts[0].Account != "support" {
		t.Errorf("other's accounts: %+v", list.Accounts)
	}

	// The sandbox simulates a link: QR codes, then success; the stream ends by itself.
	code, body := g.raw(http.MethodPost, "/v1/accounts/whatsapp/sales/link", "demo")
	var events []string
	for _, line := range strings.Split(body, "\n") {
		if ev, ok := strings.CutPrefix(line, "event: "); ok {
			events = append(events, ev)
		}
	}
	if code != 200 || strings.Join(events, ",") != "qr,qr,success" || !strings.Contains(body, `"qr":"sandbox-link:whatsapp:sales:1:`) {
		t.Fatalf("link: %d %s", code, body)
	}
	if code, body := g.raw(http.MethodPost, "/v1/accounts/whatsapp/sales/link", "other"); code != 404 || !strings.Contains(body, `"not_found"`) {
		t.Errorf("another tenant's account: %d %s", code, body)
	}
	if code, body := g.raw(http.MethodPost, "/v1/accounts/teams/ops/link", "demo"); code != 400 || !strings.Contains(body, `"field":"channel"`) {
		t.Errorf("a teams account: %d %s", code, body)
	}
}

func TestDashboardIsServedBesideTheAPI(t *testing.T) {
	g := startGateway(t, t.TempDir())
	resp, err := http.Get(g.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("GET /: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
	}
	if code, body := g.raw(http.MethodGet, "/v1/nothing", "demo"); code != 404 || !strings.Contains(body, `"not_found"`) {
		t.Errorf("the API's 404: %d %s", code, body)
	}
}

// fakeWhatsApp is a driver's adapter as the server sees a whatsmeow account: gated, with a
// connection state, and a device link (the real one is adapters/whatsapp's LinkDevice).
type fakeWhatsApp struct {
	mu     sync.Mutex
	linked bool
	phones chan string
}

func (f *fakeWhatsApp) NewChannelMessageID() string { return "" }
func (f *fakeWhatsApp) Send(context.Context, adapters.Outbound) (string, error) {
	return "", errors.New("not linked")
}
func (f *fakeWhatsApp) Run(ctx context.Context, _ adapters.Sink) error { <-ctx.Done(); return nil }
func (f *fakeWhatsApp) WaitReady(ctx context.Context) error            { <-ctx.Done(); return ctx.Err() }
func (f *fakeWhatsApp) WaitNotReady(context.Context) error             { return nil }
func (f *fakeWhatsApp) Paused() (bool, string, time.Time)              { return true, "unlinked", time.Time{} }

func (f *fakeWhatsApp) AccountState() adapters.AccountState {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.linked {
		at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
		return adapters.AccountState{State: "connected", Since: at, LastConnected: at, LastSeenPhone: at.Add(-time.Hour)}
	}
	return adapters.AccountState{State: "unlinked", Detail: "link it"}
}

func (f *fakeWhatsApp) LinkDevice(_ context.Context, phone string, step func(kind, code, message string, expires time.Duration)) (string, error) {
	f.phones <- phone
	step("qr", "2@one", "", 20*time.Second)
	step("qr", "2@two", "", 20*time.Second)
	f.mu.Lock()
	f.linked = true
	f.mu.Unlock()
	return "+49******0001", nil
}

const whatsmeowTenant = `
data_dir: %s
server: {listen: "127.0.0.1:0"}
tenants:
  - id: acme
    channels:
      whatsapp:
        accounts: [{name: wa, driver: whatsmeow}]
`

func TestWhatsMeowAccountStateAndLink(t *testing.T) {
	wa := &fakeWhatsApp{phones: make(chan string, 1)}
	g := startGatewayWith(t, t.TempDir(), whatsmeowTenant, func(o *server.Options) {
		o.Drivers = map[string]server.DriverFactory{
			config.DriverWhatsMeow: func(context.Context, server.DriverEnv) (adapters.Adapter, error) { return wa, nil },
		}
	})

	// An unlinked account says so in GET /v1/accounts and beside its failed readiness check.
	var list struct{ Accounts []map[string]any }
	g.do(http.MethodGet, "/v1/accounts", "acme", nil, &list)
	got, _ := json.Marshal(list.Accounts)
	if want := `[{"account":"wa","channel":"whatsapp","detail":"link it","driver":"whatsmeow","linkable":true,"state":"unlinked"}]`; string(got) != want {
		t.Errorf("accounts:\n%s\nwant\n%s", got, want)
	}
	// Until the runner holds the account's lease it stands by and counts as ready: poll.
	var body []byte
	g.eventually("readyz fails on the unlinked account", func() bool {
		resp, err := http.Get(g.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	if !strings.Contains(string(body), `{"name":"whatsapp/acme/wa","status":"failed","state":"unlinked"}`) {
		t.Errorf("readyz: %s", body)
	}
	if _, metrics := g.raw(http.MethodGet, "/metrics", ""); !strings.Contains(metrics, `switchboard_account_state{account="wa",channel="whatsapp",state="unlinked",tenant="acme"} 1`) {
		t.Errorf("no unlinked state in /metrics:\n%s", metrics)
	}

	// The link runs the driver's flow; the pairing-code variant gets the number in E.164.
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/accounts/whatsapp/wa/link", strings.NewReader(`{"phone":"+49 151 00000001"}`))
	req.Header.Set("Authorization", "Bearer "+g.keys["acme"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "event: qr\ndata: {\"expires_in\":20,\"qr\":\"2@two\"}") ||
		!strings.HasSuffix(string(body), "event: success\ndata: {\"message\":\"linked\",\"phone\":\"+49******0001\"}\n\n") {
		t.Fatalf("link: %d %s", resp.StatusCode, body)
	}
	if phone := <-wa.phones; phone != "+4915100000001" {
		t.Errorf("the driver got phone %q", phone)
	}
	g.do(http.MethodGet, "/v1/accounts", "acme", nil, &list)
	if list.Accounts[0]["state"] != "connected" || list.Accounts[0]["last_connected"] != "2026-11-22T09:00:00Z" || list.Accounts[0]["last_seen_phone"] != "2026-11-22T08:00:00Z" {
		t.Errorf("after the link: %v", list.Accounts[0])
	}
}

// A link left open in a browser ends when the gateway shuts down, with a timeout event.
func TestShutdownEndsALink(t *testing.T) {
	g := startGateway(t, t.TempDir(), func(o *server.Options) { o.SandboxLinkStep = time.Hour })
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/accounts/whatsapp/sales/link", nil)
	req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("event: qr"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "event: qr" {
		t.Fatalf("first event %q %v", first, err)
	}
	stopped := make(chan struct{})
	go func() { g.stop(); close(stopped) }()
	rest, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(rest), "event: timeout\ndata: {\"code\":\"timeout\",\"message\":\"linking was cancelled\"}") {
		t.Errorf("the stream ended with %q", rest)
	}
	<-stopped
}
