package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// TestConsentCommands runs `serve` in-process and drives it with `consent set|get|import`.
func TestConsentCommands(t *testing.T) {
	dir := t.TempDir()
	listen := freePort(t)
	cfgPath := filepath.Join(dir, "switchboard.yaml")
	cfg := fmt.Sprintf("data_dir: %s\nserver: {listen: %q}\ntenants:\n  - id: demo\n    channels:\n      whatsapp:\n        accounts: [{name: sales, driver: sandbox}]\n", dir, listen)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	serveInBackground(t, listen, func(ctx context.Context) (string, error) {
		return runCLI(t, ctx, nil, "serve", "--dev", "--config", cfgPath)
	})
	common := []string{"--config", cfgPath, "--dev"}
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, context.Background(), nil, append(args, common...)...)
	}

	out, err := run("consent", "set", "+4915112345678", "--state", "opted_out", "--note", "asked by phone")
	if err != nil || !strings.Contains(out, `"state": "opted_out"`) {
		t.Fatalf("set: %v\n%s", err, out)
	}
	out, err = run("consent", "get", "+4915112345678")
	if err != nil || !strings.Contains(out, `"note": "asked by phone"`) || !strings.Contains(out, `"source": "api"`) {
		t.Fatalf("get: %v\n%s", err, out)
	}
	out, err = run("consent", "set", "+4915112345678", "--state", "none")
	if gateway.ErrorCode(err) != gateway.EConflict {
		t.Fatalf("withdrawing an opt-out must fail: %v\n%s", err, out)
	}
	if _, err = run("consent", "set", "+4915112345678", "--state", "maybe"); gateway.ErrorField(err) != "state" {
		t.Fatalf("bad state: %v", err)
	}

	csvPath := filepath.Join(dir, "optouts.csv")
	if err := os.WriteFile(csvPath, []byte("subject,state,date,source\n+4915112345679,opted_out,2026-11-01,import\nnot-a-number,opted_out,2026-11-01,import\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run("consent", "import", csvPath)
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 1 || !strings.Contains(out, "imported 1 rows, rejected 1") || !strings.Contains(out, "optouts.csv:3: subject:") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	out, err = run("consent", "get", "+4915112345679")
	if err != nil || !strings.Contains(out, `"state": "opted_out"`) || !strings.Contains(out, `"source": "import"`) {
		t.Fatalf("get imported: %v\n%s", err, out)
	}
}

// TestREADMEConsentTour walks the README's tour on the `serve --dev` defaults (WhatsApp requires
// an opt-in): the first send is refused until the sandbox person writes, then goes through;
// after STOP a send answers recipient_opted_out; after START it goes through again.
func TestREADMEConsentTour(t *testing.T) {
	dir := t.TempDir()
	listen := freePort(t)
	flags := []string{"--dev", "--data-dir", dir, "--listen", listen}
	serveInBackground(t, listen, func(ctx context.Context) (string, error) {
		return runCLI(t, ctx, nil, append([]string{"serve"}, flags...)...)
	})
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, context.Background(), nil, append(args, flags...)...)
	}
	const number = "+4915112345678"
	send := func() error {
		_, err := run("send", "--to", number, "--text", "Your parcel arrives today")
		return err
	}
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := run("consent", "get", number)
			if err == nil && strings.Contains(out, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("consent never showed %s: %v\n%s", want, err, out)
			}
			time.Sleep(10 * time.Millisecond) // the inbound handler runs behind the bus
		}
	}

	if err := send(); gateway.ErrorCode(err) != gateway.EConsentRequired {
		t.Fatalf("the first send before anyone wrote must be refused (consent_required): %v", err)
	}
	if out, err := run("sandbox", "inbound", "--from", number, "--text", "Hi, where is my parcel?"); err != nil {
		t.Fatalf("sandbox inbound: %v\n%s", err, out)
	}
	waitState(`"last_inbound_at"`)
	if err := send(); err != nil {
		t.Fatalf("send after the person wrote: %v", err)
	}
	if _, err := run("sandbox", "inbound", "--from", number, "--text", " stop "); err != nil {
		t.Fatal(err)
	}
	waitState(`"state": "opted_out"`)
	out, err := runCLI(t, context.Background(), nil, append([]string{"send", "--to", number, "--text", "One more thing"}, flags...)...)
	if gateway.ErrorCode(err) != gateway.ERecipientOptedOut {
		t.Fatalf("send after STOP: %v\n%s", err, out)
	}
	if _, err := run("sandbox", "inbound", "--from", number, "--text", "START"); err != nil {
		t.Fatal(err)
	}
	waitState(`"state": "opted_in"`)
	if err := send(); err != nil {
		t.Fatalf("send after START: %v", err)
	}
}
