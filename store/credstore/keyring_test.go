package credstore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/switchboard-gateway/switchboard/store/credstore"
	"github.com/switchboard-gateway/switchboard/store/crypt/crypttest"
)

// TestKeyring runs the store over the real keyring: what one Store sealed, a second Store over
// the same database and keys opens; another tenant's key does not.
func TestKeyring(t *testing.T) {
	ctx := context.Background()
	kr := crypttest.NewKeyring(t)
	path := filepath.Join(t.TempDir(), "sb.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := credstore.New(db, credstore.SQLite, credstore.Keyring(kr))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	k := credstore.Key{Tenant: "acme", Channel: "teams", Account: "ops", Name: "client_secret"}
	if err := s.Put(ctx, k, []byte("s3cr3t-client-secret-value")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, k)
	if err != nil || string(got) != "s3cr3t-client-secret-value" {
		t.Fatalf("get = %q, %v", got, err)
	}
	// The same ciphertext under another tenant's name does not open.
	if _, err := db.ExecContext(ctx, `INSERT INTO credentials (tenant, channel, account, name, value, version, updated_at)
		SELECT 'other', channel, account, name, value, version, updated_at FROM credentials WHERE tenant = 'acme'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, credstore.Key{Tenant: "other", Channel: "teams", Account: "ops", Name: "client_secret"}); err == nil {
		t.Fatal("another tenant opened acme's credential")
	}
	assertNotInFiles(t, path, "s3cr3t-client-secret-value")
}
