package sql

import (
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
	"github.com/switchboard-gateway/switchboard/store"
)

// TestWebhooksStoredSealedScopedAndRotated creates, reads, rotates, disables and deletes a
// webhook; another tenant sees none of it, and the secret is nowhere in the database files.
func TestWebhooksStoredSealedScopedAndRotated(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		now := time.Now().UTC().Truncate(time.Microsecond)
		const first = "whsec_Q2FudGFsb3VwZS1zZWNyZXQtMTIzNDU2Nzg5MGFi"
		const second = "whsec_R3JhcGVmcnVpdC1zZWNyZXQtOTg3NjU0MzIxMGFi"
		w := store.Webhook{ID: "wh_1", Tenant: "acme", URL: "https://crm.example.com/hook", Events: []string{"message.status"},
			Secrets: []store.WebhookSecret{{Value: first, CreatedAt: now}}, CreatedAt: now}
		if err := e.db.CreateWebhook(ctx, w); err != nil {
			t.Fatal(err)
		}
		if err := e.db.CreateWebhook(ctx, w); gateway.ErrorCode(err) != gateway.EConflict {
			t.Fatalf("same id again: %v", err)
		}
		got, err := e.db.Webhook(ctx, "acme", "wh_1")
		if err != nil || got.URL != w.URL || len(got.Secrets) != 1 || got.Secrets[0].Value != first || got.Events[0] != "message.status" {
			t.Fatalf("read back %+v %v", got, err)
		}
		if _, err := e.db.Webhook(ctx, "other", "wh_1"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("another tenant's webhook: %v", err)
		}
		if err := e.db.DeleteWebhook(ctx, "other", "wh_1"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("deleting another tenant's webhook: %v", err)
		}

		// Rotation: the new secret first, the old one until its expiry; a third drops the oldest.
		expires := now.Add(24 * time.Hour)
		got, err = e.db.RotateWebhookSecret(ctx, "acme", "wh_1", second, now, expires)
		if err != nil || len(got.Secrets) != 2 || got.Secrets[0].Value != second || !got.Secrets[1].ExpiresAt.Equal(expires) {
			t.Fatalf("rotated %+v %v", got, err)
		}
		if act := got.Active(expires.Add(time.Second)); len(act) != 1 || act[0].Value != second {
			t.Fatalf("after the overlap only the new secret signs: %+v", act)
		}
		got, err = e.db.RotateWebhookSecret(ctx, "acme", "wh_1", first, now.Add(time.Minute), now.Add(time.Hour))
		if err != nil || len(got.Secrets) != 2 || got.Secrets[1].Value != second {
			t.Fatalf("a second rotation keeps two secrets: %+v %v", got, err)
		}

		if err := e.db.SetWebhookDisabled(ctx, "acme", "wh_1", now, "persistent_failure"); err != nil {
			t.Fatal(err)
		}
		list, err := e.db.ListWebhooks(ctx, "acme")
		if err != nil || len(list) != 1 || list[0].DisabledAt.IsZero() || list[0].DisabledReason != "persistent_failure" {
			t.Fatalf("list %+v %v", list, err)
		}
		if list, _ := e.db.ListWebhooks(ctx, "other"); len(list) != 0 {
			t.Fatalf("another tenant lists %+v", list)
		}

		for i := range 3 {
			if err := e.db.RecordWebhookAttempt(ctx, store.WebhookAttempt{Tenant: "acme", Webhook: "wh_1", Event: "message.status",
				EventID: "evt_status_1", MessageID: "msg_1", Attempt: i + 1, StatusCode: 500, LatencyMS: 12, Error: "http_5xx",
				At: now.Add(time.Duration(i-2) * 72 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		page, next, err := e.db.WebhookAttempts(ctx, "acme", "wh_1", "", 2)
		if err != nil || len(page) != 2 || page[0].Attempt != 3 || next == "" {
			t.Fatalf("first page %+v %q %v", page, next, err)
		}
		page, next, err = e.db.WebhookAttempts(ctx, "acme", "wh_1", next, 2)
		if err != nil || len(page) != 1 || page[0].Attempt != 1 || next != "" {
			t.Fatalf("second page %+v %q %v", page, next, err)
		}
		if _, _, err := e.db.WebhookAttempts(ctx, "acme", "wh_1", "bogus", 2); gateway.ErrorCode(err) != gateway.EInvalidField {
			t.Fatalf("bad cursor: %v", err)
		}
		if page, _, _ := e.db.WebhookAttempts(ctx, "other", "wh_1", "", 10); len(page) != 0 {
			t.Fatalf("another tenant reads the log: %+v", page)
		}
		if n, err := e.db.PurgeWebhookAttempts(ctx, now.Add(-time.Hour), 100); err != nil || n != 2 {
			t.Fatalf("retention purged %d, %v", n, err)
		}

		if err := e.db.DeleteWebhook(ctx, "acme", "wh_1"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.Webhook(ctx, "acme", "wh_1"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("after delete: %v", err)
		}
		if n := count(t, e.db, `SELECT COUNT(*) FROM webhook_attempts`); n != 0 {
			t.Fatalf("%d attempts left after delete", n)
		}

		if e.engine == SQLite {
			e.db.Close()
			for _, s := range []string{first, second, first[len("whsec_"):]} {
				paths, read := gatewaytest.FilesHolding(t, e.dir, []byte(s))
				if read == 0 {
					t.Fatal("no database files")
				}
				for _, f := range paths {
					t.Errorf("%s holds a webhook secret in plaintext", f)
				}
			}
		}
	})
}

// TestWebhookWhoseKeyIsGoneIsListedWithoutSecrets: when a tenant's key is gone (an erasure under
// way), its endpoints list without secrets instead of failing the list of every tenant.
func TestWebhookWhoseKeyIsGoneIsListedWithoutSecrets(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		for _, tenant := range []string{"acme", "beta"} {
			if err := e.db.CreateWebhook(ctx, store.Webhook{ID: "wh_1", Tenant: tenant, URL: "https://crm.example.com/hook",
				Secrets: []store.WebhookSecret{{Value: "whsec_x", CreatedAt: time.Now()}}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.db.vault.db.ExecContext(ctx, e.db.q("DELETE FROM vault_tenant_keys WHERE tenant = ?"), "acme"); err != nil {
			t.Fatal(err)
		}
		db, _ := e.open(t) // a fresh keyring: nothing cached
		defer db.Close()
		ws, err := db.ListWebhooks(ctx, "")
		if err != nil || len(ws) != 2 {
			t.Fatalf("list %+v %v", ws, err)
		}
		for _, w := range ws {
			if (w.Tenant == "acme") != (len(w.Secrets) == 0) {
				t.Errorf("%s: secrets %+v", w.Tenant, w.Secrets)
			}
		}
	})
}
