package sql

import (
	"context"
	dbsql "database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

var _ store.Consents = (*DB)(nil)

// Associated data of consent evidence: tenant | consent_events | <id> | subject|note.
const consentEventsTable = "consent_events"

func consentAD(id, column string) crypt.AD {
	return crypt.AD{Table: consentEventsTable, Row: id, Column: column}
}

// sealedChange is a ConsentChange ready to write: the subject indexed, identifier and note sealed.
type sealedChange struct {
	c         store.ConsentChange
	id        string
	index     string
	subjectCT []byte
	noteCT    []byte
}

// sealChange validates c and encrypts what it carries. It runs in the caller's goroutine, before
// the write is queued (the writer must never call the keyring).
func (db *DB) sealChange(ctx context.Context, kr *crypt.Keyring, c store.ConsentChange) (sealedChange, error) {
	switch {
	case c.Tenant == "":
		return sealedChange{}, gateway.FieldErrorf(gateway.EMissingField, "tenant", "a tenant is required")
	case !c.Channel.Valid():
		return sealedChange{}, gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q", c.Channel)
	case c.Subject.IsZero():
		return sealedChange{}, gateway.FieldErrorf(gateway.EMissingField, "subject", "a subject is required")
	case !store.ValidCategory(c.Category):
		return sealedChange{}, gateway.FieldErrorf(gateway.EInvalidField, "category", "unknown category %q: use marketing or utility, or none for all", c.Category)
	case !c.State.Valid():
		return sealedChange{}, gateway.FieldErrorf(gateway.EInvalidField, "state", "unknown state %q: use opted_in or opted_out", c.State)
	case !c.Source.Valid():
		return sealedChange{}, gateway.FieldErrorf(gateway.EInvalidField, "source", "unknown source %q: use api, keyword, import, automation or admin", c.Source)
	}
	if c.At.IsZero() {
		c.At = db.now()
	}
	c.At = c.At.UTC().Truncate(time.Microsecond)
	s := sealedChange{c: c, id: gateway.NewID("ce")}
	var err error
	if s.index, err = kr.BlindIndex(ctx, c.Tenant, c.Subject.String()); err != nil {
		return s, err
	}
	subj, err := json.Marshal(c.Subject)
	if err != nil {
		return s, gateway.WrapError(gateway.EInternal, err, "encode subject")
	}
	if s.subjectCT, err = kr.Seal(ctx, c.Tenant, s.index, consentAD(s.id, "subject"), subj); err != nil {
		return s, err
	}
	if c.Note != "" {
		if s.noteCT, err = kr.Seal(ctx, c.Tenant, s.index, consentAD(s.id, "note"), []byte(c.Note)); err != nil {
			return s, err
		}
	}
	return s, nil
}

const (
	insertConsentEvent = `INSERT INTO consent_events (id, tenant, channel, subject, category, state, source, actor, at,
	inbound_message_id, subject_ct, note_ct) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`
	// The current state moves only forward in time: an imported opt-in dated last year does not
	// undo yesterday's opt-out.
	upsertConsent = `INSERT INTO consents (tenant, channel, subject, category, state, source, updated_at)
	VALUES (?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (tenant, channel, subject, category) DO UPDATE
	SET state = excluded.state, source = excluded.source, updated_at = excluded.updated_at
	WHERE consents.updated_at <= excluded.updated_at`
)

// writeChange appends the evidence and moves the current state; false when the evidence of the
// same inbound message is stored already.
func writeChange(ctx context.Context, tx *wtx, s sealedChange) (bool, error) {
	c := s.c
	res, err := tx.exec(ctx, insertConsentEvent, s.id, c.Tenant, string(c.Channel), s.index, c.Category, string(c.State),
		string(c.Source), c.Actor, micros(c.At), nullString(c.InboundMessageID), s.subjectCT, nullBytes(s.noteCT))
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, err
	}
	_, err = tx.exec(ctx, upsertConsent, c.Tenant, string(c.Channel), s.index, c.Category, string(c.State), string(c.Source), micros(c.At))
	return err == nil, err
}

// RecordConsent implements store.Consents. Writes are group-committed.
func (db *DB) RecordConsent(ctx context.Context, c store.ConsentChange) (bool, error) {
	kr, err := db.kr()
	if err != nil {
		return false, err
	}
	s, err := db.sealChange(ctx, kr, c)
	if err != nil {
		return false, err
	}
	var recorded bool
	err = db.write(ctx, "record consent", func(ctx context.Context, tx *wtx) error {
		var err error
		recorded, err = writeChange(ctx, tx, s)
		return err
	})
	return recorded, err
}

// ImportConsent implements store.Consents: one op, so one transaction (a failing group commit is
// retried op by op, and this op alone either commits every row or none).
func (db *DB) ImportConsent(ctx context.Context, cs []store.ConsentChange) error {
	kr, err := db.kr()
	if err != nil {
		return err
	}
	ss := make([]sealedChange, len(cs))
	for i, c := range cs {
		if ss[i], err = db.sealChange(ctx, kr, c); err != nil {
			return err
		}
	}
	if len(ss) == 0 {
		return nil
	}
	return db.write(ctx, "import consent", func(ctx context.Context, tx *wtx) error {
		for _, s := range ss {
			if _, err := writeChange(ctx, tx, s); err != nil {
				return err
			}
		}
		return nil
	})
}

// subjectIndex is the blind index of subject under the tenant's key: how rows name a person.
func (db *DB) subjectIndex(ctx context.Context, tenant string, subject gateway.Address) (string, error) {
	kr, err := db.kr()
	if err != nil {
		return "", err
	}
	return kr.BlindIndex(ctx, tenant, subject.String())
}

// Consent implements store.Consents.
func (db *DB) Consent(ctx context.Context, tenant string, channel gateway.Channel, subject gateway.Address) (store.Consent, error) {
	kr, err := db.kr()
	if err != nil {
		return store.Consent{}, err
	}
	index, err := kr.BlindIndex(ctx, tenant, subject.String())
	if err != nil {
		return store.Consent{}, err
	}
	out := store.Consent{Subject: index}
	rows, err := db.readRows(ctx, db.q(`SELECT category, state, source, updated_at FROM consents
		WHERE tenant = ? AND channel = ? AND subject = ? ORDER BY category`), tenant, string(channel), index)
	if err != nil {
		return out, dbErr("read consent", err)
	}
	for rows.Next() {
		var e store.ConsentEntry
		var state, source string
		var at int64
		if err := rows.Scan(&e.Category, &state, &source, &at); err != nil {
			rows.Close()
			return out, dbErr("read consent", err)
		}
		e.State, e.Source, e.UpdatedAt = store.ConsentState(state), store.ConsentSource(source), fromMicros(at)
		out.Current = append(out.Current, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, dbErr("read consent", err)
	}

	type evRow struct {
		e      store.ConsentEvidence
		noteCT []byte
	}
	var evs []evRow
	rows, err = db.readRows(ctx, db.q(`SELECT id, category, state, source, actor, at, COALESCE(inbound_message_id, ''), note_ct
		FROM consent_events WHERE tenant = ? AND channel = ? AND subject = ? ORDER BY at, seq`), tenant, string(channel), index)
	if err != nil {
		return out, dbErr("read consent history", err)
	}
	for rows.Next() {
		var r evRow
		var state, source string
		var at int64
		if err := rows.Scan(&r.e.ID, &r.e.Category, &state, &source, &r.e.Actor, &at, &r.e.InboundMessageID, &r.noteCT); err != nil {
			rows.Close()
			return out, dbErr("read consent history", err)
		}
		r.e.State, r.e.Source, r.e.At = store.ConsentState(state), store.ConsentSource(source), fromMicros(at)
		evs = append(evs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, dbErr("read consent history", err)
	}
	for _, r := range evs {
		if r.noteCT != nil {
			note, err := kr.Open(ctx, tenant, index, consentAD(r.e.ID, "note"), r.noteCT)
			if err != nil {
				return out, err
			}
			r.e.Note = string(note)
		}
		out.History = append(out.History, r.e)
	}

	var last int64
	err = db.readRow(ctx, db.q(`SELECT last_inbound_at FROM consent_windows WHERE tenant = ? AND channel = ? AND subject = ?`),
		tenant, string(channel), index).Scan(&last)
	switch {
	case err == nil:
		out.LastInboundAt = fromMicros(last)
	case !errors.Is(err, dbsql.ErrNoRows):
		return out, dbErr("read reply window", err)
	}
	return out, nil
}

// CheckConsent implements store.Consents: one read of the subject's entries, window and bypass.
func (db *DB) CheckConsent(ctx context.Context, tenant string, channel gateway.Channel, subject gateway.Address, category, messageID string) (store.ConsentCheck, error) {
	index, err := db.subjectIndex(ctx, tenant, subject)
	if err != nil {
		return store.ConsentCheck{}, err
	}
	out := store.ConsentCheck{Subject: index}
	// Asked of every send, twice; four index lookups (stmtContext).
	rows, err := db.readRows(db.stmtContext(ctx), db.q(`SELECT 'c', category, state, CASE WHEN source = 'erasure' THEN 1 ELSE 0 END FROM consents WHERE tenant = ? AND channel = ? AND subject = ?
		UNION ALL SELECT 'w', '', '', last_inbound_at FROM consent_windows WHERE tenant = ? AND channel = ? AND subject = ?
		UNION ALL SELECT 'b', '', '', 0 FROM consent_bypass WHERE tenant = ? AND message_id = ? AND subject = ?
		UNION ALL SELECT 'r', '', '', 0 FROM restrictions WHERE tenant = ? AND subject = ?`),
		tenant, string(channel), index, tenant, string(channel), index, tenant, messageID, index, tenant, index)
	if err != nil {
		return out, dbErr("check consent", err)
	}
	defer rows.Close()
	for rows.Next() {
		var kind, cat, state string
		var at int64
		if err := rows.Scan(&kind, &cat, &state, &at); err != nil {
			return out, dbErr("check consent", err)
		}
		switch kind {
		case "c":
			if cat != "" && cat != category {
				continue
			}
			out.Erased = out.Erased || at == 1 // for 'c' rows the last column says source = erasure
			switch store.ConsentState(state) {
			case store.ConsentOptedOut:
				out.OptedOut = true
			case store.ConsentOptedIn:
				out.OptedIn = true
			}
		case "w":
			out.LastInboundAt = fromMicros(at)
		case "b":
			out.Bypass = messageID != ""
		case "r":
			out.Restricted = true
		}
	}
	if err := rows.Err(); err != nil {
		return out, dbErr("check consent", err)
	}
	if out.OptedOut {
		// An opt-out always wins over an opt-in of the same scope.
		out.OptedIn = false
	}
	return out, nil
}

// TouchInbound implements store.Consents. Group-committed: it runs on every inbound message.
func (db *DB) TouchInbound(ctx context.Context, tenant string, channel gateway.Channel, subject gateway.Address, at time.Time) error {
	index, err := db.subjectIndex(ctx, tenant, subject)
	if err != nil {
		return err
	}
	if at.IsZero() {
		at = db.now()
	}
	return db.write(ctx, "touch reply window", func(ctx context.Context, tx *wtx) error {
		_, err := tx.exec(ctx, `INSERT INTO consent_windows (tenant, channel, subject, last_inbound_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (tenant, channel, subject) DO UPDATE SET last_inbound_at = excluded.last_inbound_at
			WHERE consent_windows.last_inbound_at < excluded.last_inbound_at`,
			tenant, string(channel), index, micros(at))
		return err
	})
}

// GrantOptOutBypass implements store.Consents. Granting the same message again is a no-op.
func (db *DB) GrantOptOutBypass(ctx context.Context, tenant string, subject gateway.Address, messageID, inboundMessageID string) error {
	if messageID == "" || inboundMessageID == "" {
		return gateway.Errorf(gateway.EInternal, "store: a bypass needs a message id and the inbound message id")
	}
	index, err := db.subjectIndex(ctx, tenant, subject)
	if err != nil {
		return err
	}
	return db.write(ctx, "grant opt-out bypass", func(ctx context.Context, tx *wtx) error {
		_, err := tx.exec(ctx, `INSERT INTO consent_bypass (tenant, message_id, subject, inbound_message_id, created_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, tenant, messageID, index, inboundMessageID, micros(db.now()))
		return err
	})
}
