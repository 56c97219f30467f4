package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"slices"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

var (
	_ store.Tags            = (*DB)(nil)
	_ store.AutomationState = (*DB)(nil)
)

// ReportTags counts the contact tags an erasure deleted.
const ReportTags = "contact_tags"

// UpdateTags implements store.Tags.
func (db *DB) UpdateTags(ctx context.Context, tenant string, subject gateway.Address, add, remove []string) error {
	kr, err := db.kr()
	if err != nil {
		return err
	}
	if subject.IsZero() {
		return gateway.FieldErrorf(gateway.EMissingField, "subject", "a subject is required")
	}
	index, err := kr.BlindIndex(ctx, tenant, subject.String())
	if err != nil {
		return err
	}
	now := micros(db.now())
	return db.write(ctx, "update tags", func(ctx context.Context, tx *wtx) error {
		for _, tag := range add {
			if _, err := tx.exec(ctx, `INSERT INTO contact_tags (tenant, subject, tag, created_at) VALUES (?, ?, ?, ?)
				ON CONFLICT DO NOTHING`, tenant, index, tag, now); err != nil {
				return err
			}
		}
		for _, tag := range remove {
			if _, err := tx.exec(ctx, "DELETE FROM contact_tags WHERE tenant = ? AND subject = ? AND tag = ?", tenant, index, tag); err != nil {
				return err
			}
		}
		return nil
	})
}

// Tags implements store.Tags.
func (db *DB) Tags(ctx context.Context, tenant string, subject gateway.Address) ([]string, error) {
	index, err := db.subjectIndex(ctx, tenant, subject)
	if err != nil {
		return nil, err
	}
	rows, err := db.readRows(ctx, db.q("SELECT tag FROM contact_tags WHERE tenant = ? AND subject = ?"), tenant, index)
	if err != nil {
		return nil, dbErr("read tags", err)
	}
	defer rows.Close()
	tags := []string{}
	for rows.Next() {
		var tag string
		if err := rows.Scan(&tag); err != nil {
			return nil, dbErr("read tags", err)
		}
		tags = append(tags, tag)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("read tags", err)
	}
	slices.Sort(tags)
	return tags, nil
}

// LastFired implements store.AutomationState.
func (db *DB) LastFired(ctx context.Context, tenant, rule string) (time.Time, bool, error) {
	var at int64
	err := db.readRow(ctx, db.q("SELECT fired_at FROM automation_fired WHERE tenant = ? AND rule = ?"), tenant, rule).Scan(&at)
	if errors.Is(err, dbsql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, dbErr("read fired-at", err)
	}
	return fromMicros(at), true, nil
}

// SetFired implements store.AutomationState.
func (db *DB) SetFired(ctx context.Context, tenant, rule string, at time.Time) error {
	return db.write(ctx, "set fired-at", func(ctx context.Context, tx *wtx) error {
		_, err := tx.exec(ctx, `INSERT INTO automation_fired (tenant, rule, fired_at) VALUES (?, ?, ?)
			ON CONFLICT (tenant, rule) DO UPDATE SET fired_at = excluded.fired_at WHERE automation_fired.fired_at < excluded.fired_at`,
			tenant, rule, micros(at))
		return err
	})
}

// ActionDone implements store.AutomationState.
func (db *DB) ActionDone(ctx context.Context, tenant, actionID string) (bool, error) {
	var n int
	err := db.readRow(ctx, db.q("SELECT 1 FROM automation_actions WHERE tenant = ? AND action_id = ?"), tenant, actionID).Scan(&n)
	if errors.Is(err, dbsql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, dbErr("read action", err)
	}
	return true, nil
}

// MarkActionDone implements store.AutomationState.
func (db *DB) MarkActionDone(ctx context.Context, tenant, actionID string, at time.Time) error {
	return db.write(ctx, "mark action done", func(ctx context.Context, tx *wtx) error {
		_, err := tx.exec(ctx, "INSERT INTO automation_actions (tenant, action_id, done_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
			tenant, actionID, micros(at))
		return err
	})
}

// LastOutbound implements store.AutomationState.
func (db *DB) LastOutbound(ctx context.Context, tenant string, ch gateway.Channel, account string, peer gateway.Address) (*gateway.Message, error) {
	index, err := db.subjectIndex(ctx, tenant, peer)
	if err != nil {
		return nil, err
	}
	var id string
	err = db.readRow(ctx, db.q(`SELECT id FROM messages WHERE tenant = ? AND peer_index = ? AND direction = ? AND channel = ? AND account = ?
		ORDER BY created_at DESC, id DESC LIMIT 1`), tenant, index, string(gateway.Outbound), string(ch), account).Scan(&id)
	if errors.Is(err, dbsql.ErrNoRows) {
		return nil, gateway.Errorf(gateway.ENotFound, "no outbound message to this peer")
	}
	if err != nil {
		return nil, dbErr("read last outbound", err)
	}
	return db.Message(ctx, tenant, id, false)
}
