package main

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

	"github.com/switchboard-gateway/switchboard/gateway"
)

// TestWebhooksCommands makes a secret for a configured endpoint and rotates it, then drives a
// running gateway: add an endpoint, list both, test them (a receiver holding only the new secret
// verifies the configured one; a loopback target without allow_private is refused), replay, read
// the delivery log and remove.
func TestWebhooksCommands(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "crm.whsec")
	first, err := runCLI(t, t.Context(), nil, "webhooks", "secret", "--out", secrets)
	if err != nil {
		t.Fatalf("%v\n%s", err, first)
	}
	out, err := runCLI(t, t.Context(), nil, "webhooks", "secret", "--out", secrets, "--rotate")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	newSecret := secretIn(out)
	if st, err := os.Stat(secrets); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secrets file: %v %v", st.Mode(), err)
	}
	if b, _ := os.ReadFile(secrets); strings.Count(string(b), "whsec_") != 2 || !strings.Contains(string(b), secretIn(first)) {
		t.Fatalf("after a rotation the file holds the new and the old secret:\n%s", b)
	}

	got := make(chan error, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(newSecret, "whsec_"))
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "." + string(body)))
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if r.URL.Path == "/crm" && !strings.Contains(" "+r.Header.Get("webhook-signature")+" ", " "+want+" ") {
			got <- fmt.Errorf("no signature verifies with the new secret: %q", r.Header.Get("webhook-signature"))
			return
		}
		got <- nil
	}))
	defer recv.Close()
	listen := freePort(t)
	cfgPath := filepath.Join(dir, "switchboard.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
server: {listen: %q}
tenants:
  - id: demo
    webhooks_allow_private: true
    channels:
      whatsapp: {accounts: [{name: sales, driver: sandbox}]}
    webhooks:
      - {id: crm, url: %q, secrets_file: %q, allow_private: true}
      - {id: guarded, url: %q, secrets_file: %q}
`, dir, listen, recv.URL+"/crm", secrets, recv.URL+"/guarded", secrets)), 0o600)
	serveInBackground(t, listen, func(ctx context.Context) (string, error) {
		return runCLI(t, ctx, nil, "serve", "--dev", "--config", cfgPath)
	})
	cli := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, t.Context(), nil, append([]string{"--config", cfgPath, "--dev", "webhooks"}, args...)...)
	}

	out, err = cli("add", recv.URL+"/api", "--events", "message.status,message.inbound", "--allow-private")
	var added struct{ ID, Secret string }
	if err != nil || json.Unmarshal([]byte(out), &added) != nil || !strings.HasPrefix(added.ID, "wh_") || !strings.HasPrefix(added.Secret, "whsec_") {
		t.Fatalf("add: %v\n%s", err, out)
	}
	if out, err := cli("add", "http://169.254.169.254/latest", "--events", "message.status"); gateway.ErrorCode(err) != gateway.EForbidden {
		t.Fatalf("add of the metadata service: %v\n%s", err, out)
	}
	if out, err := cli("add", recv.URL, "--events", "message.nope"); gateway.ErrorCode(err) != gateway.EInvalidField {
		t.Fatalf("add of an unknown event type: %v\n%s", err, out)
	}

	out, err = cli("list")
	if err != nil || !strings.Contains(out, "crm") || !strings.Contains(out, added.ID) || !strings.Contains(out, "config") ||
		!strings.Contains(out, "api") || strings.Contains(out, "whsec_") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, err = cli("test", "crm")
	if err != nil || !strings.Contains(out, "HTTP 200") {
		t.Fatalf("test: %v\n%s", err, out)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if out, err = cli("test", added.ID); err != nil || !strings.Contains(out, "HTTP 200") {
		t.Fatalf("test of the added endpoint: %v\n%s", err, out)
	}
	<-got
	out, err = cli("test", "guarded")
	if err == nil || !strings.Contains(err.Error(), "internal address") {
		t.Fatalf("a loopback target without allow_private: %v\n%s", err, out)
	}
	if out, err = cli("replay", added.ID, "--since", "1h"); err != nil || !strings.Contains(out, `"replaying": true`) {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if out, err = cli("replay", added.ID, "--since", "last tuesday"); gateway.ErrorCode(err) != gateway.EInvalidField {
		t.Fatalf("replay with a bad --since: %v\n%s", err, out)
	}
	if out, err = cli("deliveries", added.ID); err != nil || !strings.Contains(out, `"deliveries"`) {
		t.Fatalf("deliveries: %v\n%s", err, out)
	}
	if out, err = cli("remove", added.ID); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("remove: %v\n%s", err, out)
	}
	if out, err = cli("remove", added.ID); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatalf("remove twice: %v\n%s", err, out)
	}
	if out, err = cli("remove", "crm"); gateway.ErrorCode(err) != gateway.EConflict {
		t.Fatalf("remove of a configured endpoint: %v\n%s", err, out)
	}
	if out, _ = cli("list", "-o", "json"); strings.Contains(out, added.ID) || !strings.Contains(out, `"source": "config"`) {
		t.Fatalf("list after remove:\n%s", out)
	}
}

// secretIn is the whsec_ line a command printed.
func secretIn(out string) string {
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, "whsec_") {
			return line
		}
	}
	return "none printed"
}
