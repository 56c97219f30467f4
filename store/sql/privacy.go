package sql

import (
	"context"
	dbsql "database/sql"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// Report kinds of an erasure (the keys of store.Erasure.Report).
const (
	ReportKeys           = "keys"
	ReportMessages       = "messages"
	ReportStatusEvents   = "status_events"
	ReportConsents       = "consents"
	ReportConsentEvents  = "consent_events"
	ReportWindows        = "reply_windows"
	ReportBypasses       = "opt_out_bypasses"
	ReportRestrictions   = "restrictions"
	ReportSuppressions   = "suppressions_kept"
	ReportPendingStopped = "pending_rejected"
)

// eraseChunk is how many messages one erasure transaction deletes: the group-commit writer
// serves the hot path between chunks.
const eraseChunk = 2000

// CreateErasure records a pending erasure job for subject (a blind index).
func (db *DB) CreateErasure(ctx context.Context, tenant, subject, actor string) (store.Erasure, error) {
	e := store.Erasure{ID: gateway.NewID("era"), Tenant: tenant, State: store.ErasurePending, Actor: actor,
		Report: map[string]int64{}, CreatedAt: db.now().UTC().Truncate(time.Microsecond)}
	_, err := db.writer.ExecContext(ctx, db.q(`INSERT INTO erasures (id, tenant, subject, state, actor, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`), e.ID, tenant, subject, string(e.State), actor, micros(e.CreatedAt))
	if err != nil {
		return store.Erasure{}, dbErr("create erasure", err)
	}
	return e, nil
}

const erasureColumns = "id, tenant, state, actor, report, error_code, created_at, finished_at"

func scanErasure(sc scanner) (store.Erasure, error) {
	var e store.Erasure
	var state, report string
	var created, finished int64
	if err := sc.Scan(&e.ID, &e.Tenant, &state, &e.Actor, &report, &e.ErrorCode, &created, &finished); err != nil {
		return e, err
	}
	e.State, e.CreatedAt = store.ErasureState(state), fromMicros(created)
	if finished != 0 {
		e.FinishedAt = fromMicros(finished)
	}
	e.Report = map[string]int64{}
	if err := json.Unmarshal([]byte(report), &e.Report); err != nil {
		return e, gateway.WrapError(gateway.EInternal, err, "erasure %s: report does not decode", e.ID)
	}
	return e, nil
}

// Erasure returns one of the tenant's erasure jobs; ENotFound for another tenant's.
func (db *DB) Erasure(ctx context.Context, tenant, id string) (store.Erasure, error) {
	e, err := scanErasure(db.writer.QueryRowContext(ctx, db.q("SELECT "+erasureColumns+" FROM erasures WHERE tenant = ? AND id = ?"), tenant, id))
	if errors.Is(err, dbsql.ErrNoRows) {
		return e, gateway.Errorf(gateway.ENotFound, "no erasure %s", id)
	}
	if err != nil {
		return e, dbErr("read erasure", err)
	}
	return e, nil
}

// ClaimErasure takes the oldest open job: a pending one, or one left running for longer than
// stale (its process died). Several replicas can call it: one wins each job. ok=false when there
// is nothing to do.
func (db *DB) ClaimErasure(ctx context.Context, stale time.Duration) (e store.Erasure, subject string, ok bool, err error) {
	now := db.now()
	err = db.write(ctx, "claim erasure", func(ctx context.Context, tx *wtx) error {
		ok = false
		var id string
		err := tx.queryRow(ctx, `SELECT id, subject FROM erasures WHERE state = 'pending' OR (state = 'running' AND claimed_at < ?)
			ORDER BY created_at LIMIT 1`, micros(now.Add(-stale))).Scan(&id, &subject)
		if errors.Is(err, dbsql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		// Conditional, so that of two replicas that read the same job only one takes it.
		res, err := tx.exec(ctx, `UPDATE erasures SET state = 'running', claimed_at = ?
			WHERE id = ? AND (state = 'pending' OR (state = 'running' AND claimed_at < ?))`, micros(now), id, micros(now.Add(-stale)))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil
		}
		e, err = scanErasure(tx.queryRow(ctx, "SELECT "+erasureColumns+" FROM erasures WHERE id = ?", id))
		ok = err == nil
		return err
	})
	return e, subject, ok, err
}

// FailErasure ends a job failed with code; the subject's index is dropped from it.
func (db *DB) FailErasure(ctx context.Context, id, code string) error {
	_, err := db.writer.ExecContext(ctx, db.q("UPDATE erasures SET state = 'failed', subject = NULL, error_code = ?, finished_at = ? WHERE id = ?"),
		code, micros(db.now()), id)
	if err != nil {
		return dbErr("fail erasure", err)
	}
	return nil
}

// EraseSubjectRows deletes everything stored about subject in tenant — messages (both
// directions), their status history, consent state and evidence, the reply window, opt-out
// bypasses and a restriction — keeping only a suppression entry: the subject's opted-out
// consent rows, which hold nothing but the blind index, channel, category and state. Messages go
// in chunks; the rest, and the job's completion (report, subject index dropped), in one last
// transaction. report is added to. It returns the outbound messages it deleted that had not
// left the gateway (accepted or queued), so their senders can be told they end rejected. Call
// DestroySubjectKey first.
func (db *DB) EraseSubjectRows(ctx context.Context, tenant, subject, jobID string, report map[string]int64) ([]gateway.Dispatch, error) {
	var pending []gateway.Dispatch
	for {
		var msgs, events int64
		var chunkPending []gateway.Dispatch
		err := db.write(ctx, "erase messages", func(ctx context.Context, tx *wtx) error {
			msgs, events, chunkPending = 0, 0, nil
			rows, err := tx.tx.QueryContext(ctx, db.q(`SELECT id, direction, status, channel, account, hops FROM messages
				WHERE tenant = ? AND peer_index = ? LIMIT ?`), tenant, subject, eraseChunk)
			if err != nil {
				return err
			}
			var ids []any
			for rows.Next() {
				var id, dir, status, ch, account string
				var hops int
				if err := rows.Scan(&id, &dir, &status, &ch, &account, &hops); err != nil {
					rows.Close()
					return err
				}
				ids = append(ids, id)
				if gateway.Direction(dir) == gateway.Outbound && (gateway.Status(status) == gateway.StatusAccepted || gateway.Status(status) == gateway.StatusQueued) {
					chunkPending = append(chunkPending, gateway.Dispatch{MessageID: id, Tenant: tenant, Channel: gateway.Channel(ch), Account: account, Hops: hops})
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil || len(ids) == 0 {
				return err
			}
			msgs, events, err = deleteMessages(ctx, tx, ids)
			return err
		})
		if err != nil {
			return pending, err
		}
		pending = append(pending, chunkPending...)
		report[ReportMessages] += msgs
		report[ReportStatusEvents] += events
		if msgs == 0 {
			break
		}
	}
	report[ReportPendingStopped] += int64(len(pending))
	var counts map[string]int64
	err := db.write(ctx, "erase subject", func(ctx context.Context, tx *wtx) error {
		counts = map[string]int64{}
		for _, d := range []struct{ kind, query string }{
			{ReportConsents, "DELETE FROM consents WHERE tenant = ? AND subject = ? AND state <> 'opted_out'"},
			{ReportConsentEvents, "DELETE FROM consent_events WHERE tenant = ? AND subject = ?"},
			{ReportWindows, "DELETE FROM consent_windows WHERE tenant = ? AND subject = ?"},
			{ReportBypasses, "DELETE FROM consent_bypass WHERE tenant = ? AND subject = ?"},
			{ReportRestrictions, "DELETE FROM restrictions WHERE tenant = ? AND subject = ?"},
			{ReportTags, "DELETE FROM contact_tags WHERE tenant = ? AND subject = ?"},
		} {
			res, err := tx.exec(ctx, d.query, tenant, subject)
			if err != nil {
				return err
			}
			counts[d.kind], _ = res.RowsAffected()
		}
		// What stays: the opt-outs, reduced to a suppression entry (no evidence points at them).
		res, err := tx.exec(ctx, "UPDATE consents SET source = 'admin' WHERE tenant = ? AND subject = ? AND state = 'opted_out'", tenant, subject)
		if err != nil {
			return err
		}
		counts[ReportSuppressions], _ = res.RowsAffected()
		full := map[string]int64{}
		for k, v := range report {
			full[k] = v
		}
		for k, v := range counts {
			full[k] += v
		}
		js, err := json.Marshal(full)
		if err != nil {
			return err
		}
		_, err = tx.exec(ctx, "UPDATE erasures SET state = 'done', subject = NULL, report = ?, finished_at = ? WHERE id = ?",
			string(js), micros(db.now()), jobID)
		return err
	})
	if err != nil {
		return pending, err
	}
	for k, v := range counts {
		report[k] += v
	}
	return pending, nil
}

// SetRestriction restricts processing for subject (on) or lifts the restriction; changed is
// false when it already was so.
func (db *DB) SetRestriction(ctx context.Context, tenant, subject, actor string, on bool) (changed bool, err error) {
	err = db.write(ctx, "set restriction", func(ctx context.Context, tx *wtx) error {
		var res dbsql.Result
		var err error
		if on {
			res, err = tx.exec(ctx, "INSERT INTO restrictions (tenant, subject, actor, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
				tenant, subject, actor, micros(db.now()))
		} else {
			res, err = tx.exec(ctx, "DELETE FROM restrictions WHERE tenant = ? AND subject = ?", tenant, subject)
		}
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		changed = n > 0
		return nil
	})
	return changed, err
}

// Restricted reports whether processing is restricted for subject.
func (db *DB) Restricted(ctx context.Context, tenant, subject string) (bool, error) {
	var one int
	err := db.readRow(ctx, db.q("SELECT 1 FROM restrictions WHERE tenant = ? AND subject = ?"), tenant, subject).Scan(&one)
	if errors.Is(err, dbsql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, dbErr("read restriction", err)
	}
	return true, nil
}

// SubjectMessages returns up to limit of the subject's messages (both directions) after the id
// afterID, oldest first, decrypted with their content: the export reads a history page by page.
func (db *DB) SubjectMessages(ctx context.Context, tenant, subject, afterID string, limit int) ([]*gateway.Message, error) {
	kr, err := db.kr()
	if err != nil {
		return nil, err
	}
	rows, err := db.reader.QueryContext(ctx, db.q(selectMessage(true)+" WHERE tenant = ? AND peer_index = ? AND id > ? ORDER BY id LIMIT ?"),
		tenant, subject, afterID, limit)
	if err != nil {
		return nil, dbErr("read subject messages", err)
	}
	var rs []*messageRow
	for rows.Next() {
		r, err := scanMessage(rows)
		if err != nil {
			rows.Close()
			return nil, dbErr("read subject messages", err)
		}
		rs = append(rs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, dbErr("read subject messages", err)
	}
	out := make([]*gateway.Message, 0, len(rs))
	for _, r := range rs {
		m, err := db.open(ctx, kr, r, true)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// microsPerDay turns a stored timestamp into its UTC day number.
const microsPerDay = int64(24 * time.Hour / time.Microsecond)

// deleteMessages counts the messages ids into usage_daily, then deletes them and their status
// history, inside the writer's transaction.
func deleteMessages(ctx context.Context, tx *wtx, ids []any) (msgs, events int64, err error) {
	in := "(?" + strings.Repeat(", ?", len(ids)-1) + ")"
	args := append([]any{microsPerDay}, ids...)
	if _, err := tx.exec(ctx, `INSERT INTO usage_daily (tenant, day, channel, direction, count)
		SELECT tenant, created_at / ?, channel, direction, COUNT(*) FROM messages WHERE id IN `+in+`
		GROUP BY 1, 2, 3, 4
		ON CONFLICT (tenant, day, channel, direction) DO UPDATE SET count = usage_daily.count + excluded.count`, args...); err != nil {
		return 0, 0, err
	}
	res, err := tx.exec(ctx, "DELETE FROM status_events WHERE message_id IN "+in, ids...)
	if err != nil {
		return 0, 0, err
	}
	events, _ = res.RowsAffected()
	res, err = tx.exec(ctx, "DELETE FROM messages WHERE id IN "+in, ids...)
	if err != nil {
		return 0, 0, err
	}
	msgs, _ = res.RowsAffected()
	return msgs, events, nil
}

// Usage is the message count of one UTC day, channel and direction.
type Usage struct {
	Day       time.Time
	Channel   gateway.Channel
	Direction gateway.Direction
	Count     int64
}

// Usage counts the tenant's messages per UTC day, channel and direction from `from` (inclusive)
// to `to` (exclusive), including messages since erased or purged by retention.
func (db *DB) Usage(ctx context.Context, tenant string, from, to time.Time) ([]Usage, error) {
	f, t := micros(from)/microsPerDay, micros(to)/microsPerDay
	rows, err := db.reader.QueryContext(ctx, db.q(`SELECT day, channel, direction, CAST(SUM(n) AS BIGINT) FROM (
		SELECT day, channel, direction, count AS n FROM usage_daily WHERE tenant = ? AND day >= ? AND day < ?
		UNION ALL
		SELECT created_at / ?, channel, direction, COUNT(*) FROM messages WHERE tenant = ? AND created_at >= ? AND created_at < ?
		GROUP BY 1, 2, 3) u GROUP BY day, channel, direction ORDER BY day, channel, direction`),
		tenant, f, t, microsPerDay, tenant, f*microsPerDay, t*microsPerDay)
	if err != nil {
		return nil, dbErr("read usage", err)
	}
	defer rows.Close()
	var out []Usage
	for rows.Next() {
		var u Usage
		var day int64
		var ch, dir string
		if err := rows.Scan(&day, &ch, &dir, &u.Count); err != nil {
			return nil, dbErr("read usage", err)
		}
		u.Day, u.Channel, u.Direction = fromMicros(day*microsPerDay), gateway.Channel(ch), gateway.Direction(dir)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("read usage", err)
	}
	return out, nil
}
