package sql

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
)

// TestLegacyKeysMoveToVault: keys that an earlier version kept in the data database move to the
// vault on open, and the data database keeps none.
func TestLegacyKeysMoveToVault(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := Config{Driver: SQLite, DSN: filepath.Join(dir, "switchboard.db")}
	db, kr, err := OpenEncrypted(ctx, cfg, testMasters(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	m := newMsg(t, "acme", "+4915112345678", "kept across the move")
	create(t, db, m)
	subject, err := kr.BlindIndex(ctx, "acme", m.Peer.String())
	if err != nil {
		t.Fatal(err)
	}
	tk, err := db.TenantKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	sk, err := db.SubjectKey(ctx, "acme", subject)
	if err != nil {
		t.Fatal(err)
	}
	// What an earlier version left behind: the keys in the data database, no vault.
	if _, err := db.SQL().ExecContext(ctx, "INSERT INTO tenant_keys (tenant, key_id, wrapped, created_at, updated_at) VALUES (?, ?, ?, 1, 1)", "acme", tk.KeyID, tk.Wrapped); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, "INSERT INTO subject_keys (tenant, subject, key_id, wrapped, created_at) VALUES (?, ?, ?, ?, 1)", "acme", subject, sk.KeyID, sk.Wrapped); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.Remove(VaultPath(cfg.DSN)); err != nil {
		t.Fatal(err)
	}

	db, _, err = OpenEncrypted(ctx, cfg, testMasters(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Message(ctx, "acme", m.ID, true)
	if err != nil || got.Content.Text != "kept across the move" {
		t.Fatalf("after the move: %v", err)
	}
	if n := count(t, db, "SELECT (SELECT COUNT(*) FROM tenant_keys) + (SELECT COUNT(*) FROM subject_keys)"); n != 0 {
		t.Fatalf("%d keys left in the data database", n)
	}
	if vaultCount(t, db, "subject") != 1 || vaultCount(t, db, "tenant") != 1 {
		t.Fatal("keys not in the vault")
	}
}
