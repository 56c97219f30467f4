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
	return db.createErasure(ctx, tenant, dbsql.NullString{String: subject, Valid: true}, actor, store.ErasurePending)
}

// CreateTenantErasure records a job that erases the whole tenant: pending for the worker, or
// running (claimed by the caller, who carries it out at once) when claim is set.
func (db *DB) CreateTenantErasure(ctx context.Context, tenant, actor string, claim bool) (store.Erasure, error) {
	state := store.ErasurePending
	if claim {
		state = store.ErasureRunning
	}
	return db.createErasure(ctx, tenant, dbsql.NullString{}, actor, state)
}

func (db *DB) createErasure(ctx context.Context, tenant string, subject dbsql.NullString, actor string, state store.ErasureState) (store.Erasure, error) {
	e := store.Erasure{ID: gateway.NewID("era"), Tenant: tenant, WholeTenant: !subject.Valid, State: state, Actor: actor,
		Report: map[string]int64{}, CreatedAt: db.now().UTC().Truncate(time.Microsecond)}
	_, err := db.writer.ExecContext(ctx, db.q(`INSERT INTO erasures (id, tenant, subject, whole_tenant, state, actor, created_at, claimed_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), e.ID, tenant, subject, boolInt(e.WholeTenant), string(e.State), actor, micros(e.CreatedAt), micros(e.CreatedAt))
	if err != nil {
		return store.Erasure{}, dbErr("create erasure", err)
	}
	return e, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

const erasureColumns = "id, tenant, whole_tenant, state, actor, report, error_code, created_at, finished_at"

func scanErasure(sc scanner) (store.Erasure, error) {
	var e store.Erasure
	var state, report string
	var created, finished int64
	var whole int
	if err := sc.Scan(&e.ID, &e.Tenant, &whole, &state, &e.Actor, &report, &e.ErrorCode, &created, &finished); err != nil {
		return e, err
	}
	e.WholeTenant = whole != 0
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
		var sub dbsql.NullString
		err := tx.queryRow(ctx, `SELECT id, subject FROM erasures WHERE state = 'pending' OR (state = 'running' AND claimed_at < ?)
			ORDER BY created_at LIMIT 1`, micros(now.Add(-stale))).Scan(&id, &sub)
		subject = sub.String
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
	return db.endErasure(ctx, id, store.ErasureFailed, code)
}

// FinishErasure ends a job done: the subject's index and its pending list are dropped.
func (db *DB) FinishErasure(ctx context.Context, id string) error {
	return db.endErasure(ctx, id, store.ErasureDone, "")
}

func (db *DB) endErasure(ctx context.Context, id string, state store.ErasureState, code string) error {
	return db.write(ctx, "end erasure", func(ctx context.Context, tx *wtx) error {
		if _, err := tx.exec(ctx, "DELETE FROM erasure_pending WHERE erasure_id = ?", id); err != nil {
			return err
		}
		_, err := tx.exec(ctx, "UPDATE erasures SET state = ?, subject = NULL, error_code = ?, finished_at = ? WHERE id = ?",
			string(state), code, micros(db.now()), id)
		return err
	})
}

// AddErasureReport adds counts to a job's report, durably: a job resumed after a crash reports
// what its first run removed too.
func (db *DB) AddErasureReport(ctx context.Context, id string, counts map[string]int64) error {
	return db.write(ctx, "erasure report", func(ctx context.Context, tx *wtx) error {
		return addErasureReport(ctx, tx, id, counts)
	})
}

func addErasureReport(ctx context.Context, tx *wtx, id string, counts map[string]int64) error {
	return updateErasureReport(ctx, tx, id, func(report map[string]int64) {
		for k, v := range counts {
			report[k] += v
		}
	})
}

func setErasureReport(ctx context.Context, tx *wtx, id, kind string, n int64) error {
	return updateErasureReport(ctx, tx, id, func(report map[string]int64) { report[kind] = n })
}

func updateErasureReport(ctx context.Context, tx *wtx, id string, change func(map[string]int64)) error {
	var raw string
	if err := tx.queryRow(ctx, "SELECT report FROM erasures WHERE id = ?", id).Scan(&raw); err != nil {
		return err
	}
	report := map[string]int64{}
	if err := json.Unmarshal([]byte(raw), &report); err != nil {
		return err
	}
	change(report)
	js, err := json.Marshal(report)
	if err != nil {
		return err
	}
	_, err = tx.exec(ctx, "UPDATE erasures SET report = ? WHERE id = ?", string(js), id)
	return err
}

// ErasurePending returns the outbound messages the job deleted before they left the gateway.
func (db *DB) ErasurePending(ctx context.Context, tenant, id string) ([]gateway.Dispatch, error) {
	rows, err := db.writer.QueryContext(ctx, db.q("SELECT message_id, channel, account, hops FROM erasure_pending WHERE erasure_id = ? ORDER BY message_id"), id)
	if err != nil {
		return nil, dbErr("read erasure pending", err)
	}
	defer rows.Close()
	var out []gateway.Dispatch
	for rows.Next() {
		d := gateway.Dispatch{Tenant: tenant}
		var ch string
		if err := rows.Scan(&d.MessageID, &ch, &d.Account, &d.Hops); err != nil {
			return nil, dbErr("read erasure pending", err)
		}
		d.Channel = gateway.Channel(ch)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("read erasure pending", err)
	}
	return out, nil
}

// EraseSubjectRows deletes everything stored about subject in tenant — messages (both
// directions), their status history, consent state and evidence, the reply window, opt-out
// bypasses and a restriction — keeping only a suppression entry: the subject's opted-out
// consent rows, which hold nothing but the blind index, channel, category and state. Messages go
// in chunks; each chunk records, in its own transaction, the outbound messages it deleted that
// had not left the gateway (accepted or queued: ErasurePending) and adds its counts to the job's
// report. Running it again after a crash carries on where it stopped. Call DestroySubjectKey
// first and FinishErasure once the pending messages are dealt with.
func (db *DB) EraseSubjectRows(ctx context.Context, tenant, subject, jobID string) error {
	for {
		var msgs int64
		err := db.write(ctx, "erase messages", func(ctx context.Context, tx *wtx) error {
			msgs = 0
			ids, err := messageIDs(ctx, tx, db.q(`SELECT id FROM messages WHERE tenant = ? AND peer_index = ? LIMIT ?`), tenant, subject, eraseChunk)
			if err != nil || len(ids) == 0 {
				return err
			}
			// The outbound messages that had not left the gateway, recorded with their deletion.
			res, err := tx.exec(ctx, `INSERT INTO erasure_pending (erasure_id, message_id, channel, account, hops)
				SELECT ?, id, channel, account, hops FROM messages
				WHERE id IN (?`+strings.Repeat(", ?", len(ids)-1)+`) AND direction = ? AND status IN (?, ?)
				ON CONFLICT DO NOTHING`,
				append(append([]any{jobID}, ids...), string(gateway.Outbound), string(gateway.StatusAccepted), string(gateway.StatusQueued))...)
			if err != nil {
				return err
			}
			pending, _ := res.RowsAffected()
			var events int64
			msgs, events, err = deleteMessages(ctx, tx, ids)
			if err != nil {
				return err
			}
			return addErasureReport(ctx, tx, jobID, map[string]int64{ReportMessages: msgs, ReportStatusEvents: events, ReportPendingStopped: pending})
		})
		if err != nil {
			return err
		}
		if msgs == 0 {
			break
		}
	}
	return db.write(ctx, "erase subject", func(ctx context.Context, tx *wtx) error {
		counts := map[string]int64{}
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
		// What stays: the opt-outs, reduced to a suppression entry (no evidence points at them),
		// marked so that a refused send to the subject is logged without naming it.
		res, err := tx.exec(ctx, "UPDATE consents SET source = 'erasure' WHERE tenant = ? AND subject = ? AND state = 'opted_out'", tenant, subject)
		if err != nil {
			return err
		}
		if err := addErasureReport(ctx, tx, jobID, counts); err != nil {
			return err
		}
		// Set, not added: a resumed job finds the same entries again.
		kept, _ := res.RowsAffected()
		return setErasureReport(ctx, tx, jobID, ReportSuppressions, kept)
	})
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

// messageIDs runs query, which selects message ids, in tx.
func messageIDs(ctx context.Context, tx *wtx, query string, args ...any) ([]any, error) {
	rows, err := tx.tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []any
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// microsPerDay turns a stored timestamp into its UTC day number.
const microsPerDay = int64(24 * time.Hour / time.Microsecond)

// deleteMessages deletes the messages ids and their status history inside the writer's
// transaction, counting what it deleted into usage_daily. The counts come from the DELETE itself:
// a concurrent deletion of the same rows (another replica's sweep or erasure) waits for this one
// and then deletes, and counts, nothing.
func deleteMessages(ctx context.Context, tx *wtx, ids []any) (msgs, events int64, err error) {
	in := "(?" + strings.Repeat(", ?", len(ids)-1) + ")"
	res, err := tx.exec(ctx, "DELETE FROM status_events WHERE message_id IN "+in, ids...)
	if err != nil {
		return 0, 0, err
	}
	events, _ = res.RowsAffected()
	type usageKey struct {
		tenant             string
		day                int64
		channel, direction string
	}
	counts := map[usageKey]int64{}
	rows, err := tx.tx.QueryContext(ctx, tx.db.q("DELETE FROM messages WHERE id IN "+in+" RETURNING tenant, created_at, channel, direction"), ids...)
	if err != nil {
		return 0, 0, err
	}
	for rows.Next() {
		var k usageKey
		var created int64
		if err := rows.Scan(&k.tenant, &created, &k.channel, &k.direction); err != nil {
			rows.Close()
			return 0, 0, err
		}
		k.day = created / microsPerDay
		counts[k]++
		msgs++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	for k, n := range counts {
		if _, err := tx.exec(ctx, `INSERT INTO usage_daily (tenant, day, channel, direction, count) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (tenant, day, channel, direction) DO UPDATE SET count = usage_daily.count + excluded.count`,
			k.tenant, k.day, k.channel, k.direction, n); err != nil {
			return 0, 0, err
		}
	}
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
