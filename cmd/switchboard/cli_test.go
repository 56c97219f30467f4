package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigCheckPrintsEveryProblemWithItsLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`server:
  listen: ":8080"
  max_body: lots
tenants:
  - id: acme
    channels:
      whatsapp:
        accounts:
          - name: sales
            driver: carrier-pigeon
`), 0o600)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("tenants:\n  - id: acme\n    channels:\n      whatsapp: {accounts: [{name: sales, driver: sandbox}]}\n"), 0o600)

	out, err := runCLI(t, t.Context(), nil, "config", "check", bad)
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 1 {
		t.Fatalf("want exit status 1, got %v\n%s", err, out)
	}
	for _, want := range []string{
		"bad.yaml:3: server.max_body:",
		"bad.yaml:10: tenants[0].channels.whatsapp.accounts[0].driver:",
		"2 problem(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if out, err := runCLI(t, t.Context(), nil, "config", "check", good); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("a good file: %v\n%s", err, out)
	}
	if _, err := runCLI(t, t.Context(), nil, "config", "check", filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("a missing file passed")
	}
}

// TestLogsFollowShowsStatusChangesLive runs `serve --dev` and `logs -f` side by side, as an
// operator would in two terminals, and reads the status changes of a send as they happen.
func TestLogsFollowShowsStatusChangesLive(t *testing.T) {
	dir := t.TempDir()
	listen := freePort(t)
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	base := serveInBackground(t, listen, func(ctx context.Context) (string, error) {
		return runCLI(t, ctx, nil, "serve", "--dev", "--data-dir", dir, "--listen", listen)
	})

	pr, pw := io.Pipe()
	followed := make(chan error, 1)
	go func() {
		root := newRoot(&globals{stdout: pw, stderr: io.Discard})
		root.SetArgs([]string{"logs", "-f", "--from-start", "--dev", "--data-dir", dir, "--tenant", "demo"})
		followed <- root.ExecuteContext(ctx)
		pw.Close()
	}()

	key := demoKey(t, dir)
	// --from-start: the follower sees the send's events even if it subscribes after them.
	lines := bufio.NewScanner(pr)
	send := func() string {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(`{"to":"teams:chat:19:ops@thread.v2","text":"deploy done"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		io.Copy(&b, resp.Body)
		id := b.String()
		id = id[strings.Index(id, "msg_"):]
		return id[:strings.IndexByte(id, '"')]
	}
	id := send()
	seen := map[string]bool{}
	for lines.Scan() {
		l := lines.Text()
		if !strings.Contains(l, id) {
			continue
		}
		for _, st := range []string{"queued", "sent", "delivered", "read"} {
			if strings.Contains(l, " "+st) {
				seen[st] = true
			}
		}
		if !strings.Contains(l, "demo") || !strings.Contains(l, "teams/ops") {
			t.Errorf("line lacks tenant or account: %q", l)
		}
		if seen["read"] {
			break
		}
	}
	if !seen["read"] || !seen["delivered"] {
		t.Fatalf("followed statuses %v, want through read", seen)
	}
	go io.Copy(io.Discard, pr) // keep the follower's writes flowing until it sees the cancel
	stop()
	if err := <-followed; err != nil {
		t.Errorf("logs -f: %v", err)
	}
}
