package sql

import (
	"context"
	dbsql "database/sql"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

var _ store.Webhooks = (*DB)(nil)

// webhookAD binds a webhook's sealed secrets to tenant | webhooks | <id> | secret.
func webhookAD(id string) crypt.AD {
	return crypt.AD{Table: "webhooks", Row: id, Column: "secret"}
}

// sealedSecret is the stored form of one secret inside the sealed JSON list.
type sealedSecret struct {
	Value     string `json:"v"`
	CreatedAt int64  `json:"c"`
	ExpiresAt int64  `json:"e,omitempty"`
}

func (db *DB) sealSecrets(ctx context.Context, tenant, id string, secrets []store.WebhookSecret) ([]byte, error) {
	kr, err := db.kr()
	if err != nil {
		return nil, err
	}
	list := make([]sealedSecret, len(secrets))
	for i, s := range secrets {
		list[i] = sealedSecret{Value: s.Value, CreatedAt: micros(s.CreatedAt)}
		if !s.ExpiresAt.IsZero() {
			list[i].ExpiresAt = micros(s.ExpiresAt)
		}
	}
	b, err := json.Marshal(list)
	if err != nil {
		return nil, gateway.WrapError(gateway.EInternal, err, "encode webhook secrets")
	}
	return kr.SealTenant(ctx, tenant, webhookAD(id), b)
}

func (db *DB) openSecrets(ctx context.Context, tenant, id string, ct []byte) ([]store.WebhookSecret, error) {
	kr, err := db.kr()
	if err != nil {
		return nil, err
	}
	b, err := kr.OpenTenant(ctx, tenant, webhookAD(id), ct)
	if err != nil {
		return nil, err
	}
	var list []sealedSecret
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, gateway.WrapError(gateway.EInternal, err, "decode webhook secrets")
	}
	out := make([]store.WebhookSecret, len(list))
	for i, s := range list {
		out[i] = store.WebhookSecret{Value: s.Value, CreatedAt: fromMicros(s.CreatedAt)}
		if s.ExpiresAt != 0 {
			out[i].ExpiresAt = fromMicros(s.ExpiresAt)
		}
	}
	return out, nil
}

// CreateWebhook implements store.Webhooks.
func (db *DB) CreateWebhook(ctx context.Context, w store.Webhook) error {
	if w.CreatedAt.IsZero() {
		w.CreatedAt = db.now()
	}
	ct, err := db.sealSecrets(ctx, w.Tenant, w.ID, w.Secrets)
	if err != nil {
		return err
	}
	res, err := db.writer.ExecContext(ctx, db.q(`INSERT INTO webhooks (tenant, id, url, events, allow_private, secrets_ct, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`),
		w.Tenant, w.ID, w.URL, strings.Join(w.Events, ","), boolInt(w.AllowPrivate), ct, micros(w.CreatedAt))
	if err != nil {
		return dbErr("create webhook", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return gateway.FieldErrorf(gateway.EConflict, "id", "tenant %s already has a webhook %s", w.Tenant, w.ID)
	}
	return nil
}

const selectWebhook = `SELECT tenant, id, url, events, allow_private, secrets_ct, created_at, disabled_at, disabled_reason FROM webhooks`

func (db *DB) scanWebhook(ctx context.Context, sc interface{ Scan(...any) error }) (store.Webhook, error) {
	var w store.Webhook
	var events string
	var private int
	var ct []byte
	var created, disabled int64
	if err := sc.Scan(&w.Tenant, &w.ID, &w.URL, &events, &private, &ct, &created, &disabled, &w.DisabledReason); err != nil {
		return w, err
	}
	if events != "" {
		w.Events = strings.Split(events, ",")
	}
	w.AllowPrivate = private != 0
	w.CreatedAt = fromMicros(created)
	if disabled != 0 {
		w.DisabledAt = fromMicros(disabled)
	}
	secrets, err := db.openSecrets(ctx, w.Tenant, w.ID, ct)
	if gateway.ErrorCode(err) == gateway.ENotFound {
		// The tenant key is gone (an erasure in progress): the endpoint is listed without secrets,
		// so it cannot sign, and the other endpoints are not held up by it.
		db.log.Warn().Str("tenant", w.Tenant).Str("webhook", w.ID).Msg("webhook secrets no longer open")
		return w, nil
	}
	w.Secrets = secrets
	return w, err
}

// Webhook implements store.Webhooks.
func (db *DB) Webhook(ctx context.Context, tenant, id string) (store.Webhook, error) {
	w, err := db.scanWebhook(ctx, db.readRow(ctx, db.q(selectWebhook+` WHERE tenant = ? AND id = ?`), tenant, id))
	if errors.Is(err, dbsql.ErrNoRows) {
		return w, gateway.Errorf(gateway.ENotFound, "no webhook %s", id)
	}
	if err != nil {
		return w, dbErr("read webhook", err)
	}
	return w, nil
}

// ListWebhooks implements store.Webhooks.
func (db *DB) ListWebhooks(ctx context.Context, tenant string) ([]store.Webhook, error) {
	rows, err := db.readRows(ctx, db.q(selectWebhook+` WHERE ? = '' OR tenant = ? ORDER BY created_at, id`), tenant, tenant)
	if err != nil {
		return nil, dbErr("list webhooks", err)
	}
	defer rows.Close()
	var out []store.Webhook
	for rows.Next() {
		w, err := db.scanWebhook(ctx, rows)
		if err != nil {
			return nil, dbErr("list webhooks", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("list webhooks", err)
	}
	return out, nil
}

// DeleteWebhook implements store.Webhooks.
func (db *DB) DeleteWebhook(ctx context.Context, tenant, id string) error {
	res, err := db.writer.ExecContext(ctx, db.q(`DELETE FROM webhooks WHERE tenant = ? AND id = ?`), tenant, id)
	if err != nil {
		return dbErr("delete webhook", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return gateway.Errorf(gateway.ENotFound, "no webhook %s", id)
	}
	if _, err := db.writer.ExecContext(ctx, db.q(`DELETE FROM webhook_attempts WHERE tenant = ? AND webhook = ?`), tenant, id); err != nil {
		return dbErr("delete webhook attempts", err)
	}
	return nil
}

// RotateWebhookSecret implements store.Webhooks. The update is conditional on the sealed secrets
// read, so two rotations at once cannot lose one: the second gets EConflict.
func (db *DB) RotateWebhookSecret(ctx context.Context, tenant, id, secret string, now, oldExpires time.Time) (store.Webhook, error) {
	w, err := db.Webhook(ctx, tenant, id)
	if err != nil {
		return w, err
	}
	var oldCT []byte
	if err := db.readRow(ctx, db.q(`SELECT secrets_ct FROM webhooks WHERE tenant = ? AND id = ?`), tenant, id).Scan(&oldCT); err != nil {
		return w, dbErr("rotate webhook secret", err)
	}
	next := []store.WebhookSecret{{Value: secret, CreatedAt: now}}
	if active := w.Active(now); len(active) > 0 {
		cur := active[0]
		if cur.ExpiresAt.IsZero() || cur.ExpiresAt.After(oldExpires) {
			cur.ExpiresAt = oldExpires
		}
		next = append(next, cur)
	}
	ct, err := db.sealSecrets(ctx, tenant, id, next)
	if err != nil {
		return w, err
	}
	res, err := db.writer.ExecContext(ctx, db.q(`UPDATE webhooks SET secrets_ct = ? WHERE tenant = ? AND id = ? AND secrets_ct = ?`), ct, tenant, id, oldCT)
	if err != nil {
		return w, dbErr("rotate webhook secret", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return w, gateway.Errorf(gateway.EConflict, "webhook %s changed while rotating its secret: try again", id)
	}
	w.Secrets = next
	return w, nil
}

// SetWebhookDisabled implements store.Webhooks.
func (db *DB) SetWebhookDisabled(ctx context.Context, tenant, id string, at time.Time, reason string) error {
	var disabled int64
	if !at.IsZero() {
		disabled = micros(at)
	} else {
		reason = ""
	}
	res, err := db.writer.ExecContext(ctx, db.q(`UPDATE webhooks SET disabled_at = ?, disabled_reason = ? WHERE tenant = ? AND id = ?`),
		disabled, reason, tenant, id)
	if err != nil {
		return dbErr("disable webhook", err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return gateway.Errorf(gateway.ENotFound, "no webhook %s", id)
	}
	return nil
}

// RecordWebhookAttempt implements store.Webhooks.
func (db *DB) RecordWebhookAttempt(ctx context.Context, a store.WebhookAttempt) error {
	if a.At.IsZero() {
		a.At = db.now()
	}
	_, err := db.writer.ExecContext(ctx, db.q(`INSERT INTO webhook_attempts
		(tenant, webhook, event, event_id, message_id, attempt, status_code, latency_ms, error, at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		a.Tenant, a.Webhook, a.Event, a.EventID, a.MessageID, a.Attempt, a.StatusCode, a.LatencyMS, a.Error, micros(a.At))
	if err != nil {
		return dbErr("record webhook attempt", err)
	}
	return nil
}

// WebhookAttempts implements store.Webhooks. The cursor is the seq of the last attempt shown.
func (db *DB) WebhookAttempts(ctx context.Context, tenant, webhook, cursor string, limit int) ([]store.WebhookAttempt, string, error) {
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	before := int64(1<<63 - 1)
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || n <= 0 {
			return nil, "", gateway.FieldErrorf(gateway.EInvalidField, "cursor", "invalid cursor: use the next_cursor of a previous page")
		}
		before = n
	}
	rows, err := db.readRows(ctx, db.q(`SELECT seq, event, event_id, message_id, attempt, status_code, latency_ms, error, at
		FROM webhook_attempts WHERE tenant = ? AND webhook = ? AND seq < ? ORDER BY seq DESC LIMIT ?`), tenant, webhook, before, limit+1)
	if err != nil {
		return nil, "", dbErr("read webhook attempts", err)
	}
	defer rows.Close()
	var out []store.WebhookAttempt
	for rows.Next() {
		a := store.WebhookAttempt{Tenant: tenant, Webhook: webhook}
		var at int64
		if err := rows.Scan(&a.Seq, &a.Event, &a.EventID, &a.MessageID, &a.Attempt, &a.StatusCode, &a.LatencyMS, &a.Error, &at); err != nil {
			return nil, "", dbErr("read webhook attempts", err)
		}
		a.At = fromMicros(at)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, "", dbErr("read webhook attempts", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = strconv.FormatInt(out[limit-1].Seq, 10)
	}
	return out, next, nil
}

// PurgeWebhookAttempts implements store.Webhooks.
func (db *DB) PurgeWebhookAttempts(ctx context.Context, before time.Time, limit int) (int64, error) {
	res, err := db.writer.ExecContext(ctx, db.q(`DELETE FROM webhook_attempts WHERE seq IN (
		SELECT seq FROM webhook_attempts WHERE at < ? LIMIT ?)`), micros(before), limit)
	if err != nil {
		return 0, dbErr("purge webhook attempts", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
