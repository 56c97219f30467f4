// Package sql is Switchboard's store over database/sql: one schema and one implementation for
// SQLite (modernc.org/sqlite, WAL; the embedded default) and PostgreSQL (pgx). It implements
// store.Tenants, store.Messages and crypt.KeyStore, encrypting message content, metadata and peers
// with a crypt.Keyring (DESIGN.md §3.6, §3.8).
//
// Wiring (the DB is the keyring's KeyStore, and the keyring encrypts what the DB stores):
//
//	db, err := sql.Open(ctx, cfg, log)
//	kr, err := crypt.New(masters, db)
//	db.SetKeyring(kr)
//
// or, the same in one call, OpenEncrypted. Hot-path writes (CreateMessage, CreateInbound,
// ClaimChannelMessageID, ApplyStatus, key creation) go through one writer goroutine that
// group-commits them: many callers, one transaction, one fsync.
package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/rs/zerolog"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// Drivers.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Defaults for Config.
const (
	DefaultBatchSize = 256
	DefaultBatchWait = 0 // take what is queued: batches grow by themselves while a commit runs
)

// Config configures the store.
type Config struct {
	Driver string // "sqlite" or "postgres"
	// DSN is a file path (or file: URI) for SQLite, a URL or key=value string for PostgreSQL.
	DSN string
	// BatchSize caps how many writes one group commit carries (0: DefaultBatchSize).
	BatchSize int
	// BatchWait is how long the writer lingers after the first write of a batch for more to
	// arrive. 0 takes what is queued at once, which under load batches by itself: writes queue
	// while the previous commit runs.
	BatchWait time.Duration
	// MaxReadConns bounds the reader pool (0: 4 per CPU, at least 8).
	MaxReadConns int
	// KeysDSN is where the wrapped keys live (vault.go), never in the data database, so a data
	// backup holds no keys. SQLite default: beside the data file (VaultPath); PostgreSQL default:
	// the data database itself (set another database for backup-proof erasure).
	KeysDSN string

	onCheckpoint func(walFrames, copied int64) // tests: told after each background checkpoint
}

// DB is the store. Its methods are safe for concurrent use.
type DB struct {
	log     zerolog.Logger
	driver  string
	pg      bool
	writer  *dbsql.DB // SQLite: one connection, BEGIN IMMEDIATE. PostgreSQL: the same pool as reader.
	reader  *dbsql.DB
	keyring atomic.Pointer[crypt.Keyring]
	vault   *vault
	reads   sync.Map // query text → *dbsql.Stmt on the reader pool: parsing SQL is a large part of a read

	batchSize int
	batchWait time.Duration
	ops       chan *op
	quit      chan struct{}          // closed by Close: the writer drains and stops
	stopped   chan struct{}          // closed by the writer when it has stopped
	stmts     map[string]*dbsql.Stmt // SQLite: hot statements prepared on the writer connection
	stats     writeStats
	// SQLite file databases: the background checkpointer (checkpoint.go) and its connection.
	checkpointConn    *dbsql.DB
	checkpointWake    chan struct{}
	checkpointQuit    chan struct{}
	checkpointStopped chan struct{}
	onCheckpoint      func(walFrames, copied int64)
	closeOnce         sync.Once
	closeErr          error
	now               func() time.Time
}

var (
	_ store.Tenants  = (*DB)(nil)
	_ store.Messages = (*DB)(nil)
	_ crypt.KeyStore = (*DB)(nil)
)

// Open connects, applies the embedded migrations and starts the writer. Call SetKeyring before
// using the message methods.
func Open(ctx context.Context, cfg Config, log zerolog.Logger) (*DB, error) {
	db := &DB{
		log:       log.With().Str("component", "store").Str("driver", cfg.Driver).Logger(),
		driver:    cfg.Driver,
		batchSize: cfg.BatchSize,
		batchWait: cfg.BatchWait,
		now:       time.Now,

		onCheckpoint: cfg.onCheckpoint,
	}
	if db.batchSize <= 0 {
		db.batchSize = DefaultBatchSize
	}
	if db.batchWait < 0 {
		db.batchWait = 0
	}
	readConns := cfg.MaxReadConns
	if readConns <= 0 {
		readConns = max(8, 4*runtime.NumCPU())
	}
	var err error
	switch cfg.Driver {
	case SQLite:
		err = db.openSQLite(cfg.DSN, readConns)
	case Postgres:
		err = db.openPostgres(cfg.DSN, readConns)
	default:
		return nil, gateway.FieldErrorf(gateway.EInvalidField, "store.driver", "unknown store driver %q: use sqlite or postgres", cfg.Driver)
	}
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.closeDBs()
		return nil, err
	}
	if err := db.openVault(ctx, cfg); err != nil {
		db.closeDBs()
		return nil, err
	}
	if err := db.prepareHot(ctx); err != nil {
		db.closeDBs()
		return nil, err
	}
	db.ops = make(chan *op, db.batchSize*4)
	db.quit = make(chan struct{})
	db.stopped = make(chan struct{})
	go db.writeLoop()
	if db.checkpointConn != nil {
		db.checkpointWake = make(chan struct{}, 1)
		db.checkpointQuit = make(chan struct{})
		db.checkpointStopped = make(chan struct{})
		go db.checkpointLoop(db.checkpointConn)
	}
	return db, nil
}

// OpenEncrypted opens the store and a keyring over masters that keeps its keys in it, and wires
// the two together.
func OpenEncrypted(ctx context.Context, cfg Config, masters []crypt.MasterKey, log zerolog.Logger, opts ...crypt.Option) (*DB, *crypt.Keyring, error) {
	db, err := Open(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	kr, err := crypt.New(masters, db, opts...)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	db.SetKeyring(kr)
	return db, kr, nil
}

// SetKeyring sets the keyring that encrypts messages. It may be called once the keyring, whose
// KeyStore is this DB, exists; message methods fail until it is set.
func (db *DB) SetKeyring(k *crypt.Keyring) { db.keyring.Store(k) }

func (db *DB) kr() (*crypt.Keyring, error) {
	k := db.keyring.Load()
	if k == nil {
		return nil, gateway.Errorf(gateway.EInternal, "store: no keyring set (call SetKeyring)")
	}
	return k, nil
}

// Driver is "sqlite" or "postgres".
func (db *DB) Driver() string { return db.driver }

// readStmt returns the reader pool's prepared statement for query (already rebound by q),
// preparing it on first use. Callers pass constant query texts or a small set of built ones.
func (db *DB) readStmt(ctx context.Context, query string) (*dbsql.Stmt, error) {
	if st, ok := db.reads.Load(query); ok {
		return st.(*dbsql.Stmt), nil
	}
	st, err := db.reader.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := db.reads.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*dbsql.Stmt), nil
	}
	return st, nil
}

// stmtContext is the context for a short statement: the writer's, a point read. modernc's SQLite
// driver starts a goroutine per statement to watch a context that can be cancelled; these are
// bounded by their index lookups and the busy timeout instead, so on SQLite they run under a
// context that cannot be cancelled. Reads that may scan (lists) keep the caller's context.
func (db *DB) stmtContext(ctx context.Context) context.Context {
	if db.pg {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// readRow runs a one-row query on the reader pool through a prepared statement.
func (db *DB) readRow(ctx context.Context, query string, args ...any) *dbsql.Row {
	st, err := db.readStmt(ctx, query)
	if err != nil {
		return db.reader.QueryRowContext(ctx, query, args...) // the same error, reported by Scan
	}
	return st.QueryRowContext(db.stmtContext(ctx), args...)
}

// readRows runs a query on the reader pool through a prepared statement.
func (db *DB) readRows(ctx context.Context, query string, args ...any) (*dbsql.Rows, error) {
	st, err := db.readStmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// SQL is the handle for tables that other packages keep in the same database (channel
// credentials, the WhatsApp device store). On SQLite it is the single writer connection, so their
// writes queue behind the group commit instead of fighting it for the file lock.
func (db *DB) SQL() *dbsql.DB { return db.writer }

func (db *DB) openSQLite(dsn string, readConns int) error {
	if strings.TrimSpace(dsn) == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "store.dsn", "the SQLite store needs a file path")
	}
	path, query, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
	memory := path == ":memory:" || strings.Contains(query, "mode=memory")
	if !memory {
		if dir := filepath.Dir(path); dir != "" {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("store: create directory for %s: %w", path, err)
			}
		}
		// Create the file 0600 ourselves; SQLite gives its -wal and -shm files the same mode.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("store: open %s: %w", path, err)
		}
		f.Close()
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return gateway.FieldErrorf(gateway.EInvalidField, "store.dsn", "bad SQLite DSN query: %v", err)
	}
	base := func(extra map[string]string) string {
		q := url.Values{}
		for k, v := range params {
			q[k] = v
		}
		for k, v := range extra {
			if q.Get(k) == "" {
				q.Set(k, v)
			}
		}
		return "file:" + path + "?" + q.Encode()
	}
	common := map[string]string{"_busy_timeout": "10000", "_foreign_keys": "1", "_synchronous": "NORMAL"}
	wextra := map[string]string{"_journal_mode": "WAL", "_txlock": "immediate"}
	for k, v := range common {
		wextra[k] = v
	}
	w, err := openSingle(base(wextra) + fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)&_pragma=journal_size_limit(%d)",
		writerCheckpointPages, walSizeLimit))
	if err != nil {
		return err
	}
	db.writer = w
	if memory {
		db.reader = w
		return nil
	}
	rextra := map[string]string{"_query_only": "1"}
	for k, v := range common {
		rextra[k] = v
	}
	r, err := dbsql.Open("sqlite", base(rextra))
	if err != nil {
		w.Close()
		return fmt.Errorf("store: open sqlite: %w", err)
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	db.reader = r
	c, err := openSingle(base(common))
	if err != nil {
		w.Close()
		r.Close()
		return err
	}
	db.checkpointConn = c
	return nil
}

// openSingle opens a SQLite pool of one connection, kept for the life of the store.
func openSingle(dsn string) (*dbsql.DB, error) {
	d, err := dbsql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	d.SetMaxOpenConns(1)
	d.SetMaxIdleConns(1)
	d.SetConnMaxLifetime(0)
	d.SetConnMaxIdleTime(0)
	return d, nil
}

func (db *DB) openPostgres(dsn string, conns int) error {
	if strings.TrimSpace(dsn) == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "store.dsn", "the PostgreSQL store needs a DSN (postgres://…)")
	}
	db.pg = true
	p, err := dbsql.Open("pgx", dsn)
	if err != nil {
		return fmt.Errorf("store: open postgres: %w", err)
	}
	p.SetMaxOpenConns(conns + 2)
	p.SetMaxIdleConns(conns + 2)
	p.SetConnMaxIdleTime(5 * time.Minute)
	db.writer, db.reader = p, p
	return nil
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.writer.PingContext(ctx); err != nil {
		return gateway.WrapError(gateway.EUnavailable, err, "store unavailable")
	}
	if db.reader != db.writer {
		if err := db.reader.PingContext(ctx); err != nil {
			return gateway.WrapError(gateway.EUnavailable, err, "store unavailable")
		}
	}
	return nil
}

// Close stops the writer after it has committed every write already queued, then closes the
// database. Writes submitted afterwards fail with unavailable.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		if db.quit != nil {
			close(db.quit)
			<-db.stopped
		}
		if db.checkpointQuit != nil {
			close(db.checkpointQuit)
			<-db.checkpointStopped
		}
		db.closeErr = db.closeDBs()
	})
	return db.closeErr
}

func (db *DB) closeDBs() error {
	var errs []error
	for _, st := range db.stmts {
		errs = append(errs, st.Close())
	}
	db.reads.Range(func(_, st any) bool {
		errs = append(errs, st.(*dbsql.Stmt).Close())
		return true
	})
	if db.reader != nil && db.reader != db.writer {
		errs = append(errs, db.reader.Close())
	}
	if db.checkpointConn != nil {
		errs = append(errs, db.checkpointConn.Close())
	}
	if db.writer != nil {
		errs = append(errs, db.writer.Close())
	}
	errs = append(errs, db.vault.close())
	return errors.Join(errs...)
}

// q rewrites a query written with ? placeholders for the engine: $1, $2 … for PostgreSQL.
func (db *DB) q(query string) string {
	if !db.pg {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// micros and fromMicros convert timestamps to and from their stored form.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// dbErr gives a database error a code: a *gateway.Error keeps its own, a context that ended is
// timeout or unavailable, anything else internal. The cause stays wrapped for logs.
func dbErr(op string, err error) error {
	var ge *gateway.Error
	switch {
	case errors.As(err, &ge):
		return fmt.Errorf("store: %s: %w", op, err)
	case errors.Is(err, context.DeadlineExceeded):
		return gateway.WrapError(gateway.ETimeout, err, "store: %s timed out", op)
	case errors.Is(err, context.Canceled):
		return gateway.WrapError(gateway.EUnavailable, err, "store: %s cancelled", op)
	}
	return gateway.WrapError(gateway.EInternal, err, "store: %s failed", op)
}
