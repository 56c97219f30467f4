package sql

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

func change(t testing.TB, to string, st store.ConsentState, at time.Time) store.ConsentChange {
	return store.ConsentChange{Tenant: "acme", Channel: gateway.WhatsApp, Subject: mustAddr(t, gateway.WhatsApp, to),
		State: st, Source: store.SourceAPI, Actor: "key_1", At: at}
}

func TestConsentRecordAndHistory(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		const to = "+4915112345601"
		t0 := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
		c := change(t, to, store.ConsentOptedIn, t0)
		c.Note = "paper form 17"
		if ok, err := e.db.RecordConsent(ctx, c); err != nil || !ok {
			t.Fatalf("record: %v %v", ok, err)
		}
		if ok, err := e.db.RecordConsent(ctx, change(t, to, store.ConsentOptedOut, t0.Add(time.Hour))); err != nil || !ok {
			t.Fatalf("record: %v %v", ok, err)
		}
		// An older piece of evidence joins the history but does not move the current state.
		if _, err := e.db.RecordConsent(ctx, change(t, to, store.ConsentOptedIn, t0.Add(-time.Hour))); err != nil {
			t.Fatal(err)
		}
		got, err := e.db.Consent(ctx, "acme", gateway.WhatsApp, mustAddr(t, gateway.WhatsApp, to))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Current) != 1 || got.Current[0].State != store.ConsentOptedOut || !got.Current[0].UpdatedAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("current: %+v", got.Current)
		}
		if len(got.History) != 3 || got.History[1].Note != "paper form 17" || got.History[1].Actor != "key_1" || !got.History[0].At.Equal(t0.Add(-time.Hour)) {
			t.Fatalf("history: %+v", got.History)
		}
		// Another tenant and another channel see nothing.
		if other, err := e.db.Consent(ctx, "other", gateway.WhatsApp, mustAddr(t, gateway.WhatsApp, to)); err != nil || len(other.History) != 0 {
			t.Fatalf("other tenant: %+v %v", other, err)
		}
		// Nothing readable: the subject only as its blind index, the note sealed.
		if n := count(t, e.db, "SELECT COUNT(*) FROM consent_events WHERE subject = ?", got.Subject); n != 3 {
			t.Fatalf("%d events under the blind index", n)
		}
		var ct []byte
		if err := e.db.reader.QueryRow(e.db.q("SELECT note_ct FROM consent_events WHERE note_ct IS NOT NULL")).Scan(&ct); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(ct, []byte("paper form")) {
			t.Fatal("the note is stored in the clear")
		}
	})
}

func TestConsentInboundEvidenceOnce(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		c := change(t, "+4915112345602", store.ConsentOptedOut, time.Now())
		c.Source, c.InboundMessageID = store.SourceKeyword, "msg_inbound_1"
		for i, want := range []bool{true, false, false} {
			ok, err := e.db.RecordConsent(ctx, c)
			if err != nil || ok != want {
				t.Fatalf("record %d: %v %v, want %v", i, ok, err, want)
			}
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM consent_events"); n != 1 {
			t.Fatalf("%d events", n)
		}
	})
}

func TestConsentCheck(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		to := mustAddr(t, gateway.WhatsApp, "+4915112345603")
		chk, err := e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, to, "", "msg_x")
		if err != nil || chk.OptedIn || chk.OptedOut || chk.Bypass || !chk.LastInboundAt.IsZero() || chk.Subject == "" {
			t.Fatalf("nothing recorded: %+v %v", chk, err)
		}
		at := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
		if err := e.db.TouchInbound(ctx, "acme", gateway.WhatsApp, to, at); err != nil {
			t.Fatal(err)
		}
		if err := e.db.TouchInbound(ctx, "acme", gateway.WhatsApp, to, at.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		c := change(t, to.String(), store.ConsentOptedIn, at)
		c.Category = store.CategoryMarketing
		if _, err := e.db.RecordConsent(ctx, c); err != nil {
			t.Fatal(err)
		}
		chk, _ = e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, to, store.CategoryMarketing, "msg_x")
		if !chk.OptedIn || chk.OptedOut || !chk.LastInboundAt.Equal(at) {
			t.Fatalf("marketing opt-in, window: %+v", chk)
		}
		if chk, _ = e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, to, "", "msg_x"); chk.OptedIn {
			t.Fatalf("a marketing opt-in counted for an uncategorised message: %+v", chk)
		}
		if chk, _ = e.db.CheckConsent(ctx, "acme", gateway.Teams, to, store.CategoryMarketing, "msg_x"); chk.OptedIn || !chk.LastInboundAt.IsZero() {
			t.Fatalf("consent leaked across channels: %+v", chk)
		}
		if _, err := e.db.RecordConsent(ctx, change(t, to.String(), store.ConsentOptedOut, at)); err != nil {
			t.Fatal(err)
		}
		chk, _ = e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, to, store.CategoryMarketing, "msg_x")
		if chk.OptedIn || !chk.OptedOut {
			t.Fatalf("a plain opt-out must win over the category opt-in: %+v", chk)
		}
		if err := e.db.GrantOptOutBypass(ctx, "acme", to, "msg_reply", "msg_in"); err != nil {
			t.Fatal(err)
		}
		if err := e.db.GrantOptOutBypass(ctx, "acme", to, "msg_reply", "msg_in"); err != nil {
			t.Fatalf("granting again: %v", err)
		}
		if chk, _ = e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, to, "", "msg_reply"); !chk.Bypass {
			t.Fatalf("bypass not found: %+v", chk)
		}
		if chk, _ = e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, to, "", "msg_other"); chk.Bypass {
			t.Fatal("the bypass applied to another message")
		}
		if chk, _ = e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, mustAddr(t, gateway.WhatsApp, "+4915112345604"), "", "msg_reply"); chk.Bypass {
			t.Fatal("the bypass applied to another subject")
		}
		if chk.Restricted {
			t.Fatal("restricted before any restriction")
		}
		if _, err := e.db.SetRestriction(ctx, "acme", chk.Subject, "test", true); err != nil {
			t.Fatal(err)
		}
		if chk, _ = e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, to, "", "msg_x"); chk.Restricted {
			t.Fatal("another subject's restriction applied")
		}
		if chk, _ = e.db.CheckConsent(ctx, "acme", gateway.Teams, mustAddr(t, gateway.WhatsApp, "+4915112345604"), "", ""); !chk.Restricted {
			t.Fatalf("a restriction holds on every channel: %+v", chk)
		}
	})
}

func TestConsentImportAllOrNothing(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		at := time.Now().Add(-time.Hour)
		good := []store.ConsentChange{change(t, "+4915112345605", store.ConsentOptedOut, at), change(t, "+4915112345606", store.ConsentOptedIn, at)}
		bad := append(append([]store.ConsentChange{}, good...), store.ConsentChange{Tenant: "acme", Channel: gateway.WhatsApp,
			Subject: mustAddr(t, gateway.WhatsApp, "+4915112345607"), State: "maybe", Source: store.SourceImport})
		if err := e.db.ImportConsent(ctx, bad); gateway.ErrorCode(err) != gateway.EInvalidField {
			t.Fatalf("import with a bad change: %v", err)
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM consent_events"); n != 0 {
			t.Fatalf("a refused import wrote %d events", n)
		}
		if err := e.db.ImportConsent(ctx, good); err != nil {
			t.Fatal(err)
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM consents"); n != 2 {
			t.Fatalf("%d consents after the import", n)
		}
	})
}

func TestMessageByIdempotencyKey(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		m := newMsg(t, "acme", "+4915112345608", "hello")
		m.IdempotencyKey = "k-1"
		create(t, e.db, m)
		got, hash, err := e.db.MessageByIdempotencyKey(ctx, "acme", "k-1")
		if err != nil || got.ID != m.ID || hash != "h-"+m.ID || got.Content.Text != "hello" {
			t.Fatalf("lookup: %+v %q %v", got, hash, err)
		}
		if _, _, err := e.db.MessageByIdempotencyKey(ctx, "other", "k-1"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("other tenant: %v", err)
		}
		if _, _, err := e.db.MessageByIdempotencyKey(ctx, "acme", "k-2"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("unknown key: %v", err)
		}
	})
}

// TestConsentNoPlaintextOnDisk records consent with a note and reads the SQLite files for the
// number and the note (SQLite only: its files are what a backup copies).
func TestConsentNoPlaintextOnDisk(t *testing.T) {
	func(t *testing.T) {
		cfg, dir := engines()[0].cfg(t)
		e := &env{engine: SQLite, cfg: cfg, dir: dir}
		e.db, e.kr = e.open(t)
		ctx := context.Background()
		const to = "+4915112345609"
		c := change(t, to, store.ConsentOptedOut, time.Now())
		c.Note = "Quokka-note-8812"
		if _, err := e.db.RecordConsent(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := e.db.TouchInbound(ctx, "acme", gateway.WhatsApp, c.Subject, time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Close(); err != nil {
			t.Fatal(err)
		}
		matches, _ := filepath.Glob(filepath.Join(e.dir, "*"))
		if len(matches) == 0 {
			t.Fatal("no database files")
		}
		for _, p := range matches {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{to, strings.TrimPrefix(to, "+"), c.Note} {
				if bytes.Contains(b, []byte(n)) {
					t.Errorf("%s holds %q", p, n)
				}
			}
		}
	}(t)
}
