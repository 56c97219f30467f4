package sql

import (
	"bytes"
	"context"
	"crypto/rand"
	dbsql "database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// PostgresDSNEnv names the environment variable that, when set, runs the suite on PostgreSQL too.
// Each test gets a schema of its own in that database, dropped afterwards.
const PostgresDSNEnv = "SWITCHBOARD_TEST_POSTGRES_DSN"

func testMasters() []crypt.MasterKey {
	return []crypt.MasterKey{{ID: "mk_test", Key: bytes.Repeat([]byte{7}, crypt.KeySize)}}
}

// env is one engine under test: a config to open (and reopen) a store, and the open store.
type env struct {
	engine string
	cfg    Config
	dir    string // SQLite: the directory holding the database files
	db     *DB
	kr     *crypt.Keyring
}

// open opens another store (another process, as far as the database can tell) on the same data.
func (e *env) open(t testing.TB) (*DB, *crypt.Keyring) {
	t.Helper()
	db, kr, err := OpenEncrypted(context.Background(), e.cfg, testMasters(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return db, kr
}

type engineSetup struct {
	name string
	cfg  func(t testing.TB) (Config, string)
}

func engines() []engineSetup {
	es := []engineSetup{{SQLite, func(t testing.TB) (Config, string) {
		dir := t.TempDir()
		return Config{Driver: SQLite, DSN: filepath.Join(dir, "switchboard.db")}, dir
	}}}
	if dsn := os.Getenv(PostgresDSNEnv); dsn != "" {
		es = append(es, engineSetup{Postgres, func(t testing.TB) (Config, string) {
			return Config{Driver: Postgres, DSN: freshSchema(t, dsn)}, ""
		}})
	}
	return es
}

// freshSchema creates a schema of its own for one test and returns a DSN that uses it.
func freshSchema(t testing.TB, dsn string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	schema := "sbtest_" + hex.EncodeToString(b)
	admin, err := dbsql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		admin, err := dbsql.Open("pgx", dsn)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.Exec("DROP SCHEMA " + schema + " CASCADE")
	})
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

// forEach runs fn once per engine, each with a fresh database.
func forEach(t *testing.T, fn func(t *testing.T, e *env)) {
	forEachCfg(t, nil, fn)
}

func forEachCfg(t *testing.T, tune func(*Config), fn func(t *testing.T, e *env)) {
	for _, es := range engines() {
		t.Run(es.name, func(t *testing.T) {
			cfg, dir := es.cfg(t)
			if tune != nil {
				tune(&cfg)
			}
			e := &env{engine: es.name, cfg: cfg, dir: dir}
			e.db, e.kr = e.open(t)
			t.Cleanup(func() { e.db.Close() })
			fn(t, e)
		})
	}
}

func mustAddr(t testing.TB, ch gateway.Channel, to string) gateway.Address {
	t.Helper()
	a, err := gateway.ParseAddress(ch, to)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// newMsg is an outbound WhatsApp message of tenant to a recipient.
func newMsg(t testing.TB, tenant, to, text string) *gateway.Message {
	return &gateway.Message{
		ID:       gateway.NewMessageID(),
		Tenant:   tenant,
		Channel:  gateway.WhatsApp,
		Account:  "sales",
		Peer:     mustAddr(t, gateway.WhatsApp, to),
		Content:  gateway.Content{Text: text},
		Metadata: map[string]string{"order": "42"},
	}
}

func create(t testing.TB, db *DB, m *gateway.Message) {
	t.Helper()
	_, _, created, err := db.CreateMessage(context.Background(), store.NewMessage{Message: m, RequestHash: "h-" + m.ID})
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatalf("message %s not created", m.ID)
	}
}

func apply(t testing.TB, db *DB, evs ...gateway.StatusEvent) []store.Applied {
	t.Helper()
	as, err := db.ApplyStatus(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

func ev(m *gateway.Message, s gateway.Status, at time.Time) gateway.StatusEvent {
	return gateway.StatusEvent{MessageID: m.ID, Tenant: m.Tenant, Status: s, At: at}
}

func count(t testing.TB, db *DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.reader.QueryRow(db.q(query), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// vaultCount counts the key vault's keys of one kind ("tenant" or "subject").
func vaultCount(t *testing.T, db *DB, kind string) int64 {
	t.Helper()
	cs, err := db.KeyStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, c := range cs {
		if c.Kind == kind {
			n += c.Count
		}
	}
	return n
}
