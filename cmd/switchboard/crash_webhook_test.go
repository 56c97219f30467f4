package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
)

// TestSIGKILLBetweenWebhookAttemptsLosesNoEvent kills the server with SIGKILL while its webhook
// endpoint is failing, restarts it with the endpoint healthy, and checks that every status event of
// every message reaches the endpoint, each exactly once (one successful delivery per webhook-id).
func TestSIGKILLBetweenWebhookAttemptsLosesNoEvent(t *testing.T) {
	const messages = 10
	var mu sync.Mutex
	healthy := false
	delivered := map[string]int{}      // webhook-id → successful deliveries
	events := map[string]bool{}        // message:status delivered
	failed := make(chan struct{}, 100) // an attempt was refused
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if !healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
			select {
			case failed <- struct{}{}:
			default:
			}
			return
		}
		var p struct {
			Data struct {
				MessageID string `json:"message_id"`
				Status    string `json:"status"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		delivered[r.Header.Get("webhook-id")]++
		events[p.Data.MessageID+":"+p.Data.Status] = true
	}))
	defer receiver.Close()

	dir := t.TempDir()
	secrets := filepath.Join(dir, "ops.secrets")
	if err := os.WriteFile(secrets, []byte(delivery.NewSecret()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
data_dir: %s
server: {rate_limit: {requests_per_second: 0}}
bus: {ack_wait: 2s}
tenants:
  - id: demo
    webhooks: [{id: ops, url: %q, events: [message.status], secrets_file: %s, allow_private: true}]
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts: [{name: sales, driver: sandbox, sandbox: {delivered_after: 2ms, read_after: 4ms}}]
`, dir, receiver.URL, secrets)
	if err := os.WriteFile(filepath.Join(dir, "switchboard.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := freePort(t)
	base := "http://" + listen
	c := startChild(t, dir, listen)
	waitReady(t, c, base)
	key := demoKey(t, dir)
	var ids []string
	for i := range messages {
		body := fmt.Sprintf(`{"channel":"whatsapp","to":"+4915112%06d","text":"webhook %d"}`, i, i)
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ ID string }
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || err != nil {
			t.Fatalf("send %d: HTTP %d %v", i, resp.StatusCode, err)
		}
		ids = append(ids, out.ID)
	}
	<-failed // the endpoint refused an attempt: the event waits for its retry
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.exited

	mu.Lock()
	healthy = true
	mu.Unlock()
	c = startChild(t, dir, listen)
	waitReady(t, c, base)
	want := []string{"queued", "sent", "delivered", "read"}
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for _, id := range ids {
			for _, s := range want {
				if !events[id+":"+s] {
					missing++
				}
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d status events never reached the endpoint\n%s", missing, c.out)
		}
		time.Sleep(100 * time.Millisecond) // the events arrive over HTTP from another process: poll with a deadline
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range delivered {
		if n != 1 {
			t.Errorf("webhook-id %s delivered successfully %d times", id, n)
		}
	}
	if len(delivered) != messages*len(want) {
		t.Errorf("%d events delivered, want %d", len(delivered), messages*len(want))
	}
}
