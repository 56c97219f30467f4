// Package credstore keeps channel credentials and small pieces of channel state — MSAL token
// caches, client secrets, Teams subscription and polling state — as encrypted blobs in the
// gateway's database (DESIGN.md §3.6: "channel credentials … are encrypted").
//
// A blob is addressed by tenant, channel, account and name. Its value is sealed with the tenant
// key (SealTenant) under the associated data tenant|credentials|<channel>/<account>/<name>|value,
// so a ciphertext copied to another row fails to open. Only the four address parts are stored in
// the clear: callers must not put identifiers of people (Teams ids, phone numbers) into a name.
//
// The table `credentials` is created by Migrate, idempotently, on SQLite (modernc.org/sqlite) and
// PostgreSQL (pgx stdlib); it is independent of store/sql's migrations.
package credstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Table is the name of the table credstore owns.
const Table = "credentials"

// Dialect names the SQL engine behind the *sql.DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// ParseDialect accepts the driver names used in config (sqlite, sqlite3, postgres, postgresql, pgx).
func ParseDialect(s string) (Dialect, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "sqlite", "sqlite3":
		return SQLite, nil
	case "postgres", "postgresql", "pgx":
		return Postgres, nil
	}
	return "", gateway.FieldErrorf(gateway.EInvalidField, "store.driver", "unknown database driver %q: use sqlite or postgres", s)
}

// AD is the associated data of a sealed value: tenant|Table|Row|Column (the keyring adds the
// tenant). It mirrors crypt.AD so this package does not depend on the keyring's types.
type AD struct{ Table, Row, Column string }

// Sealer is what credstore needs from the keyring: tenant-level sealing. Keyring adapts a
// *crypt.Keyring.
type Sealer interface {
	SealTenant(ctx context.Context, tenant string, ad AD, plaintext []byte) ([]byte, error)
	OpenTenant(ctx context.Context, tenant string, ad AD, ciphertext []byte) ([]byte, error)
}

// Key addresses one blob.
type Key struct {
	Tenant  string // our tenant id
	Channel string // "teams", "whatsapp", …
	Account string // our account name
	Name    string // what it is: "msal_cache", "client_secret", "poll_state" …
}

func (k Key) valid() error {
	for _, p := range []struct{ field, v string }{
		{"tenant", k.Tenant}, {"channel", k.Channel}, {"account", k.Account}, {"name", k.Name},
	} {
		if p.v == "" {
			return gateway.FieldErrorf(gateway.EMissingField, p.field, "credential %s is required", p.field)
		}
		if len(p.v) > 200 || strings.ContainsAny(p.v, "/\x00") {
			return gateway.FieldErrorf(gateway.EInvalidField, p.field, "credential %s must be at most 200 characters without '/'", p.field)
		}
	}
	return nil
}

// row is the row id bound into the associated data.
func (k Key) row() string { return k.Channel + "/" + k.Account + "/" + k.Name }

// String names the key without secrets, for logs and errors.
func (k Key) String() string { return k.Tenant + "/" + k.row() }

// Store is the encrypted blob store. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	dialect Dialect
	sealer  Sealer
	now     func() time.Time
}

// New returns a Store over db. Call Migrate once before use.
func New(db *sql.DB, dialect Dialect, sealer Sealer) (*Store, error) {
	if db == nil || sealer == nil {
		return nil, errors.New("credstore: a database and a sealer are required")
	}
	if dialect != SQLite && dialect != Postgres {
		return nil, fmt.Errorf("credstore: unknown dialect %q", dialect)
	}
	return &Store{db: db, dialect: dialect, sealer: sealer, now: time.Now}, nil
}

// Migrate creates the credentials table if it does not exist. It is safe to run at every start,
// and concurrently from several replicas.
func (s *Store) Migrate(ctx context.Context) error {
	blob := "BLOB"
	if s.dialect == Postgres {
		blob = "BYTEA"
	}
	stmt := `CREATE TABLE IF NOT EXISTS ` + Table + ` (
		tenant TEXT NOT NULL,
		channel TEXT NOT NULL,
		account TEXT NOT NULL,
		name TEXT NOT NULL,
		value ` + blob + ` NOT NULL,
		version BIGINT NOT NULL,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (tenant, channel, account, name)
	)`
	if _, err := s.db.ExecContext(ctx, stmt); err != nil {
		// Two replicas racing on CREATE TABLE IF NOT EXISTS can make PostgreSQL report a unique
		// violation on its catalog; the table exists either way.
		if s.dialect == Postgres && strings.Contains(err.Error(), "pg_type_typname_nsp_index") {
			return nil
		}
		return fmt.Errorf("credstore: migrate: %w", err)
	}
	return nil
}

func (s *Store) rebind(q string) string {
	if s.dialect != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (s *Store) ad(k Key) AD { return AD{Table: Table, Row: k.row(), Column: "value"} }

// Get returns the plaintext of the blob at k, or an error with code gateway.ENotFound.
func (s *Store) Get(ctx context.Context, k Key) ([]byte, error) {
	v, _, err := s.GetVersion(ctx, k)
	return v, err
}

// GetVersion returns the plaintext and its version (incremented by every Put), for
// compare-and-swap updates with PutIfVersion.
func (s *Store) GetVersion(ctx context.Context, k Key) ([]byte, int64, error) {
	if err := k.valid(); err != nil {
		return nil, 0, err
	}
	var ct []byte
	var version int64
	err := s.db.QueryRowContext(ctx, s.rebind(`SELECT value, version FROM `+Table+` WHERE tenant = ? AND channel = ? AND account = ? AND name = ?`),
		k.Tenant, k.Channel, k.Account, k.Name).Scan(&ct, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, gateway.Errorf(gateway.ENotFound, "no credential %s", k)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("credstore: get %s: %w", k, err)
	}
	pt, err := s.sealer.OpenTenant(ctx, k.Tenant, s.ad(k), ct)
	if err != nil {
		return nil, 0, fmt.Errorf("credstore: open %s: %w", k, err)
	}
	return pt, version, nil
}

// Put seals value and stores it at k, replacing what was there.
func (s *Store) Put(ctx context.Context, k Key, value []byte) error {
	if err := k.valid(); err != nil {
		return err
	}
	ct, err := s.sealer.SealTenant(ctx, k.Tenant, s.ad(k), value)
	if err != nil {
		return fmt.Errorf("credstore: seal %s: %w", k, err)
	}
	_, err = s.db.ExecContext(ctx, s.rebind(`INSERT INTO `+Table+` (tenant, channel, account, name, value, version, updated_at)
		VALUES (?, ?, ?, ?, ?, 1, ?)
		ON CONFLICT (tenant, channel, account, name)
		DO UPDATE SET value = excluded.value, version = `+Table+`.version + 1, updated_at = excluded.updated_at`),
		k.Tenant, k.Channel, k.Account, k.Name, ct, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("credstore: put %s: %w", k, err)
	}
	return nil
}

// PutIfVersion stores value at k only if the stored version is still version (0: only if absent).
// It returns a gateway.EConflict error when another writer got there first.
func (s *Store) PutIfVersion(ctx context.Context, k Key, version int64, value []byte) error {
	if err := k.valid(); err != nil {
		return err
	}
	ct, err := s.sealer.SealTenant(ctx, k.Tenant, s.ad(k), value)
	if err != nil {
		return fmt.Errorf("credstore: seal %s: %w", k, err)
	}
	var res sql.Result
	if version == 0 {
		res, err = s.db.ExecContext(ctx, s.rebind(`INSERT INTO `+Table+` (tenant, channel, account, name, value, version, updated_at)
			VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (tenant, channel, account, name) DO NOTHING`),
			k.Tenant, k.Channel, k.Account, k.Name, ct, s.now().UnixMilli())
	} else {
		res, err = s.db.ExecContext(ctx, s.rebind(`UPDATE `+Table+` SET value = ?, version = version + 1, updated_at = ?
			WHERE tenant = ? AND channel = ? AND account = ? AND name = ? AND version = ?`),
			ct, s.now().UnixMilli(), k.Tenant, k.Channel, k.Account, k.Name, version)
	}
	if err != nil {
		return fmt.Errorf("credstore: put %s: %w", k, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("credstore: put %s: %w", k, err)
	} else if n == 0 {
		return gateway.Errorf(gateway.EConflict, "credential %s changed concurrently", k)
	}
	return nil
}

// Delete removes the blob at k. Deleting what is absent is not an error.
func (s *Store) Delete(ctx context.Context, k Key) error {
	if err := k.valid(); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.rebind(`DELETE FROM `+Table+` WHERE tenant = ? AND channel = ? AND account = ? AND name = ?`),
		k.Tenant, k.Channel, k.Account, k.Name)
	if err != nil {
		return fmt.Errorf("credstore: delete %s: %w", k, err)
	}
	return nil
}

// Names lists the names stored for one account, sorted.
func (s *Store) Names(ctx context.Context, tenant, channel, account string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.rebind(`SELECT name FROM `+Table+` WHERE tenant = ? AND channel = ? AND account = ? ORDER BY name`),
		tenant, channel, account)
	if err != nil {
		return nil, fmt.Errorf("credstore: list: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("credstore: list: %w", err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// DeleteAccount removes every blob of one account (logout, account removed from config).
func (s *Store) DeleteAccount(ctx context.Context, tenant, channel, account string) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.rebind(`DELETE FROM `+Table+` WHERE tenant = ? AND channel = ? AND account = ?`),
		tenant, channel, account)
	if err != nil {
		return 0, fmt.Errorf("credstore: delete account: %w", err)
	}
	return res.RowsAffected()
}

// DeleteTenant removes every blob of a tenant (tenant erasure; the tenant key's destruction
// makes copies in backups unreadable too).
func (s *Store) DeleteTenant(ctx context.Context, tenant string) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.rebind(`DELETE FROM `+Table+` WHERE tenant = ?`), tenant)
	if err != nil {
		return 0, fmt.Errorf("credstore: delete tenant: %w", err)
	}
	return res.RowsAffected()
}
