package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters/teams/teamsfake"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
)

// runCLI runs one switchboard command in-process and returns what it printed.
func runCLI(t *testing.T, ctx context.Context, hc *http.Client, args ...string) (string, error) {
	t.Helper()
	out, errOut := &gatewaytest.LogBuffer{}, &gatewaytest.LogBuffer{} // serve logs from many goroutines
	root := newRoot(&globals{stdout: out, stderr: errOut, channelHTTP: hc})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String() + errOut.String(), err
}

// TestTeamsThroughTheBinary runs the real Teams driver as `switchboard` wires it — config,
// encrypted credential store, msgraph SDK, notification routes — against fakes of Microsoft's
// identity platform and Graph: `teams login` (device code), `teams accounts`, then `serve`, a send
// to a chat, and Graph's validation handshake on the notification endpoint.
func TestTeamsThroughTheBinary(t *testing.T) {
	auth := teamsfake.NewAuthority(t)
	graph := teamsfake.NewGraph(t, auth)
	hc := auth.Client() // httptest's TLS servers share one certificate: this client trusts both fakes
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "switchboard.yaml")
	listen := freePort(t)
	cfg := fmt.Sprintf(`
data_dir: %s
server: {listen: %q}
tenants:
  - id: acme
    channels:
      teams:
        accounts:
          - name: ops
            driver: graph
            graph: {tenant_id: %s, client_id: %s, authority_url: %q, graph_url: %q}
`, dir, listen, teamsfake.TenantID, teamsfake.ClientID, auth.URL(), graph.URL())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	out, err := runCLI(t, ctx, hc, "teams", "login", "--config", cfgPath, "--dev", "--tenant", "acme", "--account", "ops")
	if err != nil || !strings.Contains(out, "logged in as svc@example.com") {
		t.Fatalf("teams login: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, hc, "teams", "accounts", "--config", cfgPath, "--dev")
	if err != nil || !strings.Contains(out, "acme    ops      graph   ok") {
		t.Fatalf("teams accounts: %v\n%s", err, out)
	}
	for _, tok := range auth.Tokens() {
		if b, _ := os.ReadFile(filepath.Join(dir, "switchboard.db")); bytes.Contains(b, []byte(tok)) {
			t.Fatalf("token %q is in the database in plaintext", tok)
		}
	}
	key, err := runCLI(t, ctx, hc, "keys", "create", "--config", cfgPath, "--tenant", "acme")
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, key)
	}
	key = strings.TrimSpace(strings.Split(key, "\n")[0])

	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		_, err := runCLI(t, serveCtx, hc, "serve", "--config", cfgPath, "--dev")
		served <- err
	}()
	base := "http://" + listen
	waitServing(t, base, served)

	req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(`{"to":"teams:chat:19:abc@thread.v2","text":"deploy <b>done</b>"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("send: HTTP %d", resp.StatusCode)
	}
	got := graph.WaitFor(t, http.MethodPost, "/v1.0/chats/19:abc@thread.v2/messages")
	if !auth.Valid(strings.TrimPrefix(got.Auth, "Bearer ")) {
		t.Errorf("Graph saw no valid bearer token: %q", got.Auth)
	}
	body, _ := json.Marshal(got.Body)
	if !strings.Contains(string(body), `deploy \u0026lt;b\u0026gt;done\u0026lt;/b\u0026gt;`) {
		t.Errorf("the body was not HTML-escaped: %s", body)
	}

	// Mentions and an Adaptive Card travel from the API to Graph.
	req, _ = http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(
		`{"to":"teams:chat:19:abc@thread.v2","text":"please look","teams":{"mentions":[{"id":"aad-ann","name":"Ann"}],"adaptive_card":{"type":"AdaptiveCard","version":"1.5"}}}`))
	req.Header.Set("Authorization", "Bearer "+key)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("send with mentions: HTTP %d", resp.StatusCode)
	}
	got = graph.WaitFor(t, http.MethodPost, "/v1.0/chats/19:abc@thread.v2/messages")
	body, _ = json.Marshal(got.Body)
	for _, want := range []string{`\u003cat id=\"0\"\u003eAnn\u003c/at\u003e`, `"mentions":[{`, `aad-ann`, `application/vnd.microsoft.card.adaptive`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("Graph body lacks %s: %s", want, body)
		}
	}

	// Graph's subscription handshake reaches the adapter without an API key, on every Teams route
	// the served OpenAPI document lists, with the document's example token.
	for path, token := range teamsHandshakes(t, base) {
		resp, err = http.Post(base+path+"?validationToken="+url.QueryEscape(token), "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		echo, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(echo) != token || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("validation handshake on %s: %d %q %q", path, resp.StatusCode, echo, resp.Header.Get("Content-Type"))
		}
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// serveInBackground runs serve (a `serve` command) until the test ends and returns the base URL
// once the gateway on listen is ready.
func serveInBackground(t *testing.T, listen string, serve func(ctx context.Context) (string, error)) string {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		out, err := serve(ctx)
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, out)
		}
		served <- err
		close(served) // if waitServing took the error, the cleanup reads nil instead of blocking
	}()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	base := "http://" + listen
	waitServing(t, base, served)
	return base
}

// teamsHandshakes reads /v1/openapi.json from the running binary: each documented Teams route with
// its validationToken example.
func teamsHandshakes(t *testing.T, base string) map[string]string {
	t.Helper()
	resp, err := http.Get(base + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name    string `json:"name"`
				Example any    `json:"example"` // other routes' examples are numbers too
			} `json:"parameters"`
		} `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/v1/channels/teams/") {
			continue
		}
		for _, p := range ops["post"].Parameters {
			if ex, ok := p.Example.(string); ok && p.Name == "validationToken" {
				out[path] = ex
			}
		}
		if out[path] == "" {
			t.Errorf("%s documents no validationToken example", path)
		}
	}
	if len(out) != 2 {
		t.Errorf("documented Teams routes: %v, want notifications and lifecycle", out)
	}
	return out
}

// waitServing polls /readyz of a server started in the background (it answers over HTTP only).
func waitServing(t *testing.T, base string, served <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-served:
			t.Fatalf("serve returned: %v", err)
		default:
		}
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the gateway was not ready within 30s")
}
