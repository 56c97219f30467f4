package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/store"
)

// statuses remembers every status the recorder moved a message to, and wakes waiters.
type statuses struct {
	mu      sync.Mutex
	reached map[string]map[gateway.Status]bool
	changed chan struct{}
}

func (s *statuses) record(applied []store.Applied) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range applied {
		if !a.Advanced {
			continue
		}
		if s.reached[a.Event.MessageID] == nil {
			s.reached[a.Event.MessageID] = map[gateway.Status]bool{}
		}
		s.reached[a.Event.MessageID][a.Event.Status] = true
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *statuses) has(id string, st gateway.Status) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reached[id][st], s.changed
}

// gw is a gateway running in the test process on a loopback port.
type gw struct {
	t       *testing.T
	dir     string
	url     string
	keys    map[string]string // tenant → API key
	log     *gatewaytest.LogBuffer
	seen    *statuses
	stop    func()
	stopped chan struct{}
}

const twoTenants = `
data_dir: %s
server: {listen: "127.0.0.1:0"}
tenants:
  - id: demo
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts:
          - name: sales
            driver: sandbox
            sandbox: {delivered_after: 5ms, read_after: 10ms, fail: ["+61491570156"], fail_code: not_on_whatsapp}
      teams:
        accounts: [{name: ops, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
  - id: other
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts: [{name: support, driver: sandbox}]
`

func startGateway(t *testing.T, dir string, options ...func(*server.Options)) *gw {
	t.Helper()
	return startGatewayWith(t, dir, twoTenants, options...)
}

// startGatewayWith runs the gateway on yaml, a configuration with %s for the data dir.
func startGatewayWith(t *testing.T, dir, yaml string, options ...func(*server.Options)) *gw {
	t.Helper()
	return startWithConfig(t, dir, fmt.Sprintf(yaml, dir), options...)
}

// startWithConfig runs the gateway on a complete configuration whose data dir is dir.
func startWithConfig(t *testing.T, dir, yaml string, options ...func(*server.Options)) *gw {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	g := &gw{t: t, dir: dir, keys: map[string]string{}, log: &gatewaytest.LogBuffer{}, stopped: make(chan struct{})}
	g.seen = &statuses{reached: map[string]map[gateway.Status]bool{}, changed: make(chan struct{})}
	opts := server.Options{
		Dev:       true,
		Log:       zerolog.New(g.log).With().Timestamp().Logger(),
		OnApplied: func(_ context.Context, applied []store.Applied) { g.seen.record(applied) },
	}
	for _, o := range options {
		o(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g.url = "http://" + srv.Addr()
	for _, tenant := range cfg.Tenants {
		b, err := os.ReadFile(filepath.Join(dir, tenant.ID+".apikey"))
		if err != nil {
			t.Fatal(err)
		}
		g.keys[tenant.ID] = strings.TrimSpace(string(b))
	}
	go func() {
		defer close(g.stopped)
		if err := srv.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	g.stop = func() { cancel(); <-g.stopped }
	t.Cleanup(g.stop)
	return g
}

func (g *gw) do(method, path, tenant string, body any, out any) int {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, g.url+path, rd)
	if tenant != "" {
		req.Header.Set("Authorization", "Bearer "+g.keys[tenant])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			g.t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func (g *gw) send(tenant string, body map[string]any) string {
	g.t.Helper()
	var out struct{ ID, Status string }
	if code := g.do(http.MethodPost, "/v1/messages", tenant, body, &out); code != http.StatusAccepted {
		g.t.Fatalf("send: HTTP %d", code)
	}
	return out.ID
}

// waitFor waits until the recorder applied an event that moved message id to want.
func (g *gw) waitFor(id string, want gateway.Status) {
	g.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		ok, changed := g.seen.has(id, want)
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			g.t.Fatalf("message %s never reached %s", id, want)
		}
	}
}

func TestSendReachesReadWithOneLogLinePerTransition(t *testing.T) {
	g := startGateway(t, t.TempDir())
	id := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "tour text"})
	g.waitFor(id, gateway.StatusRead)

	var m struct {
		Status  string
		History []struct{ Status string }
	}
	if code := g.do(http.MethodGet, "/v1/messages/"+id, "demo", nil, &m); code != http.StatusOK {
		t.Fatalf("GET: %d", code)
	}
	var statuses []string
	for _, h := range m.History {
		statuses = append(statuses, h.Status)
	}
	if m.Status != "read" || strings.Join(statuses, ",") != "accepted,queued,sent,delivered,read" {
		t.Fatalf("status %q history %v", m.Status, statuses)
	}

	var lines []map[string]any
	for _, l := range strings.Split(g.log.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["event"] == "delivery" && rec["msg_id"] == id {
			lines = append(lines, rec)
		}
	}
	if len(lines) != 5 {
		t.Fatalf("want 5 delivery lines (one per status), got %d: %v", len(lines), lines)
	}
	for _, l := range lines {
		if l["to"] != "+49******5678" || !strings.HasPrefix(fmt.Sprint(l["subject"]), "s_") || l["tenant"] != "demo" {
			t.Errorf("log line fields: %v", l)
		}
	}
	if strings.Contains(g.log.String(), "4915112345678") || strings.Contains(g.log.String(), "tour text") {
		t.Error("the log holds the number or the text")
	}
}

func TestTeamsAndFailureOutcomes(t *testing.T) {
	g := startGateway(t, t.TempDir())
	teams := g.send("demo", map[string]any{"to": "teams:chat:19:abc@thread.v2", "text": "deploy done"})
	failed := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+61491570156", "text": "hello"})
	g.waitFor(teams, gateway.StatusRead)
	g.waitFor(failed, gateway.StatusFailed)
	var m struct {
		Status string
		Error  *struct{ Code string }
	}
	g.do(http.MethodGet, "/v1/messages/"+failed, "demo", nil, &m)
	if m.Status != "failed" || m.Error == nil || m.Error.Code != "not_on_whatsapp" {
		t.Fatalf("failed message error: %+v", m.Error)
	}
}

func TestBadInputThroughTheRealGateway(t *testing.T) {
	g := startGateway(t, t.TempDir())
	own := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "mine"})
	tests := []struct {
		name, method, path, tenant string
		body                       any
		status                     int
		code, field                string
	}{
		{"unknown account", "POST", "/v1/messages", "demo", map[string]any{"channel": "whatsapp", "from": "nope", "to": "+4915112345678", "text": "x"}, 400, "unknown_account", "from"},
		{"other tenant's account", "POST", "/v1/messages", "other", map[string]any{"channel": "whatsapp", "from": "sales", "to": "+4915112345678", "text": "x"}, 400, "unknown_account", "from"},
		{"channel the tenant lacks", "POST", "/v1/messages", "other", map[string]any{"to": "teams:chat:19:abc", "text": "x"}, 400, "unknown_account", ""},
		{"invalid number", "POST", "/v1/messages", "demo", map[string]any{"channel": "whatsapp", "to": "+49123", "text": "x"}, 400, "invalid_recipient", "to"},
		{"other tenant's message", "GET", "/v1/messages/" + own, "other", nil, 404, "not_found", ""},
		{"no key", "GET", "/v1/messages/" + own, "", nil, 401, "unauthorized", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out struct {
				Error struct{ Code, Field string } `json:"error"`
			}
			status := g.do(tt.method, tt.path, tt.tenant, tt.body, &out)
			if status != tt.status || out.Error.Code != tt.code || (tt.field != "" && out.Error.Field != tt.field) {
				t.Fatalf("got %d %+v, want %d %s %s", status, out.Error, tt.status, tt.code, tt.field)
			}
		})
	}
}

// TestNoPlaintextAtRest sends a distinctive text and reads every byte the gateway left under its
// data dir — SQLite files, the JetStream store, the sandbox ledger — looking for it.
func TestNoPlaintextAtRest(t *testing.T) {
	dir := t.TempDir()
	g := startGateway(t, dir)
	const text = "Zebra-quartz-7741 your invoice is ready"
	const number = "+4915112349876"
	id := g.send("demo", map[string]any{"channel": "whatsapp", "to": number, "text": text, "metadata": map[string]string{"order": "Ocelot-5512"}})
	g.waitFor(id, gateway.StatusRead)
	var m struct{ Content struct{ Text string } }
	g.do(http.MethodGet, "/v1/messages/"+id+"?include=content", "demo", nil, &m)
	if m.Content.Text != text {
		t.Fatalf("content does not round-trip: %q", m.Content.Text)
	}
	g.stop()

	needles := []string{"Zebra-quartz-7741", "Ocelot-5512", number, strings.TrimPrefix(number, "+")}
	requireNoPlaintext(t, dir, needles...)
}

// requireNoPlaintext reads every file the gateway left under dir (SQLite files, the JetStream
// store, ledgers) and fails for each needle it finds in the clear.
func requireNoPlaintext(t *testing.T, dir string, needles ...string) {
	t.Helper()
	for _, n := range needles {
		paths, read := gatewaytest.FilesHolding(t, dir, []byte(n))
		if read < 5 {
			t.Fatalf("only %d files read: is the data dir the right one?", read)
		}
		for _, p := range paths {
			t.Errorf("%s holds %q in plaintext", p, n)
		}
	}
}
