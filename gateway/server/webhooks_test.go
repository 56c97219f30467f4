package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
)

const withWebhook = `
data_dir: %s
server: {listen: "127.0.0.1:0"}
tenants:
  - id: demo
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts: [{name: sales, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
    webhooks:
      - {id: crm, url: %q, events: [message.status], secrets_file: %q, allow_private: true}
`

func TestWebhooksFromConfigSignedAndOrdered(t *testing.T) {
	dir := t.TempDir()
	secret := delivery.NewSecret()
	secretsFile := filepath.Join(dir, "crm.whsec")
	if err := os.WriteFile(secretsFile, []byte("# crm\n"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	type hook struct {
		Type string
		Data gateway.StatusEvent
	}
	hooks := make(chan hook, 32)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "." + string(body)))
		if r.Header.Get("webhook-signature") != "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			t.Errorf("bad signature %q", r.Header.Get("webhook-signature"))
		}
		var h hook
		if err := json.Unmarshal(body, &h); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		hooks <- h
	}))
	defer recv.Close()

	g := startWithConfig(t, dir, fmt.Sprintf(withWebhook, dir, recv.URL, secretsFile))
	id := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "hi"})
	var got []string
	for len(got) == 0 || got[len(got)-1] != "read" {
		select {
		case h := <-hooks:
			if h.Type != "message.status" || h.Data.MessageID != id {
				t.Fatalf("hook %+v", h)
			}
			got = append(got, string(h.Data.Status))
		case <-time.After(30 * time.Second):
			t.Fatalf("webhooks so far: %v", got)
		}
	}
	if strings.Join(got, ",") != "queued,sent,delivered,read" {
		t.Fatalf("statuses in order %v", got)
	}
	if strings.Contains(g.log.String(), secret) {
		t.Error("the secret is in the log")
	}
	// One event at a time per endpoint: the first three were counted before the last was sent.
	fams := g.scrape()
	if m := sample(fams, "switchboard_webhook_attempts_total", map[string]string{"tenant": "demo", "endpoint": "crm", "outcome": "ok"}); m == nil || m.GetCounter().GetValue() < 3 {
		t.Errorf("webhook attempts metric: %v", m)
	}
}

func TestWebhookSecretsFileChecked(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.whsec")
	os.WriteFile(open, []byte(delivery.NewSecret()+"\n"), 0o644)
	bad := filepath.Join(dir, "bad.whsec")
	os.WriteFile(bad, []byte("not-a-secret\n"), 0o600)
	for _, tt := range []struct{ name, file, want string }{
		{"readable by others", open, "chmod 600"},
		{"not a secret", bad, "whsec_"},
		{"missing", filepath.Join(dir, "none"), "none"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(withWebhook, dir, "https://example.com/hook", tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			_, err = server.New(context.Background(), cfg, server.Options{Dev: true, Log: zerolog.Nop()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}
