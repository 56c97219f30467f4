package privacy

import (
	"bytes"
	"context"
	dbsql "database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/pipeline/consent"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
	"github.com/switchboard-gateway/switchboard/store/sql/sqltest"
)

var testActor = store.Actor{KeyID: "key_1", IP: "192.0.2.1"}

const (
	alice = "+4915112345678"
	bob   = "+4915112345679"
)

type env struct {
	dir     string
	masters []crypt.MasterKey
	db      *storesql.DB
	kr      *crypt.Keyring
	svc     *Service
	bus     *fakeBus
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{dir: dir, masters: sqltest.MasterKeys(), bus: &fakeBus{}}
	e.db, e.kr = sqltest.Open(t, dir)
	var err error
	if e.svc, err = New(Config{Store: e.db, Indexer: e.kr, Bus: e.bus}); err != nil {
		t.Fatal(err)
	}
	return e
}

type fakeBus struct {
	mu     sync.Mutex
	events []gateway.StatusEvent
}

func (b *fakeBus) Publish(_ context.Context, _, _ string, data []byte) error {
	var ev gateway.StatusEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return err
	}
	b.mu.Lock()
	b.events = append(b.events, ev)
	b.mu.Unlock()
	return nil
}

func addr(t testing.TB, s string) gateway.Address {
	t.Helper()
	a, err := ParseSubject(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// send stores an outbound message to `to` and returns its id.
func (e *env) send(t testing.TB, tenant, to, text string) string {
	t.Helper()
	m := &gateway.Message{Tenant: tenant, Channel: gateway.WhatsApp, Account: "sales", Peer: addr(t, to),
		Content: gateway.Content{Text: text}, Metadata: map[string]string{"order": "42"}}
	if _, _, _, err := e.db.CreateMessage(context.Background(), store.NewMessage{Message: m}); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

func (e *env) receive(t testing.TB, tenant, from, text string) string {
	t.Helper()
	m := &gateway.Message{Tenant: tenant, Channel: gateway.WhatsApp, Account: "sales", Peer: addr(t, from),
		Content: gateway.Content{Text: text}, ChannelMessageID: "wamid." + gateway.NewID("x")}
	if _, err := e.db.CreateInbound(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

func (e *env) optOut(t testing.TB, tenant, who string) {
	t.Helper()
	_, err := e.db.RecordConsent(context.Background(), store.ConsentChange{Tenant: tenant, Channel: gateway.WhatsApp,
		Subject: addr(t, who), State: store.ConsentOptedOut, Source: store.SourceAPI, Actor: "key_1", At: time.Now(), Note: "asked by phone"})
	if err != nil {
		t.Fatal(err)
	}
}

// erase runs one erasure job to its end and returns it.
func (e *env) erase(t testing.TB, tenant, who string) store.Erasure {
	t.Helper()
	ctx := context.Background()
	job, err := e.svc.RequestErasure(ctx, tenant, testActor, addr(t, who))
	if err != nil {
		t.Fatal(err)
	}
	if worked, err := e.svc.RunOnce(ctx); err != nil || !worked {
		t.Fatalf("RunOnce: worked=%v err=%v", worked, err)
	}
	job, err = e.svc.Erasure(ctx, tenant, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.State != store.ErasureDone {
		t.Fatalf("erasure %s: %s (%s)", job.ID, job.State, job.ErrorCode)
	}
	return job
}

// TestErasureBackupUnreadable is issue 7's backup test: a copy of the database taken before the
// erasure, opened afterwards with the master key and the live key vault, no longer yields the
// erased subject's content, while another subject's content in the same copy still opens.
func TestErasureBackupUnreadable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	aliceMsg := e.send(t, "acme", alice, "alice secret text")
	aliceIn := e.receive(t, "acme", alice, "alice reply text")
	bobMsg := e.send(t, "acme", bob, "bob text")

	aliceIdx := mustIndex(t, e, alice)
	wrapped, err := e.db.SubjectKey(ctx, "acme", aliceIdx)
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(e.dir, "backup.db")
	if _, err := e.db.SQL().ExecContext(ctx, "VACUUM INTO ?", backup); err != nil {
		t.Fatal(err)
	}
	e.erase(t, "acme", alice)

	// The vault overwrites what it deletes (secure_delete, no write-ahead log): the wrapped key
	// is gone from its file, not just unlinked from a page.
	vaultFile, err := os.ReadFile(storesql.VaultPath(filepath.Join(e.dir, "switchboard.db")))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(vaultFile, wrapped.Wrapped) {
		t.Fatal("the erased subject's wrapped key is still in the vault file")
	}

	open := func(keysDSN string) (*storesql.DB, func()) {
		db, _, err := storesql.OpenEncrypted(ctx, storesql.Config{Driver: storesql.SQLite, DSN: backup, KeysDSN: keysDSN}, e.masters, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		return db, func() { db.Close() }
	}
	cases := []struct {
		name    string
		keysDSN string // "" = the backup's own (empty) vault: a data backup carries no keys
		bobOK   bool
	}{
		{"backup with the live key vault", storesql.VaultPath(filepath.Join(e.dir, "switchboard.db")), true},
		{"backup alone", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, closeDB := open(c.keysDSN)
			defer closeDB()
			for _, id := range []string{aliceMsg, aliceIn} {
				if m, err := db.Message(ctx, "acme", id, true); err == nil {
					t.Fatalf("erased subject's message %s opens from the backup: %q", id, m.Content.Text)
				} else if code := gateway.ErrorCode(err); code != gateway.ESubjectErased && c.bobOK {
					t.Fatalf("message %s: code %s, want subject_erased (%v)", id, code, err)
				}
			}
			m, err := db.Message(ctx, "acme", bobMsg, true)
			if c.bobOK {
				if err != nil || m.Content.Text != "bob text" {
					t.Fatalf("another subject's message in the backup: %v %+v", err, m)
				}
			} else if err == nil {
				t.Fatal("a data backup without the vault opened a message")
			}
		})
	}
}

// TestErasureLeavesOnlySuppression: after erasure no row of any table holds the subject's blind
// index except its suppression entry (the opted-out consent row); the vault holds no key of it;
// a later send is still refused; the report counts kinds; another subject is untouched.
func TestErasureLeavesOnlySuppression(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	for i := range 5 {
		e.send(t, "acme", alice, fmt.Sprintf("hello %d", i))
	}
	e.receive(t, "acme", alice, "STOP")
	if err := e.db.TouchInbound(ctx, "acme", gateway.WhatsApp, addr(t, alice), time.Now()); err != nil {
		t.Fatal(err)
	}
	e.optOut(t, "acme", alice)
	if _, err := e.svc.SetRestriction(ctx, "acme", testActor, addr(t, alice), true); err != nil {
		t.Fatal(err)
	}
	e.send(t, "acme", bob, "bob stays")
	idx, _ := e.kr.BlindIndex(ctx, "acme", alice)

	job := e.erase(t, "acme", alice)
	want := map[string]int64{
		storesql.ReportKeys: 1, storesql.ReportMessages: 6, storesql.ReportStatusEvents: 6, storesql.ReportConsentEvents: 1,
		storesql.ReportWindows: 1, storesql.ReportRestrictions: 1, storesql.ReportSuppressions: 1, storesql.ReportPendingStopped: 5,
	}
	for k, v := range want {
		if job.Report[k] != v {
			t.Errorf("report[%s] = %d, want %d (report %v)", k, job.Report[k], v, job.Report)
		}
	}
	js, _ := json.Marshal(job)
	if strings.Contains(string(js), idx) || strings.Contains(string(js), alice) {
		t.Fatalf("the job names the subject: %s", js)
	}
	if n := len(e.bus.events); n != 5 {
		t.Fatalf("%d final events for the 5 pending messages", n)
	}
	for _, ev := range e.bus.events {
		if ev.Status != gateway.StatusRejected || ev.Error == nil || ev.Error.Code != gateway.ESubjectErased {
			t.Fatalf("pending message ended %+v", ev)
		}
	}

	hits := rowsHolding(t, e.db.SQL(), idx)
	if len(hits) != 1 || hits[0] != "consents" {
		t.Fatalf("rows holding the blind index after erasure: %v (want only the consents suppression entry)", hits)
	}
	if _, err := e.db.SubjectKey(ctx, "acme", idx); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatalf("subject key still in the vault: %v", err)
	}
	check, err := e.db.CheckConsent(ctx, "acme", gateway.WhatsApp, addr(t, alice), "", "")
	if err != nil || !check.OptedOut {
		t.Fatalf("a send after opt-out and erasure is not refused: %+v %v", check, err)
	}
	if ms, err := e.db.SubjectMessages(ctx, "acme", mustIndex(t, e, bob), "", 10); err != nil || len(ms) != 1 || ms[0].Content.Text != "bob stays" {
		t.Fatalf("another subject: %v %v", ms, err)
	}
}

func mustIndex(t testing.TB, e *env, who string) string {
	idx, err := e.kr.BlindIndex(context.Background(), "acme", who)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// names runs query, which selects one text column, and returns its values.
func names(t testing.TB, db *dbsql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rowsHolding lists the tables with a row that has value in any column.
func rowsHolding(t testing.TB, db *dbsql.DB, value string) []string {
	t.Helper()
	ctx := context.Background()
	var hits []string
	for _, tbl := range names(t, db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") {
		var conds []string
		for _, c := range names(t, db, "SELECT name FROM pragma_table_info(?)", tbl) {
			conds = append(conds, fmt.Sprintf("CAST(%q AS TEXT) = ?1", c))
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+fmt.Sprintf("%q", tbl)+" WHERE "+strings.Join(conds, " OR "), value).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			hits = append(hits, tbl)
		}
	}
	return hits
}

// TestExportRoundTrip: what was sent to and received from a subject is in its export,
// decrypted, with statuses and consent history; nothing of another subject is.
func TestExportRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	out := e.send(t, "acme", alice, "your order shipped")
	e.receive(t, "acme", alice, "thanks!")
	e.optOut(t, "acme", alice)
	e.send(t, "acme", bob, "not alice's")
	if _, err := e.db.ApplyStatus(ctx, []gateway.StatusEvent{{MessageID: out, Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Status: gateway.StatusQueued, At: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.svc.Export(ctx, "acme", testActor, addr(t, alice), &buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Subject  string          `json:"subject"`
		Consent  ExportConsent   `json:"consent"`
		Messages []ExportMessage `json:"messages"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("export is not JSON: %v\n%s", err, buf.String())
	}
	if doc.Subject != alice || len(doc.Messages) != 2 {
		t.Fatalf("export: subject %q, %d messages", doc.Subject, len(doc.Messages))
	}
	texts := map[string]string{}
	for _, m := range doc.Messages {
		texts[m.Content.Text] = m.Direction
		if m.Peer != alice || len(m.History) == 0 {
			t.Fatalf("message %+v", m)
		}
	}
	if texts["your order shipped"] != "outbound" || texts["thanks!"] != "inbound" {
		t.Fatalf("texts %v", texts)
	}
	if len(doc.Consent.History) != 1 || doc.Consent.History[0].Note != "asked by phone" {
		t.Fatalf("consent %+v", doc.Consent)
	}
	if strings.Contains(buf.String(), "not alice's") {
		t.Fatal("another subject's message in the export")
	}
}

// TestExportPages: a history longer than one page streams whole.
func TestExportPages(t *testing.T) {
	e := newEnv(t)
	n := exportPage*2 + 3
	for i := range n {
		e.send(t, "acme", alice, fmt.Sprintf("m%d", i))
	}
	var buf bytes.Buffer
	if err := e.svc.Export(context.Background(), "acme", testActor, addr(t, alice), &buf); err != nil {
		t.Fatal(err)
	}
	var doc struct{ Messages []ExportMessage }
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil || len(doc.Messages) != n {
		t.Fatalf("%d messages, %v", len(doc.Messages), err)
	}
}

// TestRestrictionStage: a restricted subject's messages are rejected subject_restricted by the
// consent stage (which reads restrictions with consent) until the restriction is lifted; other
// tenants and subjects are not affected.
func TestRestrictionStage(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.svc.SetRestriction(ctx, "acme", testActor, addr(t, alice), true); err != nil {
		t.Fatal(err)
	}
	stage := &consent.Stage{Store: e.db, Policy: func(string, gateway.Channel) (consent.Policy, bool) { return consent.Policy{}, true }}
	cases := []struct {
		name, tenant, to string
		want             string
	}{
		{"restricted", "acme", alice, gateway.ESubjectRestricted},
		{"other subject", "acme", bob, ""},
		{"other tenant", "beta", alice, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := stage.Check(ctx, &gateway.Message{Tenant: c.tenant, Channel: gateway.WhatsApp, Peer: addr(t, c.to)})
			if got := gateway.ErrorCode(err); got != c.want {
				t.Fatalf("code %q, want %q (%v)", got, c.want, err)
			}
		})
	}
	if changed, err := e.svc.SetRestriction(ctx, "acme", testActor, addr(t, alice), false); err != nil || !changed {
		t.Fatal(changed, err)
	}
	if err := stage.Check(ctx, &gateway.Message{Tenant: "acme", Channel: gateway.WhatsApp, Peer: addr(t, alice)}); err != nil {
		t.Fatalf("after lifting: %v", err)
	}
}

// TestErasureTenantScoped: a job of one tenant is not visible to another, and erasing a subject
// in one tenant leaves the same person's data in another tenant.
func TestErasureTenantScoped(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.send(t, "beta", alice, "beta keeps this")
	job := e.erase(t, "acme", alice)
	if _, err := e.svc.Erasure(ctx, "beta", job.ID); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatalf("another tenant reads the job: %v", err)
	}
	idx, _ := e.kr.BlindIndex(ctx, "beta", alice)
	if ms, err := e.db.SubjectMessages(ctx, "beta", idx, "", 10); err != nil || len(ms) != 1 {
		t.Fatalf("beta's data: %v %v", ms, err)
	}
}

func TestParseSubject(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"+4915112345678", "+4915112345678", true},
		{"teams:user:6f1c0a2e-0000-4000-8000-000000000001", "teams:user:6f1c0a2e-0000-4000-8000-000000000001", true},
		{"teams:chat:19:abc@thread.v2", "", false},
		{"120363000000000000@g.us", "", false},
		{"", "", false},
		{"not a number", "", false},
	}
	for _, c := range cases {
		a, err := ParseSubject(c.in)
		if (err == nil) != c.ok || (c.ok && a.String() != c.want) {
			t.Errorf("ParseSubject(%q) = %v, %v", c.in, a, err)
		}
	}
}

// BenchmarkEraseSubject10k erases a subject with 10,000 messages (issue 7: under 10 s on
// SQLite). Run: go test ./privacy -run x -bench EraseSubject10k -benchtime 1x
func BenchmarkEraseSubject10k(b *testing.B) {
	const n = 10000
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 16 {
					m := &gateway.Message{Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: addr(b, alice),
						Content: gateway.Content{Text: fmt.Sprintf("message %d", i)}}
					if _, _, _, err := e.db.CreateMessage(context.Background(), store.NewMessage{Message: m}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		b.StartTimer()
		job := e.erase(b, "acme", alice)
		b.StopTimer()
		if job.Report[storesql.ReportMessages] != n {
			b.Fatalf("erased %d messages", job.Report[storesql.ReportMessages])
		}
		e.db.Close()
		b.StartTimer()
	}
}

// TestSkipRestricted: automations do not see inbound messages of a restricted subject.
func TestSkipRestricted(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	var seen []string
	h := e.svc.SkipRestricted(pipeline.InboundHandlerFunc(func(_ context.Context, in pipeline.Inbound) error {
		seen = append(seen, in.Message.Peer.String())
		return nil
	}))
	if _, err := e.svc.SetRestriction(ctx, "acme", testActor, addr(t, alice), true); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{alice, bob} {
		in := pipeline.Inbound{Message: &gateway.Message{Tenant: "acme", Peer: addr(t, who)}, Subject: mustIndex(t, e, who)}
		if err := h.HandleInbound(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 1 || seen[0] != bob {
		t.Fatalf("handler saw %v", seen)
	}
}

// TestTenantErasure: the tenant key is destroyed (a backup no longer opens), every row of the
// tenant goes from every table with a tenant column, including other packages' tables, while
// usage counts, the audit log and other tenants stay.
func TestTenantErasure(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	acmeMsg := e.send(t, "acme", alice, "acme text")
	e.receive(t, "acme", bob, "acme inbound")
	e.optOut(t, "acme", alice)
	if _, err := e.svc.SetRestriction(ctx, "acme", testActor, addr(t, bob), true); err != nil {
		t.Fatal(err)
	}
	betaMsg := e.send(t, "beta", alice, "beta text")
	if _, err := e.db.SQL().ExecContext(ctx, "CREATE TABLE other_pkg (tenant TEXT NOT NULL, secret BLOB)"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.SQL().ExecContext(ctx, "INSERT INTO other_pkg VALUES ('acme', x'01'), ('beta', x'02')"); err != nil {
		t.Fatal(err)
	}
	usage := totalUsage(t, e.db, "acme")
	backup := filepath.Join(e.dir, "backup.db")
	if _, err := e.db.SQL().ExecContext(ctx, "VACUUM INTO ?", backup); err != nil {
		t.Fatal(err)
	}

	job, err := e.svc.EraseTenant(ctx, "acme", store.Actor{KeyID: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	report := job.Report
	if job.State != store.ErasureDone || !job.WholeTenant {
		t.Fatalf("job %+v", job)
	}
	if report["tenant_keys"] != 1 || report[storesql.ReportKeys] != 2 || report[storesql.ReportMessages] != 2 || report["other_pkg"] != 1 {
		t.Fatalf("report %v", report)
	}
	tables := names(t, e.db.SQL(), `SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) c
		WHERE m.type = 'table' AND c.name = 'tenant'`)
	for _, tbl := range tables {
		var n int
		if err := e.db.SQL().QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) FROM %q WHERE tenant = 'acme'", tbl)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		kept := tbl == "usage_daily" || tbl == "audit_log" || tbl == "erasures"
		if (n > 0) != kept {
			t.Errorf("table %s: %d rows of the erased tenant", tbl, n)
		}
	}
	if got := totalUsage(t, e.db, "acme"); got != usage {
		t.Fatalf("usage %d, was %d", got, usage)
	}

	db, _, err := storesql.OpenEncrypted(ctx, storesql.Config{Driver: storesql.SQLite, DSN: backup,
		KeysDSN: storesql.VaultPath(filepath.Join(e.dir, "switchboard.db"))}, e.masters, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Message(ctx, "acme", acmeMsg, true); err == nil {
		t.Fatal("the erased tenant's message opens from the backup")
	}
	if m, err := db.Message(ctx, "beta", betaMsg, true); err != nil || m.Content.Text != "beta text" {
		t.Fatalf("another tenant in the backup: %v", err)
	}
}
