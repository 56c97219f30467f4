package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/config"
)

// standbyAccount is a whatsmeow account that never connects: only its wiring is looked at.
type standbyAccount struct{ adapters.Adapter }

// TestWhatsMeowAccountsRunUnderALease: a whatsmeow account's runner connects only while this
// replica holds the account's lease (until then it stands by); a sandbox account has no lease.
func TestWhatsMeowAccountsRunUnderALease(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "switchboard.yaml")
	yaml := fmt.Sprintf("data_dir: %s\nserver: {listen: \"127.0.0.1:0\"}\ntenants:\n  - id: acme\n    channels:\n      whatsapp:\n        accounts: [{name: wa, driver: whatsmeow}, {name: sales, driver: sandbox}]\n", dir)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := New(ctx, cfg, Options{Dev: true, Log: zerolog.Nop(), Drivers: map[string]DriverFactory{
		config.DriverWhatsMeow: func(context.Context, DriverEnv) (adapters.Adapter, error) { return standbyAccount{}, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close(context.Background())
	standby := map[string]bool{}
	for _, r := range s.runners {
		standby[r.Name()] = r.Standby()
	}
	if !standby["whatsapp/acme/wa"] || standby["whatsapp/acme/sales"] || len(standby) != 2 {
		t.Fatalf("standing by before Run (waiting for the lease): %v", standby)
	}
}
