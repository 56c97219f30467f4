// Package wastore keeps whatsmeow's device state — root keys, Signal sessions, prekeys, sender
// keys, app-state keys, message secrets, privacy tokens, the decrypted-event buffer and the
// LID↔phone mapping — in Switchboard's database, encrypted with the keyring (DESIGN.md §3.6).
//
// It implements whatsmeow's store.DeviceContainer, store.AllSessionSpecificStores and
// store.LIDStore over a *sql.DB, on SQLite (modernc.org/sqlite) and PostgreSQL (pgx stdlib). Its
// tables carry the prefix wa_ and are created by Migrate, independently of store/sql's migrations.
//
// What is stored in the clear: the tenant and account names, numeric key ids, timestamps, flags
// and the SHA-256 of ciphertexts in the event buffer. Every key, session, secret, token, name and
// plaintext is sealed with the tenant key, its associated data binding it to
// tenant|table|row|column, and every WhatsApp identifier (phone numbers, LIDs, group JIDs, Signal
// addresses) used as a lookup key is replaced by a keyed blind index, so the database file holds no
// phone number either.
//
// One Container serves one account (tenant + account name) and holds at most one device.
package wastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.mau.fi/whatsmeow/store"
	waLog "go.mau.fi/whatsmeow/util/log"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Dialect names the SQL engine behind the *sql.DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// ParseDialect accepts the driver names used in config (sqlite, sqlite3, postgres, pgx, postgresql).
func ParseDialect(s string) (Dialect, error) {
	switch strings.ToLower(s) {
	case "sqlite", "sqlite3":
		return SQLite, nil
	case "postgres", "postgresql", "pgx":
		return Postgres, nil
	}
	return "", gateway.FieldErrorf(gateway.EInvalidField, "store.driver", "unknown database driver %q: use sqlite or postgres", s)
}

// AD is the associated data of a sealed value: the keyring binds the ciphertext to
// tenant|Table|Row|Column, so a ciphertext copied to another row or column fails to open.
type AD struct{ Table, Row, Column string }

// Sealer is what wastore needs from the keyring (store/crypt): tenant-level sealing and a keyed
// blind index. KeyringSealer adapts a *crypt.Keyring.
type Sealer interface {
	SealTenant(ctx context.Context, tenant string, ad AD, plaintext []byte) ([]byte, error)
	OpenTenant(ctx context.Context, tenant string, ad AD, ciphertext []byte) ([]byte, error)
	BlindIndex(ctx context.Context, tenant, identifier string) (string, error)
}

// Container is one account's whatsmeow device store. It is safe for concurrent use.
type Container struct {
	db      *sql.DB
	dialect Dialect
	sealer  Sealer
	tenant  string
	account string
	log     waLog.Logger
	now     func() time.Time

	lids *lidMap

	// Per-device caches and locks, shared by every store of the device.
	preKeyLock   sync.Mutex
	contactLock  sync.Mutex
	contactCache map[string]*contactInfo // by JID string
	migratedPN   sync.Map                // pn signal user → struct{}
}

// Options tunes a Container. The zero value is fine.
type Options struct {
	Log waLog.Logger     // whatsmeow-style logger; nil = no logs
	Now func() time.Time // clock for event-buffer timestamps; nil = time.Now
}

// New returns the device store of one account. The tables must exist (Migrate).
func New(db *sql.DB, dialect Dialect, sealer Sealer, tenant, account string, opts Options) (*Container, error) {
	if db == nil || sealer == nil {
		return nil, errors.New("wastore: a database and a sealer are required")
	}
	if dialect != SQLite && dialect != Postgres {
		return nil, fmt.Errorf("wastore: unknown dialect %q", dialect)
	}
	if tenant == "" || account == "" {
		return nil, gateway.Errorf(gateway.EMissingField, "wastore: tenant and account are required")
	}
	c := &Container{
		db: db, dialect: dialect, sealer: sealer, tenant: tenant, account: account,
		log: opts.Log, now: opts.Now,
		contactCache: map[string]*contactInfo{},
	}
	if c.log == nil {
		c.log = waLog.Noop
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.lids = &lidMap{c: c, pnToLID: map[string]string{}, lidToPN: map[string]string{}}
	return c, nil
}

// Tenant and Account name the account this container stores.
func (c *Container) Tenant() string  { return c.tenant }
func (c *Container) Account() string { return c.account }

// Warm makes sure the tenant key exists and is cached before whatsmeow opens a decryption
// transaction: on SQLite, creating the tenant key inside that transaction would wait on our own
// write lock.
func (c *Container) Warm(ctx context.Context) error {
	if _, err := c.seal(ctx, "wa_device", "warm", "warm", []byte{0}); err != nil {
		return err
	}
	_, err := c.ix(ctx, "warm", "warm")
	return err
}

// ---- SQL helpers ----

type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type txKey struct{ c *Container }

// q returns the transaction carried by ctx (see inTx), or the database.
func (c *Container) q(ctx context.Context) querier {
	if tx, ok := ctx.Value(txKey{c}).(*sql.Tx); ok {
		return tx
	}
	return c.db
}

// inTx runs fn in a transaction, reusing the one ctx already carries. Queries made through c.q
// with the ctx fn receives run inside it.
func (c *Container) inTx(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	if _, ok := ctx.Value(txKey{c}).(*sql.Tx); ok {
		return fn(ctx)
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("wastore: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(context.WithValue(ctx, txKey{c}, tx)); err != nil {
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("wastore: commit: %w", err)
	}
	return nil
}

var placeholder = regexp.MustCompile(`\$(\d+)`)

// rebind turns $N placeholders into ?N for SQLite, which numbers parameters that way.
func (c *Container) rebind(query string) string {
	if c.dialect == SQLite {
		return placeholder.ReplaceAllString(query, "?$1")
	}
	return query
}

func (c *Container) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return c.q(ctx).ExecContext(ctx, c.rebind(query), args...)
}

func (c *Container) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return c.q(ctx).QueryContext(ctx, c.rebind(query), args...)
}

func (c *Container) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return c.q(ctx).QueryRowContext(ctx, c.rebind(query), args...)
}

// placeholders returns "$from,$from+1,…" for n parameters.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "$%d", from+i)
	}
	return b.String()
}

// ---- crypto helpers ----

// row names a row for the associated data: the account plus the row's key within the account.
func (c *Container) row(parts ...string) string {
	return c.account + "/" + strings.Join(parts, "/")
}

func (c *Container) seal(ctx context.Context, table, row, column string, plaintext []byte) ([]byte, error) {
	if plaintext == nil {
		return nil, nil
	}
	ct, err := c.sealer.SealTenant(ctx, c.tenant, AD{Table: table, Row: c.row(row), Column: column}, plaintext)
	if err != nil {
		return nil, fmt.Errorf("wastore: seal %s.%s: %w", table, column, err)
	}
	return ct, nil
}

func (c *Container) open(ctx context.Context, table, row, column string, ciphertext []byte) ([]byte, error) {
	if ciphertext == nil {
		return nil, nil
	}
	pt, err := c.sealer.OpenTenant(ctx, c.tenant, AD{Table: table, Row: c.row(row), Column: column}, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("wastore: open %s.%s: %w", table, column, err)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// ix is the blind index of a WhatsApp identifier of the given kind, used instead of the
// identifier wherever a row is looked up by it. The kind separates domains (a session address
// and a contact JID never share an index) and keeps these indexes apart from store/sql's subject
// indexes.
func (c *Container) ix(ctx context.Context, kind, value string) (string, error) {
	h, err := c.sealer.BlindIndex(ctx, c.tenant, "whatsmeow:"+kind+":"+value)
	if err != nil {
		return "", fmt.Errorf("wastore: blind index: %w", err)
	}
	return h, nil
}

// DeleteAll removes every row of this account: the device, its keys and sessions, the caches. It
// is what logout and a failed link call; afterwards nothing of the device can be read.
func (c *Container) DeleteAll(ctx context.Context) error {
	err := c.inTx(ctx, func(ctx context.Context) error {
		for _, t := range deviceTables {
			if _, err := c.exec(ctx, "DELETE FROM "+t+" WHERE tenant=$1 AND account=$2", c.tenant, c.account); err != nil {
				return fmt.Errorf("wastore: delete %s: %w", t, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.contactLock.Lock()
	c.contactCache = map[string]*contactInfo{}
	c.contactLock.Unlock()
	c.migratedPN.Clear()
	c.lids.reset()
	return nil
}

// The container is the device container and every session-specific store of its device.
var (
	_ store.DeviceContainer          = (*Container)(nil)
	_ store.AllSessionSpecificStores = (*Container)(nil)
	_ store.LIDStore                 = (*lidMap)(nil)
)
