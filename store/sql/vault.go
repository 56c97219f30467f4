package sql

import (
	"context"
	dbsql "database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// The key vault holds the wrapped tenant and subject keys (DESIGN.md §3.6) apart from the data.
//
// Why apart: crypto-shredding only works if the thing destroyed is absent from every copy that
// outlives the erasure. A backup of the data database taken before an erasure holds the
// subject's ciphertexts; if it also held the subject's wrapped data key, that backup plus the
// master key (which lives on, in config) would still open them. With the keys in their own
// store, a data backup holds ciphertexts only: they open with the live vault, and an erased
// subject's key is no longer in it. The vault is tiny and is backed up on its own schedule
// (short retention, or a restore that re-applies erasures); a data backup never contains it.
//
// SQLite: a file of its own beside the data file (switchboard.db → switchboard.keys.db) in
// rollback-journal mode with secure_delete on, so a deleted key is overwritten in the file and
// no write-ahead log keeps an old copy of the page. PostgreSQL: Config.KeysDSN names another
// database (or the same one, which keeps the tables apart but not its backups).
type vault struct {
	db *dbsql.DB
	pg bool
}

const (
	vaultSelectTenantKey  = "SELECT key_id, wrapped FROM vault_tenant_keys WHERE tenant = ?"
	vaultInsertTenantKey  = "INSERT INTO vault_tenant_keys (tenant, key_id, wrapped, created_at, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
	vaultSelectSubjectKey = "SELECT key_id, wrapped FROM vault_subject_keys WHERE tenant = ? AND subject = ?"
	vaultInsertSubjectKey = "INSERT INTO vault_subject_keys (tenant, subject, key_id, wrapped, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

func vaultSchema(pg bool) []string {
	blob := "BLOB"
	if pg {
		blob = "BYTEA"
	}
	return []string{
		`CREATE TABLE IF NOT EXISTS vault_tenant_keys (
			tenant TEXT PRIMARY KEY, key_id TEXT NOT NULL, wrapped ` + blob + ` NOT NULL,
			created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS vault_tenant_keys_key_id ON vault_tenant_keys (key_id)`,
		`CREATE TABLE IF NOT EXISTS vault_subject_keys (
			tenant TEXT NOT NULL, subject TEXT NOT NULL, key_id TEXT NOT NULL, wrapped ` + blob + ` NOT NULL,
			created_at BIGINT NOT NULL, PRIMARY KEY (tenant, subject))`,
	}
}

// VaultPath is where the SQLite key vault of a data file lives when Config.KeysDSN is empty:
// beside it, with ".keys" before the extension.
func VaultPath(dataPath string) string {
	ext := filepath.Ext(dataPath)
	return strings.TrimSuffix(dataPath, ext) + ".keys" + ext
}

func (db *DB) openVault(ctx context.Context, cfg Config) error {
	v := &vault{pg: db.pg}
	dsn := cfg.KeysDSN
	if db.pg {
		if dsn == "" {
			dsn = cfg.DSN
		}
		p, err := dbsql.Open("pgx", dsn)
		if err != nil {
			return fmt.Errorf("store: open key vault: %w", err)
		}
		p.SetMaxOpenConns(4)
		v.db = p
	} else {
		path := strings.TrimPrefix(dsn, "file:")
		if path == "" {
			data, query, _ := strings.Cut(strings.TrimPrefix(cfg.DSN, "file:"), "?")
			if data == ":memory:" || strings.Contains(query, "mode=memory") {
				path = ":memory:"
			} else {
				path = VaultPath(data)
			}
		}
		path, _, _ = strings.Cut(path, "?")
		if path != ":memory:" {
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				return fmt.Errorf("store: open key vault %s: %w", path, err)
			}
			f.Close()
		}
		q := url.Values{}
		q.Set("_busy_timeout", "10000")
		q.Set("_journal_mode", "DELETE")
		q.Set("_synchronous", "FULL")
		q.Set("_txlock", "immediate")
		q.Add("_pragma", "secure_delete(1)")
		s, err := dbsql.Open("sqlite", "file:"+path+"?"+q.Encode())
		if err != nil {
			return fmt.Errorf("store: open key vault: %w", err)
		}
		// Keys are read once per process and subject (the keyring caches them) and written rarely.
		s.SetMaxOpenConns(1)
		s.SetConnMaxLifetime(0)
		s.SetConnMaxIdleTime(0)
		v.db = s
	}
	if err := createVault(ctx, v.db, db.pg); err != nil {
		v.db.Close()
		return err
	}
	db.vault = v
	return db.moveKeysToVault(ctx)
}

// moveKeysToVault moves keys that an earlier version stored in the data database (tables
// tenant_keys and subject_keys) into the vault, then deletes them there, overwriting the freed
// pages on SQLite.
func (db *DB) moveKeysToVault(ctx context.Context) error {
	var n int
	if err := db.writer.QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM tenant_keys) + (SELECT COUNT(*) FROM subject_keys)").Scan(&n); err != nil {
		return dbErr("look for keys in the data database", err)
	}
	if n == 0 {
		return nil
	}
	type row struct {
		a, b, keyID string
		wrapped     []byte
		at, upd     int64
	}
	read := func(query string, tenantTable bool) ([]row, error) {
		rows, err := db.writer.QueryContext(ctx, query)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []row
		for rows.Next() {
			var r row
			if tenantTable {
				err = rows.Scan(&r.a, &r.keyID, &r.wrapped, &r.at, &r.upd)
			} else {
				err = rows.Scan(&r.a, &r.b, &r.keyID, &r.wrapped, &r.at)
			}
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, rows.Err()
	}
	tks, err := read("SELECT tenant, key_id, wrapped, created_at, updated_at FROM tenant_keys", true)
	if err != nil {
		return dbErr("read legacy tenant keys", err)
	}
	sks, err := read("SELECT tenant, subject, key_id, wrapped, created_at FROM subject_keys", false)
	if err != nil {
		return dbErr("read legacy subject keys", err)
	}
	tx, err := db.vault.db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr("move keys to the vault", err)
	}
	defer tx.Rollback()
	for _, r := range tks {
		if _, err := tx.ExecContext(ctx, db.q(vaultInsertTenantKey), r.a, r.keyID, r.wrapped, r.at, r.upd); err != nil {
			return dbErr("move keys to the vault", err)
		}
	}
	for _, r := range sks {
		if _, err := tx.ExecContext(ctx, db.q(vaultInsertSubjectKey), r.a, r.b, r.keyID, r.wrapped, r.at); err != nil {
			return dbErr("move keys to the vault", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return dbErr("move keys to the vault", err)
	}
	if !db.pg {
		if _, err := db.writer.ExecContext(ctx, "PRAGMA secure_delete = 1"); err != nil {
			return dbErr("move keys to the vault", err)
		}
		defer db.writer.ExecContext(context.WithoutCancel(ctx), "PRAGMA secure_delete = 0")
	}
	for _, q := range []string{"DELETE FROM subject_keys", "DELETE FROM tenant_keys"} {
		if _, err := db.writer.ExecContext(ctx, q); err != nil {
			return dbErr("move keys to the vault", err)
		}
	}
	db.log.Info().Int("tenant_keys", len(tks)).Int("subject_keys", len(sks)).Msg("moved wrapped keys from the data database to the key vault")
	return nil
}

func (v *vault) q(query string) string {
	if !v.pg {
		return query
	}
	return (&DB{pg: true}).q(query)
}

func (v *vault) close() error {
	if v == nil || v.db == nil {
		return nil
	}
	return v.db.Close()
}

func (v *vault) get(ctx context.Context, query string, args ...any) (crypt.WrappedKey, error) {
	var k crypt.WrappedKey
	err := v.db.QueryRowContext(ctx, v.q(query), args...).Scan(&k.KeyID, &k.Wrapped)
	return k, err
}

func (v *vault) create(ctx context.Context, insert, sel string, ins []any, key []any) (crypt.WrappedKey, error) {
	tx, err := v.db.BeginTx(ctx, nil)
	if err != nil {
		return crypt.WrappedKey{}, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, v.q(insert), ins...); err != nil {
		return crypt.WrappedKey{}, err
	}
	var k crypt.WrappedKey
	if err := tx.QueryRowContext(ctx, v.q(sel), key...).Scan(&k.KeyID, &k.Wrapped); err != nil {
		return crypt.WrappedKey{}, err
	}
	return k, tx.Commit()
}

// DestroySubjectKey deletes the subject's wrapped data key from the vault and drops it from the
// keyring's cache: from then on nothing sealed for the subject opens, wherever a copy of it is
// (crypto-shredding). It reports whether there was a key.
func (db *DB) DestroySubjectKey(ctx context.Context, tenant, subject string) (bool, error) {
	res, err := db.vault.db.ExecContext(ctx, db.vault.q("DELETE FROM vault_subject_keys WHERE tenant = ? AND subject = ?"), tenant, subject)
	if err != nil {
		return false, dbErr("destroy subject key", err)
	}
	if k := db.keyring.Load(); k != nil {
		k.Forget(tenant, subject)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// KeyCount is how many keys one wrapping key wraps.
type KeyCount struct {
	Kind  string // "tenant" (wrapped by a master key) or "subject" (wrapped by a tenant key)
	KeyID string
	Count int64
}

// KeyStatus counts the vault's keys by the key that wraps them.
func (db *DB) KeyStatus(ctx context.Context) ([]KeyCount, error) {
	rows, err := db.vault.db.QueryContext(ctx, `SELECT 'tenant', key_id, COUNT(*) FROM vault_tenant_keys GROUP BY key_id
		UNION ALL SELECT 'subject', key_id, COUNT(*) FROM vault_subject_keys GROUP BY key_id ORDER BY 1, 2`)
	if err != nil {
		return nil, dbErr("key status", err)
	}
	defer rows.Close()
	var out []KeyCount
	for rows.Next() {
		var c KeyCount
		if err := rows.Scan(&c.Kind, &c.KeyID, &c.Count); err != nil {
			return nil, dbErr("key status", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// vaultLock serialises the key vault's schema creation across processes on PostgreSQL, where two
// replicas starting at once would otherwise race on CREATE TABLE IF NOT EXISTS.
const vaultLock = 7716200402

func createVault(ctx context.Context, db *dbsql.DB, pg bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return dbErr("create key vault", err)
	}
	defer tx.Rollback()
	if pg {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(vaultLock)); err != nil {
			return dbErr("create key vault", err)
		}
	}
	for _, st := range vaultSchema(pg) {
		if _, err := tx.ExecContext(ctx, st); err != nil {
			return dbErr("create key vault", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return dbErr("create key vault", err)
	}
	return nil
}
