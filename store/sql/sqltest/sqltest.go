// Package sqltest opens real, encrypted SQLite stores for the tests of other packages.
package sqltest

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

// MasterKeys are the master keys of the stores Open opens, for a test that reopens their files.
func MasterKeys() []crypt.MasterKey {
	return []crypt.MasterKey{{ID: "mk_test", Key: bytes.Repeat([]byte{7}, crypt.KeySize)}}
}

// Open opens the encrypted store in dir/switchboard.db, closed when the test ends; two calls on
// one dir are two replicas of one database.
func Open(t testing.TB, dir string) (*storesql.DB, *crypt.Keyring) {
	t.Helper()
	cfg := storesql.Config{Driver: storesql.SQLite, DSN: filepath.Join(dir, "switchboard.db")}
	db, kr, err := storesql.OpenEncrypted(context.Background(), cfg, MasterKeys(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, kr
}
