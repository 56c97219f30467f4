package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWebhooksCommands makes a secret, rotates it, lists the endpoint and sends it a signed test
// event that a receiver holding only the new secret verifies; a loopback target without
// allow_private is refused.
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

	got := make(chan error, 1)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(newSecret, "whsec_"))
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "." + string(body)))
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if !strings.Contains(" "+r.Header.Get("webhook-signature")+" ", " "+want+" ") {
			got <- fmt.Errorf("no signature verifies with the new secret: %q", r.Header.Get("webhook-signature"))
			return
		}
		got <- nil
	}))
	defer recv.Close()
	cfgPath := filepath.Join(dir, "switchboard.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
tenants:
  - id: acme
    channels:
      whatsapp: {accounts: [{name: sales, driver: sandbox}]}
    webhooks:
      - {id: crm, url: %q, secrets_file: %q, allow_private: true}
      - {id: guarded, url: %q, secrets_file: %q}
`, dir, recv.URL, secrets, recv.URL, secrets)), 0o600)

	out, err = runCLI(t, t.Context(), nil, "--config", cfgPath, "webhooks", "list")
	if err != nil || !strings.Contains(out, "crm") || !strings.Contains(out, recv.URL) || strings.Contains(out, "whsec_") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, err = runCLI(t, t.Context(), nil, "--config", cfgPath, "webhooks", "test", "--tenant", "acme", "--id", "crm")
	if err != nil || !strings.Contains(out, "HTTP 200") {
		t.Fatalf("test: %v\n%s", err, out)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, t.Context(), nil, "--config", cfgPath, "webhooks", "test", "--tenant", "acme", "--id", "guarded")
	if err == nil || !strings.Contains(err.Error(), "internal address") {
		t.Fatalf("a loopback target without allow_private: %v\n%s", err, out)
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
