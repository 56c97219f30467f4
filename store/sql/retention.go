package sql

import (
	"context"
	"time"
)

// PurgeContent clears the content (bodies, media references) of up to limit of the tenant's
// messages created before `before`; the rest of each message (status, history, metadata) stays.
// It returns how many it cleared: call again until 0.
func (db *DB) PurgeContent(ctx context.Context, tenant string, before time.Time, limit int) (int64, error) {
	var n int64
	err := db.write(ctx, "purge content", func(ctx context.Context, tx *wtx) error {
		res, err := tx.exec(ctx, `UPDATE messages SET content_ct = NULL WHERE id IN (
			SELECT id FROM messages WHERE tenant = ? AND created_at < ? AND content_ct IS NOT NULL LIMIT ?)`,
			tenant, micros(before), limit)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

// PurgeMessages deletes up to limit of the tenant's messages created before `before` (only
// inbound ones when inboundOnly), with their status history, counting them into the usage
// counts first. It returns how many messages and events it deleted: call again until 0.
func (db *DB) PurgeMessages(ctx context.Context, tenant string, before time.Time, inboundOnly bool, limit int) (msgs, events int64, err error) {
	query := "SELECT id FROM messages WHERE tenant = ? AND created_at < ? LIMIT ?"
	if inboundOnly {
		query = "SELECT id FROM messages WHERE tenant = ? AND created_at < ? AND direction = 'in' LIMIT ?"
	}
	err = db.write(ctx, "purge messages", func(ctx context.Context, tx *wtx) error {
		msgs, events = 0, 0
		ids, err := messageIDs(ctx, tx, db.q(query), tenant, micros(before), limit)
		if err != nil || len(ids) == 0 {
			return err
		}
		msgs, events, err = deleteMessages(ctx, tx, ids)
		return err
	})
	return msgs, events, err
}
