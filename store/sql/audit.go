package sql

import (
	"context"
	"time"

	"github.com/switchboard-gateway/switchboard/store"
)

// AppendAudit appends one entry to the audit log (At defaults to now).
func (db *DB) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	if e.At.IsZero() {
		e.At = db.now()
	}
	_, err := db.writer.ExecContext(ctx, db.q(`INSERT INTO audit_log (at, tenant, actor, ip, action, target, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?)`), micros(e.At), e.Tenant, e.Actor.KeyID, e.Actor.IP, e.Action, e.Target, e.Detail)
	if err != nil {
		return dbErr("append audit", err)
	}
	return nil
}

// AuditEntries returns up to limit entries after seq afterSeq, oldest first: of one tenant, or of
// every tenant when tenant is "".
func (db *DB) AuditEntries(ctx context.Context, tenant string, afterSeq int64, limit int) ([]store.AuditEntry, error) {
	rows, err := db.reader.QueryContext(ctx, db.q(`SELECT seq, at, tenant, actor, ip, action, target, detail FROM audit_log
		WHERE seq > ? AND (? = '' OR tenant = ?) ORDER BY seq LIMIT ?`), afterSeq, tenant, tenant, limit)
	if err != nil {
		return nil, dbErr("read audit log", err)
	}
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var e store.AuditEntry
		var at int64
		if err := rows.Scan(&e.Seq, &at, &e.Tenant, &e.Actor.KeyID, &e.Actor.IP, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, dbErr("read audit log", err)
		}
		e.At = time.UnixMicro(at).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("read audit log", err)
	}
	return out, nil
}
