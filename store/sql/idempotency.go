package sql

import (
	"context"
	dbsql "database/sql"
	"errors"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

var _ store.IdempotencyFinder = (*DB)(nil)

// MessageByIdempotencyKey implements store.IdempotencyFinder: the tenant's message created with
// key (with its content, as a replay of CreateMessage returns it) and its request hash.
func (db *DB) MessageByIdempotencyKey(ctx context.Context, tenant, key string) (*gateway.Message, string, error) {
	if key == "" {
		return nil, "", gateway.Errorf(gateway.ENotFound, "no idempotency key")
	}
	var id, hash string
	err := db.readRow(ctx, db.q(selectIdempotent), tenant, key).Scan(&id, &hash)
	if errors.Is(err, dbsql.ErrNoRows) {
		return nil, "", gateway.Errorf(gateway.ENotFound, "no message with this idempotency key")
	}
	if err != nil {
		return nil, "", dbErr("find message by idempotency key", err)
	}
	m, err := db.Message(ctx, tenant, id, true)
	if err != nil {
		return nil, "", err
	}
	return m, hash, nil
}
