package sql

import (
	"context"
	dbsql "database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// Associated data of message columns: tenant | messages | <id> | <column>.
const (
	messagesTable  = "messages"
	columnPeer     = "peer"
	columnContent  = "content"
	columnMetadata = "metadata"
)

func messageAD(id, column string) crypt.AD {
	return crypt.AD{Table: messagesTable, Row: id, Column: column}
}

// sealed is a message's encrypted form.
type sealed struct {
	peerIndex string
	peerCT    []byte
	content   []byte
	metadata  []byte // nil when the message has none
}

// seal encrypts the peer, content and metadata of m under the data key of the peer's blind
// index. It runs in the caller's goroutine, before the write is queued.
func (db *DB) seal(ctx context.Context, m *gateway.Message) (sealed, error) {
	kr, err := db.kr()
	if err != nil {
		return sealed{}, err
	}
	var s sealed
	if s.peerIndex, err = kr.BlindIndex(ctx, m.Tenant, m.Peer.String()); err != nil {
		return s, err
	}
	peer, err := json.Marshal(m.Peer)
	if err != nil {
		return s, gateway.WrapError(gateway.EInternal, err, "encode peer")
	}
	if s.peerCT, err = kr.Seal(ctx, m.Tenant, s.peerIndex, messageAD(m.ID, columnPeer), peer); err != nil {
		return s, err
	}
	content, err := json.Marshal(m.Content)
	if err != nil {
		return s, gateway.WrapError(gateway.EInternal, err, "encode content")
	}
	if s.content, err = kr.Seal(ctx, m.Tenant, s.peerIndex, messageAD(m.ID, columnContent), content); err != nil {
		return s, err
	}
	if len(m.Metadata) > 0 {
		meta, err := json.Marshal(m.Metadata)
		if err != nil {
			return s, gateway.WrapError(gateway.EInternal, err, "encode metadata")
		}
		if s.metadata, err = kr.Seal(ctx, m.Tenant, s.peerIndex, messageAD(m.ID, columnMetadata), meta); err != nil {
			return s, err
		}
	}
	return s, nil
}

// prepare validates a message for storage and fills in its defaults.
func (db *DB) prepare(m *gateway.Message, dir gateway.Direction, status gateway.Status) error {
	if m == nil {
		return gateway.Errorf(gateway.EInternal, "store: nil message")
	}
	if m.Tenant == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "tenant", "a tenant is required")
	}
	if !m.Channel.Valid() {
		return gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q", m.Channel)
	}
	if m.Peer.IsZero() {
		return gateway.FieldErrorf(gateway.EMissingField, "to", "a peer address is required")
	}
	if m.ID == "" {
		m.ID = gateway.NewMessageID()
	}
	if m.Direction == "" {
		m.Direction = dir
	}
	if m.Status == "" {
		m.Status = status
	}
	if !m.Status.Valid() {
		return gateway.FieldErrorf(gateway.EInvalidField, "status", "unknown status %q", m.Status)
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = db.now()
	}
	m.CreatedAt = m.CreatedAt.UTC().Truncate(time.Microsecond)
	if m.UpdatedAt.IsZero() || m.UpdatedAt.Before(m.CreatedAt) {
		m.UpdatedAt = m.CreatedAt
	}
	m.UpdatedAt = m.UpdatedAt.UTC().Truncate(time.Microsecond)
	return nil
}

const insertMessage = `INSERT INTO messages (id, tenant, direction, channel, account, peer_index, peer_ct, peer_masked,
	content_ct, metadata_ct, status, error_code, error_message, channel_message_id, idempotency_key, request_hash,
	hops, created_at, updated_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`

const insertEvent = `INSERT INTO status_events (message_id, tenant, status, previous, at, channel_message_id, participant,
	error_code, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`

const (
	selectIdempotent = "SELECT id, request_hash FROM messages WHERE tenant = ? AND idempotency_key = ?"
	selectClaim      = "SELECT channel, account, COALESCE(channel_message_id, '') FROM messages WHERE tenant = ? AND id = ?"
	updateClaim      = "UPDATE messages SET channel_message_id = ?, updated_at = ? WHERE tenant = ? AND id = ?"
	selectByChannel  = "SELECT id FROM messages WHERE tenant = ? AND channel = ? AND account = ? AND channel_message_id = ?"
	selectForStatus  = `SELECT status, channel, account, peer_masked, peer_index, COALESCE(channel_message_id, ''), created_at,
		recipients FROM messages WHERE tenant = ? AND id = ?`
	updateStatus = "UPDATE messages SET status = ?, updated_at = ? WHERE tenant = ? AND id = ?"
)

// insert stores m and its first history event; it reports false, storing nothing, when a unique
// constraint (id, idempotency key, channel message id) already holds a row.
func (db *DB) insert(ctx context.Context, tx *wtx, m *gateway.Message, s sealed, requestHash string) (bool, error) {
	res, err := tx.exec(ctx, insertMessage,
		m.ID, m.Tenant, string(m.Direction), string(m.Channel), m.Account, s.peerIndex, s.peerCT, m.Peer.Masked(),
		s.content, nullBytes(s.metadata), string(m.Status), m.ErrorCode, m.ErrorMessage,
		nullString(m.ChannelMessageID), nullString(m.IdempotencyKey), requestHash,
		m.Hops, micros(m.CreatedAt), micros(m.UpdatedAt))
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, err
	}
	_, err = tx.exec(ctx, insertEvent, m.ID, m.Tenant, string(m.Status), "", micros(m.CreatedAt),
		m.ChannelMessageID, "", m.ErrorCode, m.ErrorMessage)
	return err == nil, err
}

// CreateMessage implements store.Messages. It fills in m's ID, Direction (out), Status
// (accepted), CreatedAt and UpdatedAt when they are empty. A replay of an idempotency key returns
// the stored message, with its content.
func (db *DB) CreateMessage(ctx context.Context, nm store.NewMessage) (*gateway.Message, string, bool, error) {
	m := nm.Message
	if err := db.prepare(m, gateway.Outbound, gateway.StatusAccepted); err != nil {
		return nil, "", false, err
	}
	s, err := db.seal(ctx, m)
	if err != nil {
		return nil, "", false, err
	}
	var (
		created      bool
		existingID   string
		existingHash string
		conflict     error
	)
	err = db.write(ctx, "create message", func(ctx context.Context, tx *wtx) error {
		created, existingID, existingHash, conflict = false, "", "", nil
		ok, err := db.insert(ctx, tx, m, s, nm.RequestHash)
		if err != nil || ok {
			created = ok
			return err
		}
		if m.IdempotencyKey != "" {
			err := tx.queryRow(ctx, selectIdempotent, m.Tenant, m.IdempotencyKey).Scan(&existingID, &existingHash)
			if err == nil {
				return nil
			}
			if !errors.Is(err, dbsql.ErrNoRows) {
				return err
			}
		}
		conflict = gateway.Errorf(gateway.EConflict, "message %s exists already", m.ID)
		return nil
	})
	switch {
	case err != nil:
		return nil, "", false, err
	case conflict != nil:
		return nil, "", false, conflict
	case created:
		return nil, "", true, nil
	}
	existing, err := db.Message(ctx, m.Tenant, existingID, true)
	if err != nil {
		return nil, "", false, err
	}
	return existing, existingHash, false, nil
}

// CreateInbound implements store.Messages. It fills in m's ID, Direction (in), Status
// (received), CreatedAt and UpdatedAt when they are empty. A message whose channel message id
// (or id) is stored already is a redelivery: created=false.
func (db *DB) CreateInbound(ctx context.Context, m *gateway.Message) (bool, error) {
	if err := db.prepare(m, gateway.Inbound, gateway.StatusReceived); err != nil {
		return false, err
	}
	s, err := db.seal(ctx, m)
	if err != nil {
		return false, err
	}
	var created bool
	err = db.write(ctx, "create inbound message", func(ctx context.Context, tx *wtx) error {
		var err error
		created, err = db.insert(ctx, tx, m, s, "")
		return err
	})
	return created, err
}

// columns read for a message; content_ct is replaced by NULL when content is not wanted.
const messageColumns = `id, tenant, direction, channel, account, peer_index, peer_ct, %s, metadata_ct, status, error_code,
	error_message, COALESCE(channel_message_id, ''), COALESCE(idempotency_key, ''), hops, created_at, updated_at`

func selectMessage(withContent bool) string {
	content := "NULL"
	if withContent {
		content = "content_ct"
	}
	return "SELECT " + fmt.Sprintf(messageColumns, content) + " FROM messages"
}

type messageRow struct {
	m                         gateway.Message
	peerIndex                 string
	peerCT, content, metadata []byte
	created, updated          int64
}

type scanner interface{ Scan(...any) error }

func scanMessage(sc scanner) (*messageRow, error) {
	var r messageRow
	var dir, ch, status string
	err := sc.Scan(&r.m.ID, &r.m.Tenant, &dir, &ch, &r.m.Account, &r.peerIndex, &r.peerCT, &r.content, &r.metadata,
		&status, &r.m.ErrorCode, &r.m.ErrorMessage, &r.m.ChannelMessageID, &r.m.IdempotencyKey, &r.m.Hops, &r.created, &r.updated)
	if err != nil {
		return nil, err
	}
	r.m.Direction, r.m.Channel, r.m.Status = gateway.Direction(dir), gateway.Channel(ch), gateway.Status(status)
	r.m.CreatedAt, r.m.UpdatedAt = fromMicros(r.created), fromMicros(r.updated)
	return &r, nil
}

// open decrypts the row's peer and metadata, and its content when it was selected.
func (db *DB) open(ctx context.Context, kr *crypt.Keyring, r *messageRow, withContent bool) (*gateway.Message, error) {
	m := &r.m
	peer, err := kr.Open(ctx, m.Tenant, r.peerIndex, messageAD(m.ID, columnPeer), r.peerCT)
	if err != nil {
		return nil, fmt.Errorf("message %s peer: %w", m.ID, err)
	}
	if err := json.Unmarshal(peer, &m.Peer); err != nil {
		return nil, gateway.WrapError(gateway.EInternal, err, "message %s: peer does not decode", m.ID)
	}
	if r.metadata != nil {
		meta, err := kr.Open(ctx, m.Tenant, r.peerIndex, messageAD(m.ID, columnMetadata), r.metadata)
		if err != nil {
			return nil, fmt.Errorf("message %s metadata: %w", m.ID, err)
		}
		if err := json.Unmarshal(meta, &m.Metadata); err != nil {
			return nil, gateway.WrapError(gateway.EInternal, err, "message %s: metadata does not decode", m.ID)
		}
	}
	if withContent && r.content != nil {
		content, err := kr.Open(ctx, m.Tenant, r.peerIndex, messageAD(m.ID, columnContent), r.content)
		if err != nil {
			return nil, fmt.Errorf("message %s content: %w", m.ID, err)
		}
		if err := json.Unmarshal(content, &m.Content); err != nil {
			return nil, gateway.WrapError(gateway.EInternal, err, "message %s: content does not decode", m.ID)
		}
	}
	return m, nil
}

// Message implements store.Messages. The peer and metadata are always decrypted; the content only
// when withContent. Another tenant's message is not found.
func (db *DB) Message(ctx context.Context, tenant, id string, withContent bool) (*gateway.Message, error) {
	kr, err := db.kr()
	if err != nil {
		return nil, err
	}
	r, err := scanMessage(db.readRow(ctx, db.q(selectMessage(withContent)+" WHERE tenant = ? AND id = ?"), tenant, id))
	if errors.Is(err, dbsql.ErrNoRows) {
		return nil, gateway.Errorf(gateway.ENotFound, "no message %s", id)
	}
	if err != nil {
		return nil, dbErr("read message", err)
	}
	return db.open(ctx, kr, r, withContent)
}

// MaxListLimit is the largest page ListMessages returns.
const MaxListLimit = 500

// ListMessages implements store.Messages: newest first by (created_at, id), without content
// (peer and metadata are decrypted; content is not even read).
func (db *DB) ListMessages(ctx context.Context, tenant string, f store.MessageFilter) ([]*gateway.Message, string, error) {
	kr, err := db.kr()
	if err != nil {
		return nil, "", err
	}
	limit := f.Limit
	switch {
	case limit == 0:
		limit = 50
	case limit < 0 || limit > MaxListLimit:
		return nil, "", gateway.FieldErrorf(gateway.EInvalidField, "limit", "limit must be between 1 and %d", MaxListLimit)
	}
	where := []string{"tenant = ?"}
	args := []any{tenant}
	if f.Status != "" {
		if !f.Status.Valid() {
			return nil, "", gateway.FieldErrorf(gateway.EInvalidField, "status", "unknown status %q", f.Status)
		}
		where, args = append(where, "status = ?"), append(args, string(f.Status))
	}
	if f.Channel != "" {
		if !f.Channel.Valid() {
			return nil, "", gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q", f.Channel)
		}
		where, args = append(where, "channel = ?"), append(args, string(f.Channel))
	}
	if f.Direction != "" {
		if f.Direction != gateway.Inbound && f.Direction != gateway.Outbound {
			return nil, "", gateway.FieldErrorf(gateway.EInvalidField, "direction", "direction must be in or out")
		}
		where, args = append(where, "direction = ?"), append(args, string(f.Direction))
	}
	if !f.Since.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, micros(f.Since))
	}
	if f.Cursor != "" {
		at, id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		args = append(args, at, at, id)
	}
	query := selectMessage(false) + " WHERE " + strings.Join(where, " AND ") + " ORDER BY created_at DESC, id DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := db.readRows(ctx, db.q(query), args...)
	if err != nil {
		return nil, "", dbErr("list messages", err)
	}
	var rs []*messageRow
	for rows.Next() {
		r, err := scanMessage(rows)
		if err != nil {
			rows.Close()
			return nil, "", dbErr("list messages", err)
		}
		rs = append(rs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, "", dbErr("list messages", err)
	}
	next := ""
	if len(rs) > limit {
		rs = rs[:limit]
		last := rs[limit-1]
		next = encodeCursor(last.created, last.m.ID)
	}
	msgs := make([]*gateway.Message, 0, len(rs))
	for _, r := range rs {
		m, err := db.open(ctx, kr, r, false)
		if err != nil {
			return nil, "", err
		}
		msgs = append(msgs, m)
	}
	return msgs, next, nil
}

func encodeCursor(at int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at, 10) + ":" + id))
}

func decodeCursor(c string) (int64, string, error) {
	bad := gateway.FieldErrorf(gateway.EInvalidField, "cursor", "invalid cursor: use the next_cursor of a previous page")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", bad
	}
	ts, id, ok := strings.Cut(string(b), ":")
	at, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", bad
	}
	return at, id, nil
}

// History implements store.Messages: the message's events ordered by their time, then by the
// order they were recorded. Another tenant's message is not found.
func (db *DB) History(ctx context.Context, tenant, id string) ([]gateway.StatusEvent, error) {
	rows, err := db.readRows(ctx, db.q(`SELECT e.status, e.previous, e.at, e.channel_message_id, e.participant,
		e.error_code, e.error_message, m.channel, m.account
		FROM status_events e JOIN messages m ON m.id = e.message_id
		WHERE m.tenant = ? AND m.id = ? ORDER BY e.at, e.seq`), tenant, id)
	if err != nil {
		return nil, dbErr("read history", err)
	}
	defer rows.Close()
	var evs []gateway.StatusEvent
	for rows.Next() {
		e := gateway.StatusEvent{MessageID: id, Tenant: tenant}
		var status, prev, ch, code, msg string
		var at int64
		if err := rows.Scan(&status, &prev, &at, &e.ChannelMessageID, &e.Participant, &code, &msg, &ch, &e.Account); err != nil {
			return nil, dbErr("read history", err)
		}
		e.Status, e.Previous, e.Channel, e.At = gateway.Status(status), gateway.Status(prev), gateway.Channel(ch), fromMicros(at)
		if code != "" || msg != "" {
			e.Error = &gateway.ErrorDetail{Code: code, Message: msg}
		}
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("read history", err)
	}
	if len(evs) == 0 {
		return nil, gateway.Errorf(gateway.ENotFound, "no message %s", id)
	}
	return evs, nil
}

// ClaimChannelMessageID implements store.Messages. An empty proposed id only reads the stored one.
// A proposed id that another message of the same channel account holds is a conflict.
func (db *DB) ClaimChannelMessageID(ctx context.Context, tenant, id, proposed string) (string, error) {
	var stored string
	var result error
	err := db.write(ctx, "claim channel message id", func(ctx context.Context, tx *wtx) error {
		stored, result = "", nil
		var ch, account string
		err := tx.queryRow(ctx, selectClaim, tenant, id).Scan(&ch, &account, &stored)
		if errors.Is(err, dbsql.ErrNoRows) {
			result = gateway.Errorf(gateway.ENotFound, "no message %s", id)
			return nil
		}
		if err != nil || stored != "" || proposed == "" {
			return err
		}
		taken, err := db.channelIDTaken(ctx, tx, tenant, ch, account, proposed, id)
		if err != nil {
			return err
		}
		if taken {
			result = gateway.Errorf(gateway.EConflict, "channel message id is taken by another message")
			return nil
		}
		if _, err := tx.exec(ctx, updateClaim, proposed, micros(db.now()), tenant, id); err != nil {
			return err
		}
		stored = proposed
		return nil
	})
	if err != nil {
		return "", err
	}
	return stored, result
}

func (db *DB) channelIDTaken(ctx context.Context, tx *wtx, tenant, ch, account, cmid, self string) (bool, error) {
	var other string
	err := tx.queryRow(ctx, selectByChannel, tenant, ch, account, cmid).Scan(&other)
	if errors.Is(err, dbsql.ErrNoRows) {
		return false, nil
	}
	return err == nil && other != self, err
}

// MessageIDByChannelID implements store.Messages.
func (db *DB) MessageIDByChannelID(ctx context.Context, tenant string, channel gateway.Channel, account, channelMessageID string) (string, error) {
	if channelMessageID == "" {
		return "", gateway.Errorf(gateway.ENotFound, "no channel message id")
	}
	var id string
	err := db.readRow(ctx, db.q(selectByChannel), tenant, string(channel), account, channelMessageID).Scan(&id)
	if errors.Is(err, dbsql.ErrNoRows) {
		return "", gateway.Errorf(gateway.ENotFound, "no message with this channel message id")
	}
	if err != nil {
		return "", dbErr("find message by channel id", err)
	}
	return id, nil
}

// ApplyStatus implements store.Messages. Events are applied in order, so an event later in the
// slice sees what an earlier one did to the same message. Events without a message id or tenant,
// or with an unknown status, make the whole call fail before anything is written (they are
// programming errors, not data).
func (db *DB) ApplyStatus(ctx context.Context, events []gateway.StatusEvent) ([]store.Applied, error) {
	for i, e := range events {
		if e.MessageID == "" || e.Tenant == "" || !e.Status.Valid() {
			return nil, gateway.Errorf(gateway.EInvalidField, "status event %d: needs a message id, a tenant and a known status (got %q)", i, e.Status)
		}
	}
	if len(events) == 0 {
		return nil, nil
	}
	now := db.now()
	out := make([]store.Applied, len(events))
	err := db.write(ctx, "apply status", func(ctx context.Context, tx *wtx) error {
		for i, e := range events {
			a, err := db.applyOne(ctx, tx, e, now)
			if err != nil {
				return err
			}
			out[i] = a
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (db *DB) applyOne(ctx context.Context, tx *wtx, e gateway.StatusEvent, now time.Time) (store.Applied, error) {
	if e.At.IsZero() {
		e.At = now
	}
	e.At = e.At.UTC().Truncate(time.Microsecond)
	q := selectForStatus
	if db.pg {
		q += " FOR UPDATE"
	}
	var cur, ch, account, masked, index, cmid string
	var created int64
	var recipients int
	err := tx.queryRow(ctx, q, e.Tenant, e.MessageID).Scan(&cur, &ch, &account, &masked, &index, &cmid, &created, &recipients)
	if errors.Is(err, dbsql.ErrNoRows) {
		return store.Applied{Event: e, Missing: true}, nil
	}
	if err != nil {
		return store.Applied{}, err
	}
	if e.Channel == "" {
		e.Channel = gateway.Channel(ch)
	}
	if e.Account == "" {
		e.Account = account
	}
	e.Previous = gateway.Status(cur)
	a := store.Applied{Event: e, Masked: masked, Subject: crypt.ShortSubject(index), CreatedAt: fromMicros(created)}

	var code, msg string
	if e.Error != nil {
		code, msg = e.Error.Code, e.Error.Message
	}
	res, err := tx.exec(ctx, insertEvent, e.MessageID, e.Tenant, string(e.Status), cur, micros(e.At),
		e.ChannelMessageID, e.Participant, code, msg)
	if err != nil {
		return store.Applied{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return store.Applied{}, err
	} else if n == 0 {
		a.Duplicate = true
		return a, nil
	}

	var sets []string
	var args []any
	if e.Recipients > 0 && recipients != e.Recipients {
		sets, args = append(sets, "recipients = ?"), append(args, e.Recipients)
	}
	next := e.Status
	if e.Participant != "" && recipients > 1 {
		// A group message moves with its least advanced member; the receipt itself is history.
		least, ok, err := leastReached(ctx, tx, e, recipients)
		if err != nil {
			return store.Applied{}, err
		}
		if !ok {
			least = gateway.Status(cur)
		}
		next = least
	}
	if gateway.Advances(gateway.Status(cur), next) {
		a.Advanced = true
		a.Event.Status = next // what the message became (a member's read may make it delivered)
		sets, args = append(sets, "status = ?"), append(args, string(next))
		if e.Error != nil {
			sets, args = append(sets, "error_code = ?", "error_message = ?"), append(args, code, msg)
		}
	}
	if cmid == "" && e.ChannelMessageID != "" {
		taken, err := db.channelIDTaken(ctx, tx, e.Tenant, ch, account, e.ChannelMessageID, e.MessageID)
		if err != nil {
			return store.Applied{}, err
		}
		if taken {
			db.log.Warn().Str("msg_id", e.MessageID).Str("tenant", e.Tenant).Msg("status event names a channel message id another message holds; not recorded on the message")
		} else {
			sets, args = append(sets, "channel_message_id = ?"), append(args, e.ChannelMessageID)
		}
	}
	switch {
	case len(sets) == 1 && a.Advanced:
		// The common case has a prepared statement of its own.
		if _, err := tx.exec(ctx, updateStatus, string(next), micros(now), e.Tenant, e.MessageID); err != nil {
			return store.Applied{}, err
		}
	case len(sets) > 0:
		sets, args = append(sets, "updated_at = ?"), append(args, micros(now))
		args = append(args, e.Tenant, e.MessageID)
		if _, err := tx.exec(ctx, "UPDATE messages SET "+strings.Join(sets, ", ")+" WHERE tenant = ? AND id = ?", args...); err != nil {
			return store.Applied{}, err
		}
	}
	return a, nil
}

// leastReached returns the status every one of a group message's recipients has reached, from
// the members' receipts (e, already inserted, among them): a member who read a message also had
// it delivered. ok is false while some member has no receipt yet. Errors of members count for
// nothing: one member's error does not fail what the others received.
func leastReached(ctx context.Context, tx *wtx, e gateway.StatusEvent, recipients int) (least gateway.Status, ok bool, err error) {
	rows, err := tx.tx.QueryContext(ctx, tx.db.q(`SELECT participant, status FROM status_events
		WHERE tenant = ? AND message_id = ? AND participant <> ''`), e.Tenant, e.MessageID)
	if err != nil {
		return "", false, err
	}
	defer rows.Close()
	best := map[string]gateway.Status{}
	for rows.Next() {
		var p, st string
		if err := rows.Scan(&p, &st); err != nil {
			return "", false, err
		}
		s := gateway.Status(st)
		if s != gateway.StatusDelivered && s != gateway.StatusRead && s != gateway.StatusPlayed {
			continue
		}
		if cur, seen := best[p]; !seen || gateway.Advances(cur, s) {
			best[p] = s
		}
	}
	if err := rows.Err(); err != nil || len(best) < recipients {
		return "", false, err
	}
	least = gateway.StatusPlayed
	for _, s := range best {
		if gateway.Advances(s, least) {
			least = s
		}
	}
	return least, true, nil
}

// DefaultUnfinishedLimit is Unfinished's page size when limit is 0.
const DefaultUnfinishedLimit = 500

// Unfinished implements store.Messages: messages of every tenant still at accepted, by id.
func (db *DB) Unfinished(ctx context.Context, afterID string, limit int) ([]gateway.Dispatch, error) {
	if limit <= 0 {
		limit = DefaultUnfinishedLimit
	}
	rows, err := db.readRows(ctx, db.q(`SELECT id, tenant, channel, account, hops FROM messages
		WHERE status = 'accepted' AND id > ? ORDER BY id LIMIT ?`), afterID, limit)
	if err != nil {
		return nil, dbErr("list unfinished", err)
	}
	defer rows.Close()
	var out []gateway.Dispatch
	for rows.Next() {
		var d gateway.Dispatch
		var ch string
		if err := rows.Scan(&d.MessageID, &d.Tenant, &ch, &d.Account, &d.Hops); err != nil {
			return nil, dbErr("list unfinished", err)
		}
		d.Channel = gateway.Channel(ch)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("list unfinished", err)
	}
	return out, nil
}
