package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

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
