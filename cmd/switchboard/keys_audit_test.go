package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// TestKeysRetireRotateAndAudit: a master key that still wraps tenant keys cannot be retired (the
// refusal says how many); after `keys rotate` it can; API key creation and the rotation are in the
// audit log.
func TestKeysRetireRotateAndAudit(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "master.keys")
	old := crypt.MasterKey{ID: "mk_old", Key: bytes.Repeat([]byte{1}, crypt.KeySize)}
	neu := crypt.MasterKey{ID: "mk_new", Key: bytes.Repeat([]byte{2}, crypt.KeySize)}
	writeKeys := func(keys ...crypt.MasterKey) {
		var lines []string
		for _, k := range keys {
			lines = append(lines, crypt.FormatMasterKey(k))
		}
		if err := os.WriteFile(keysFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys(old)
	cfgPath := filepath.Join(dir, "switchboard.yaml")
	yaml := fmt.Sprintf("data_dir: %s\nsecurity: {master_keys_file: %s}\ntenants:\n  - id: demo\n    channels:\n      whatsapp: {accounts: [{name: sales, driver: sandbox}]}\n", dir, keysFile)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, context.Background(), nil, append(args, "--config", cfgPath)...)
	}

	if out, err := run("keys", "create", "--tenant", "demo"); err != nil {
		t.Fatalf("keys create: %v\n%s", err, out)
	}
	// The tenant's data key comes with its first use, wrapped by the primary master key.
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, kr, err := server.OpenStore(t.Context(), cfg, false, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.BlindIndex(t.Context(), "demo", "+4915112345678"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	writeKeys(neu, old)
	if out, err := run("keys", "retire", "mk_old"); gateway.ErrorCode(err) != gateway.EConflict || !strings.Contains(err.Error(), "still wraps 1 tenant keys") {
		t.Fatalf("retiring a key in use: %v\n%s", err, out)
	}
	if out, err := run("keys", "rotate"); err != nil || !strings.Contains(out, "rewrapped 1 tenant keys under master key mk_new") {
		t.Fatalf("keys rotate: %v\n%s", err, out)
	}
	if out, err := run("keys", "retire", "mk_old"); err != nil {
		t.Fatalf("retiring the rotated-away key: %v\n%s", err, out)
	}
	out, err := run("audit")
	if err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{`"action":"api_key_created"`, `"action":"keys_rotated"`} {
		if !strings.Contains(out, action) {
			t.Errorf("audit log lacks %s:\n%s", action, out)
		}
	}
}
