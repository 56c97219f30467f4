package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters/sandbox"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
)

// The test binary doubles as the switchboard binary: with SWITCHBOARD_TEST_MAIN set it runs main
// with the arguments that follow "--", so the crash test can kill a real server process.
func TestMain(m *testing.M) {
	if os.Getenv("SWITCHBOARD_TEST_MAIN") == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{"switchboard"}, os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a switchboard serve process.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited; err is then set
	err    error
	out    *gatewaytest.LogBuffer
}

func startChild(t *testing.T, dir, listen string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "serve", "--config", filepath.Join(dir, "switchboard.yaml"), "--dev")
	cmd.Env = append(os.Environ(), "SWITCHBOARD_TEST_MAIN=1", "SWITCHBOARD_SERVER_LISTEN="+listen)
	out := &gatewaytest.LogBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{}), out: out}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-c.exited })
	return c
}

// waitReady polls /readyz of a process we only reach over HTTP.
// demoKey reads the API key that serve --dev wrote for tenant demo.
func demoKey(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "demo.apikey"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func waitReady(t *testing.T, c *child, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			t.Fatalf("server exited: %v\n%s", c.err, c.out)
		default:
		}
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("server not ready within 60s")
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestSIGKILLDuringBurstLosesAndDoublesNothing kills the server with SIGKILL in the middle of a
// 5,000-message burst, restarts it, retries the sends whose answer was lost (same Idempotency-Key,
// as an integrator would), and checks that every message ends read exactly once and that the
// sandbox network took each message once.
func TestSIGKILLDuringBurstLosesAndDoublesNothing(t *testing.T) {
	const total = 5000
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
data_dir: %s
server: {rate_limit: {requests_per_second: 0}}
bus: {ack_wait: 3s}
tenants:
  - id: demo
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts: [{name: sales, driver: sandbox, sandbox: {delivered_after: 2ms, read_after: 4ms}}]
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "switchboard.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	base := "http://" + listen
	c := startChild(t, dir, listen)
	waitReady(t, c, base)
	key := demoKey(t, dir)
	client := &http.Client{Timeout: 10 * time.Second}

	send := func(ctx context.Context, i int) (string, error) {
		body := fmt.Sprintf(`{"channel":"whatsapp","to":"+4915112%06d","text":"burst %d"}`, i, i)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Idempotency-Key", fmt.Sprintf("burst-%d", i))
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var out struct{ ID string }
		if resp.StatusCode != http.StatusAccepted {
			return "", fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return out.ID, json.NewDecoder(resp.Body).Decode(&out)
	}

	ids := make([]string, total)
	var accepted atomic.Int64
	killed := make(chan struct{})
	var killOnce sync.Once
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				select {
				case <-killed:
					return // the server is gone; the rest is sent after the restart
				default:
				}
				id, err := send(context.Background(), i)
				if err != nil {
					continue // answer lost: in doubt, retried after the restart
				}
				ids[i] = id
				if accepted.Add(1) == total/3 {
					killOnce.Do(func() {
						c.cmd.Process.Signal(syscall.SIGKILL)
						close(killed)
					})
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatalf("the burst ended before the kill: %d accepted; output:\n%s", accepted.Load(), c.out)
	}
	<-c.exited
	before := accepted.Load()
	t.Logf("accepted %d of %d before SIGKILL", before, total)
	if before >= total {
		t.Fatal("the kill came too late to test anything")
	}

	c = startChild(t, dir, listen)
	waitReady(t, c, base)
	for i := range total {
		if ids[i] != "" {
			continue
		}
		id, err := send(context.Background(), i)
		if err != nil {
			t.Fatalf("send %d after restart: %v", i, err)
		}
		ids[i] = id
	}

	// Every message must reach read: poll the list endpoint (another process; no event to wait on).
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n := countStatus(t, client, base, key, "read")
		if n == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages read after the restart", n, total)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	<-c.exited
	if c.err != nil {
		t.Fatalf("graceful stop: %v", c.err)
	}

	unique := map[string]bool{}
	for i, id := range ids {
		if id == "" || unique[id] {
			t.Fatalf("message %d: id %q missing or repeated", i, id)
		}
		unique[id] = true
	}
	ledger, err := sandbox.ReadLedger(filepath.Join(dir, "sandbox", "demo"), gateway.WhatsApp, "sales")
	if err != nil {
		t.Fatal(err)
	}
	if len(ledger.Sent) != total {
		t.Errorf("the sandbox network took %d messages, want %d", len(ledger.Sent), total)
	}
	for id := range unique {
		if n := ledger.Sends[id]; n != 1 {
			t.Errorf("message %s reached the person %d times", id, n)
		}
	}
	t.Logf("resends dropped by the network after the crash: %d", ledger.Duplicates)
}

func countStatus(t *testing.T, client *http.Client, base, key, status string) int {
	t.Helper()
	n, cursor := 0, ""
	for {
		url := base + "/v1/messages?limit=500&status=" + status
		if cursor != "" {
			url += "&cursor=" + cursor
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Data       []json.RawMessage `json:"data"`
			NextCursor *string           `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Data)
		if page.NextCursor == nil || *page.NextCursor == "" {
			return n
		}
		cursor = *page.NextCursor
	}
}
