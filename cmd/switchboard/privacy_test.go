package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// TestPrivacyCommands runs `serve` in-process and drives it with `restrict`, `export` and `erase`.
func TestPrivacyCommands(t *testing.T) {
	dir := t.TempDir()
	listen := freePort(t)
	cfgPath := filepath.Join(dir, "switchboard.yaml")
	cfg := fmt.Sprintf("data_dir: %s\nserver: {listen: %q}\ntenants:\n  - id: demo\n    channels:\n      whatsapp:\n        consent: {require_opt_in: false}\n        accounts: [{name: sales, driver: sandbox}]\n", dir, listen)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	base := serveInBackground(t, listen, func(ctx context.Context) (string, error) {
		return runCLI(t, ctx, nil, "serve", "--dev", "--config", cfgPath)
	})
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, context.Background(), nil, append(args, "--config", cfgPath, "--dev")...)
	}
	const who = "+4915112345678"

	if out, err := run("send", "--to", who, "--text", "the words to export"); err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	out, err := run("restrict", who)
	if err != nil || !strings.Contains(out, `"restricted": true`) {
		t.Fatalf("restrict: %v\n%s", err, out)
	}
	if _, err := run("send", "--to", who, "--text", "x"); gateway.ErrorCode(err) != gateway.ESubjectRestricted {
		t.Fatalf("send while restricted: %v", err)
	}
	if out, err := run("restrict", who, "--lift"); err != nil || !strings.Contains(out, `"restricted": false`) {
		t.Fatalf("lift: %v\n%s", err, out)
	}

	exportPath := filepath.Join(dir, "export.json")
	if out, err := run("export", who, "--out", exportPath); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	b, err := os.ReadFile(exportPath)
	if err != nil || !json.Valid(b) || !strings.Contains(string(b), "the words to export") {
		t.Fatalf("export file: %v\n%s", err, b)
	}

	out, err = run("erase", who)
	var job struct {
		Status string
		Report map[string]int64
	}
	if err != nil || json.Unmarshal([]byte(out), &job) != nil || job.Status != "done" || job.Report["messages"] != 1 || job.Report["keys"] != 1 {
		t.Fatalf("erase: %v\n%s", err, out)
	}
	if out, err := run("export", who); err != nil || strings.Contains(out, "the words to export") {
		t.Fatalf("export after erasure: %v\n%s", err, out)
	}
	if _, err := run("erase", "120363000000000000@g.us"); gateway.ErrorField(err) != "subject" {
		t.Fatalf("erase of a group: %v", err)
	}

	out, err = run("audit", "--tenant", "demo")
	if err != nil || strings.Contains(out, who) {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	for _, action := range []string{"restriction_set", "restriction_lifted", "export", "erasure_requested"} {
		if !strings.Contains(out, `"action":"`+action+`"`) {
			t.Fatalf("audit lacks %s:\n%s", action, out)
		}
	}
	if !strings.Contains(out, `"target":"s_`) || !strings.Contains(out, `"ip":"127.0.0.1"`) {
		t.Fatalf("audit entries name no target or ip:\n%s", out)
	}

	out, err = run("keys", "status")
	if err != nil || !strings.Contains(out, "primary") {
		t.Fatalf("keys status: %v\n%s", err, out)
	}
	if out, err = run("keys", "rotate"); err != nil || !strings.Contains(out, "rewrapped 0 tenant keys") {
		t.Fatalf("keys rotate: %v\n%s", err, out)
	}
	if _, err = run("keys", "retire", "mk_unknown"); err != nil {
		t.Fatalf("retiring an unused key: %v", err)
	}

	if _, err = run("erase", "--tenant", "gone"); gateway.ErrorField(err) != "yes" {
		t.Fatalf("tenant erasure without --yes: %v", err)
	}
	out, err = run("erase", "--tenant", "gone", "--yes")
	if err != nil || !strings.Contains(out, `"status": "done"`) {
		t.Fatalf("tenant erasure: %v\n%s", err, out)
	}

	// keys create --admin: that key may erase its tenant by API, a plain key may not.
	plain, err := run("keys", "create", "--tenant", "demo")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := run("keys", "create", "--tenant", "demo", "--admin")
	if err != nil {
		t.Fatal(err)
	}
	post := func(key string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/erasures", strings.NewReader(`{"tenant": true}`))
		req.Header.Set("Authorization", "Bearer "+keySecret(key))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(out)
		return resp.StatusCode
	}
	var e struct{ Error struct{ Code string } }
	if code := post(plain, &e); code != http.StatusForbidden || e.Error.Code != gateway.EForbidden {
		t.Fatalf("tenant erasure with a plain key: %d %+v", code, e)
	}
	var tj struct{ ID, Status string }
	if code := post(admin, &tj); code != http.StatusAccepted || tj.ID == "" {
		t.Fatalf("tenant erasure with an admin key: %d %+v", code, tj)
	}
	c := &apiClient{base: base, key: keySecret(admin), http: &http.Client{Timeout: 10 * time.Second}}
	if done, err := waitErasure(context.Background(), c, tj.ID, time.Minute); err != nil || done.Status != "done" || done.Report["tenant_keys"] != 1 {
		t.Fatalf("tenant erasure job: %v %+v", err, done)
	}
}

// keySecret is the secret `keys create` printed: its stdout, which runCLI puts first.
func keySecret(out string) string {
	return strings.TrimSpace(strings.Split(out, "\n")[0])
}
