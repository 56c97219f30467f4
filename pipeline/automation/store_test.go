package automation

import (
	"testing"

	storesql "github.com/switchboard-gateway/switchboard/store/sql"
	"github.com/switchboard-gateway/switchboard/store/sql/sqltest"
)

// openStore opens a store on the SQLite file in dir; two calls on one dir are two replicas of one
// database.
func openStore(t *testing.T, dir string) *storesql.DB {
	t.Helper()
	db, _ := sqltest.Open(t, dir)
	return db
}
