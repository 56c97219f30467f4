package automation

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

// openStore opens a store on the SQLite file in dir; two calls on one dir are two replicas of one
// database.
func openStore(t *testing.T, dir string) *storesql.DB {
	t.Helper()
	masters := []crypt.MasterKey{{ID: "k1", Key: bytes.Repeat([]byte{7}, crypt.KeySize)}}
	db, _, err := storesql.OpenEncrypted(context.Background(), storesql.Config{Driver: storesql.SQLite, DSN: filepath.Join(dir, "switchboard.db")}, masters, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
