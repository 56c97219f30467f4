package sql

import (
	"context"
	"crypto/sha256"
	dbsql "database/sql"
	"encoding/hex"
	"errors"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// TenantKey implements crypt.KeyStore, from the key vault (vault.go).
func (db *DB) TenantKey(ctx context.Context, tenant string) (crypt.WrappedKey, error) {
	k, err := db.vault.get(ctx, vaultSelectTenantKey, tenant)
	if errors.Is(err, dbsql.ErrNoRows) {
		return k, gateway.Errorf(gateway.ENotFound, "no key for tenant %s", tenant)
	}
	if err != nil {
		return k, dbErr("read tenant key", err)
	}
	return k, nil
}

// CreateTenantKey implements crypt.KeyStore: it stores k unless the tenant has a key already, and
// returns the stored key either way.
func (db *DB) CreateTenantKey(ctx context.Context, tenant string, k crypt.WrappedKey) (crypt.WrappedKey, error) {
	now := micros(db.now())
	stored, err := db.vault.create(ctx, vaultInsertTenantKey, vaultSelectTenantKey,
		[]any{tenant, k.KeyID, k.Wrapped, now, now}, []any{tenant})
	if err != nil {
		return stored, dbErr("create tenant key", err)
	}
	return stored, nil
}

// SubjectKey implements crypt.KeyStore, from the key vault.
func (db *DB) SubjectKey(ctx context.Context, tenant, subject string) (crypt.WrappedKey, error) {
	k, err := db.vault.get(ctx, vaultSelectSubjectKey, tenant, subject)
	if errors.Is(err, dbsql.ErrNoRows) {
		return k, gateway.Errorf(gateway.ENotFound, "no data key for subject %s", crypt.ShortSubject(subject))
	}
	if err != nil {
		return k, dbErr("read subject key", err)
	}
	return k, nil
}

// CreateSubjectKey implements crypt.KeyStore, like CreateTenantKey.
func (db *DB) CreateSubjectKey(ctx context.Context, tenant, subject string, k crypt.WrappedKey) (crypt.WrappedKey, error) {
	stored, err := db.vault.create(ctx, vaultInsertSubjectKey, vaultSelectSubjectKey,
		[]any{tenant, subject, k.KeyID, k.Wrapped, micros(db.now())}, []any{tenant, subject})
	if err != nil {
		return stored, dbErr("create subject key", err)
	}
	return stored, nil
}

// EnsureTenant implements store.Tenants.
func (db *DB) EnsureTenant(ctx context.Context, tenant string) error {
	if tenant == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "tenant", "a tenant id is required")
	}
	_, err := db.writer.ExecContext(ctx, db.q("INSERT INTO tenants (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING"), tenant, micros(db.now()))
	if err != nil {
		return dbErr("ensure tenant", err)
	}
	return nil
}

// apiKeyPrefixLen is how much of a secret is kept to recognise a key in a list (sbk_ and a few
// characters: far too little to guess the rest).
const apiKeyPrefixLen = 10

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// CreateAPIKey implements store.Tenants: it stores the SHA-256 of secret (a high-entropy random
// string, so a fast hash is enough), ensuring the tenant exists.
func (db *DB) CreateAPIKey(ctx context.Context, tenant, name, secret string) (gateway.APIKey, error) {
	if tenant == "" {
		return gateway.APIKey{}, gateway.FieldErrorf(gateway.EMissingField, "tenant", "a tenant id is required")
	}
	if len(secret) < 16 {
		return gateway.APIKey{}, gateway.FieldErrorf(gateway.EInvalidField, "secret", "an API key secret must be at least 16 characters")
	}
	now := db.now().UTC().Truncate(1e3)
	k := gateway.APIKey{
		ID:        gateway.NewID("key"),
		Tenant:    tenant,
		Name:      name,
		Prefix:    secret[:apiKeyPrefixLen],
		CreatedAt: now,
	}
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return gateway.APIKey{}, dbErr("create api key", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, db.q("INSERT INTO tenants (id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING"), tenant, micros(now)); err != nil {
		return gateway.APIKey{}, dbErr("create api key", err)
	}
	res, err := tx.ExecContext(ctx, db.q(`INSERT INTO api_keys (id, tenant, name, prefix, hash, created_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`), k.ID, tenant, name, k.Prefix, hashSecret(secret), micros(now))
	if err != nil {
		return gateway.APIKey{}, dbErr("create api key", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return gateway.APIKey{}, gateway.Errorf(gateway.EConflict, "an API key with this secret exists already")
	}
	if err := tx.Commit(); err != nil {
		return gateway.APIKey{}, dbErr("create api key", err)
	}
	return k, nil
}

// APIKeyBySecret implements store.Tenants. Revoked keys are not found.
func (db *DB) APIKeyBySecret(ctx context.Context, secret string) (gateway.APIKey, error) {
	var k gateway.APIKey
	var created, admin int64
	err := db.readRow(ctx, db.q("SELECT id, tenant, name, prefix, created_at, admin FROM api_keys WHERE hash = ? AND revoked_at IS NULL"),
		hashSecret(secret)).Scan(&k.ID, &k.Tenant, &k.Name, &k.Prefix, &created, &admin)
	if errors.Is(err, dbsql.ErrNoRows) {
		return gateway.APIKey{}, gateway.Errorf(gateway.ENotFound, "no such API key")
	}
	if err != nil {
		return gateway.APIKey{}, dbErr("read api key", err)
	}
	k.CreatedAt, k.Admin = fromMicros(created), admin != 0
	return k, nil
}

// GrantAdmin gives one of the tenant's live API keys the admin scope (it may erase the tenant);
// ENotFound when there is no such key.
func (db *DB) GrantAdmin(ctx context.Context, tenant, id string) error {
	res, err := db.writer.ExecContext(ctx, db.q("UPDATE api_keys SET admin = 1 WHERE tenant = ? AND id = ? AND revoked_at IS NULL"), tenant, id)
	if err != nil {
		return dbErr("grant admin", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return gateway.Errorf(gateway.ENotFound, "no live API key %s", id)
	}
	return nil
}

// RevokeAPIKey marks one of the tenant's keys revoked; ENotFound when it has no such live key.
func (db *DB) RevokeAPIKey(ctx context.Context, tenant, id string) error {
	res, err := db.writer.ExecContext(ctx, db.q("UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND id = ? AND revoked_at IS NULL"),
		micros(db.now()), tenant, id)
	if err != nil {
		return dbErr("revoke api key", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return gateway.Errorf(gateway.ENotFound, "no live API key %s", id)
	}
	return nil
}
