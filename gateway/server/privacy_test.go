package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/pipeline/privacy"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/credstore"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

// startPrivacyGateway is startGateway with erasure jobs reported on a channel.
func startPrivacyGateway(t *testing.T, dir string) (*gw, <-chan store.Erasure) {
	t.Helper()
	return startPrivacyGatewayWith(t, dir, twoTenants, nil)
}

// startPrivacyGatewayWith starts a gateway on the config yaml (with a %s for the data dir),
// retention sweeps reported to onSweep.
func startPrivacyGatewayWith(t *testing.T, dir, yaml string, onSweep func(string, privacy.SweepReport)) (*gw, <-chan store.Erasure) {
	t.Helper()
	erased := make(chan store.Erasure, 16)
	g := startGatewayWith(t, dir, yaml, func(o *server.Options) {
		o.OnErasure = func(e store.Erasure) { erased <- e }
		o.OnSweep = onSweep
	})
	return g, erased
}

// raw does a request and returns the status and body.
func (g *gw) raw(method, path, tenant string) (int, string) {
	g.t.Helper()
	req, _ := http.NewRequest(method, g.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+g.keys[tenant])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitErasure(t *testing.T, ch <-chan store.Erasure, id string) store.Erasure {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.ID == id {
				return e
			}
		case <-timeout:
			t.Fatalf("erasure %s never finished", id)
		}
	}
}

const person = "+4915112345678"

var exportPath = "/v1/exports?subject=" + url.QueryEscape(person)

// TestPrivacyEndToEnd: restriction, export and erasure through the HTTP API of a running gateway;
// a send after opt-out and erasure is still refused; the erased content is gone from the API.
func TestPrivacyEndToEnd(t *testing.T) {
	g, erased := startPrivacyGateway(t, t.TempDir())
	msg := map[string]any{"channel": "whatsapp", "to": person, "text": "parcel 7 is on its way"}
	id := g.send("demo", msg)
	g.waitFor(id, gateway.StatusRead)

	// Restriction: refused at accept while it holds, accepted again once lifted.
	var r struct {
		Subject    string
		Restricted bool
	}
	if code := g.do(http.MethodPut, "/v1/restrictions/"+person, "demo", nil, &r); code != 200 || !r.Restricted {
		t.Fatalf("restrict: %d %+v", code, r)
	}
	var e apiError
	if code := g.do(http.MethodPost, "/v1/messages", "demo", msg, &e); code != 422 || e.Error.Code != gateway.ESubjectRestricted {
		t.Fatalf("send while restricted: %d %+v", code, e)
	}
	if code := g.do(http.MethodDelete, "/v1/restrictions/"+person, "demo", nil, &r); code != 200 || r.Restricted {
		t.Fatalf("lift: %d %+v", code, r)
	}
	g.waitFor(g.send("demo", msg), gateway.StatusRead)

	// Export: the content, decrypted.
	code, body := g.raw(http.MethodGet, exportPath, "demo")
	if code != 200 || !strings.Contains(body, "parcel 7 is on its way") || !strings.Contains(body, `"status":"read"`) {
		t.Fatalf("export: %d %s", code, body)
	}

	// Opt-out, then erasure.
	if code := g.do(http.MethodPut, "/v1/consent/whatsapp/"+person, "demo", map[string]any{"state": "opted_out"}, nil); code != 200 {
		t.Fatalf("opt-out: %d", code)
	}
	var job struct {
		ID, Status string
		Report     map[string]int64
	}
	if code := g.do(http.MethodPost, "/v1/erasures", "demo", map[string]any{"subject": person}, &job); code != 202 || job.ID == "" {
		t.Fatalf("erase: %d %+v", code, job)
	}
	done := waitErasure(t, erased, job.ID)
	if done.State != store.ErasureDone {
		t.Fatalf("erasure ended %s %s", done.State, done.ErrorCode)
	}
	// The subject as the log named it before: its blind index on the delivery lines.
	var shortSubject string
	for _, line := range strings.Split(g.log.String(), "\n") {
		var rec struct{ MsgID, Subject string }
		if json.Unmarshal([]byte(strings.ReplaceAll(line, `"msg_id"`, `"msgid"`)), &rec) == nil && rec.MsgID == id && rec.Subject != "" {
			shortSubject = rec.Subject
		}
	}
	if shortSubject == "" {
		t.Fatal("no delivery line named the subject by its blind index before the erasure")
	}
	logMark := len(g.log.String())
	if code := g.do(http.MethodGet, "/v1/erasures/"+job.ID, "demo", nil, &job); code != 200 || job.Status != "done" ||
		job.Report["messages"] != 2 || job.Report["keys"] != 1 || job.Report["suppressions_kept"] != 1 {
		t.Fatalf("erasure: %d %+v", code, job)
	}
	if code := g.do(http.MethodGet, "/v1/messages/"+id, "demo", nil, nil); code != 404 {
		t.Fatalf("erased message still readable: %d", code)
	}
	if code := g.do(http.MethodPost, "/v1/messages", "demo", msg, &e); code != 422 || e.Error.Code != gateway.ERecipientOptedOut {
		t.Fatalf("send after opt-out and erasure: %d %+v", code, e)
	}
	if _, body := g.raw(http.MethodGet, exportPath, "demo"); strings.Contains(body, "parcel") {
		t.Fatalf("export after erasure: %s", body)
	}
	// No log line written after the erasure can be tied to the subject: not by number, masked
	// number or blind index, though the refused send above was logged.
	after := g.log.String()[logMark:]
	if !strings.Contains(after, gateway.ERecipientOptedOut) && !strings.Contains(after, "/v1/messages") {
		t.Fatalf("the refused send left no log line:\n%s", after)
	}
	for _, line := range strings.Split(after, "\n") {
		for _, tie := range []string{person, strings.TrimPrefix(person, "+"), gateway.MaskIdentifier(person), shortSubject} {
			if strings.Contains(line, tie) {
				t.Errorf("log line after the erasure holds %q: %s", tie, line)
			}
		}
	}
	// No log line written during the erasure names the subject.
	for _, line := range strings.Split(g.log.String(), "\n") {
		if strings.Contains(line, `"erasure_`) && (strings.Contains(line, person) || strings.Contains(line, `"subject"`)) {
			t.Fatalf("erasure log line names the subject: %s", line)
		}
	}
}

// TestPrivacyTenantIsolation: an API key of one tenant cannot read, erase, export or restrict
// another tenant's subject or job.
func TestPrivacyTenantIsolation(t *testing.T) {
	g, erased := startPrivacyGateway(t, t.TempDir())
	demoMsg := g.send("demo", map[string]any{"channel": "whatsapp", "to": person, "text": "demo's own words"})
	g.waitFor(demoMsg, gateway.StatusRead)

	var job struct{ ID string }
	if code := g.do(http.MethodPost, "/v1/erasures", "demo", map[string]any{"subject": "+4915112340000"}, &job); code != 202 {
		t.Fatalf("erase: %d", code)
	}
	waitErasure(t, erased, job.ID)

	t.Run("job of another tenant", func(t *testing.T) {
		var e apiError
		if code := g.do(http.MethodGet, "/v1/erasures/"+job.ID, "other", nil, &e); code != 404 || e.Error.Code != gateway.ENotFound {
			t.Fatalf("%d %+v", code, e)
		}
	})
	t.Run("export", func(t *testing.T) {
		code, body := g.raw(http.MethodGet, exportPath, "other")
		if code != 200 || strings.Contains(body, "demo's own words") || strings.Contains(body, demoMsg) {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("restriction", func(t *testing.T) {
		if code := g.do(http.MethodPut, "/v1/restrictions/"+person, "other", nil, nil); code != 200 {
			t.Fatalf("%d", code)
		}
		var r struct{ Restricted bool }
		if code := g.do(http.MethodGet, "/v1/restrictions/"+person, "demo", nil, &r); code != 200 || r.Restricted {
			t.Fatalf("demo sees other's restriction: %d %+v", code, r)
		}
		g.waitFor(g.send("demo", map[string]any{"channel": "whatsapp", "to": person, "text": "still allowed"}), gateway.StatusRead)
	})
	t.Run("erasure", func(t *testing.T) {
		var j struct{ ID string }
		if code := g.do(http.MethodPost, "/v1/erasures", "other", map[string]any{"subject": person}, &j); code != 202 {
			t.Fatalf("%d", code)
		}
		if e := waitErasure(t, erased, j.ID); e.Tenant != "other" || e.Report["messages"] != 0 {
			t.Fatalf("other's erasure: %+v", e)
		}
		var m struct{ Content struct{ Text string } }
		if code := g.do(http.MethodGet, "/v1/messages/"+demoMsg+"?include=content", "demo", nil, &m); code != 200 || m.Content.Text != "demo's own words" {
			t.Fatalf("demo's message after other's erasure: %d %+v", code, m)
		}
	})
	t.Run("message of another tenant", func(t *testing.T) {
		var e apiError
		if code := g.do(http.MethodGet, "/v1/messages/"+demoMsg+"?include=content", "other", nil, &e); code != 404 || e.Error.Code != gateway.ENotFound {
			t.Fatalf("%d %+v", code, e)
		}
	})
	t.Run("lifting another tenant's restriction", func(t *testing.T) {
		const who = "+4915112340077"
		if code := g.do(http.MethodPut, "/v1/restrictions/"+who, "demo", nil, nil); code != 200 {
			t.Fatalf("%d", code)
		}
		if code := g.do(http.MethodDelete, "/v1/restrictions/"+who, "other", nil, nil); code != 200 {
			t.Fatalf("%d", code)
		}
		var r struct{ Restricted bool }
		if code := g.do(http.MethodGet, "/v1/restrictions/"+who, "demo", nil, &r); code != 200 || !r.Restricted {
			t.Fatalf("other lifted demo's restriction: %d %+v", code, r)
		}
	})
	t.Run("bad subjects", func(t *testing.T) {
		cases := []struct{ method, path string }{
			{http.MethodGet, "/v1/exports?subject=120363000000000000%40g.us"},
			{http.MethodGet, "/v1/exports"},
			{http.MethodPut, "/v1/restrictions/teams:chat:19:abc"},
		}
		for _, c := range cases {
			var e apiError
			if code := g.do(c.method, c.path, "demo", nil, &e); code != 400 {
				t.Errorf("%s %s: %d %+v", c.method, c.path, code, e)
			}
		}
	})
}

// addAdminKey creates an admin API key for tenant in the running gateway's store and registers
// it with g under name. It returns a second handle on the store, and its keyring.
func (g *gw) addAdminKey(name, tenant string) (*storesql.DB, *crypt.Keyring) {
	g.t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(twoTenants, g.dir)))
	if err != nil {
		g.t.Fatal(err)
	}
	db, kr, err := server.OpenStore(context.Background(), cfg, true, zerolog.Nop())
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { db.Close() })
	secret := api.NewAPIKeySecret()
	k, err := db.CreateAPIKey(context.Background(), tenant, name, secret)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := db.GrantAdmin(context.Background(), tenant, k.ID); err != nil {
		g.t.Fatal(err)
	}
	g.keys[name] = secret
	return db, kr
}

// TestTenantErasureByAPI: only an admin key erases its tenant, and only its own; the job's report
// counts per kind; afterwards no row of the tenant is left but the admin key, the job, usage
// counts and the audit log, its channel credentials included, and the other tenant is untouched.
func TestTenantErasureByAPI(t *testing.T) {
	ctx := context.Background()
	g, erased := startPrivacyGateway(t, t.TempDir())
	demoMsg := g.send("demo", map[string]any{"channel": "whatsapp", "to": person, "text": "demo's words"})
	otherMsg := g.send("other", map[string]any{"channel": "whatsapp", "to": person, "text": "other's words"})
	g.waitFor(demoMsg, gateway.StatusRead)
	db, kr := g.addAdminKey("demo-admin", "demo")
	creds, err := credstore.New(db.SQL(), credstore.SQLite, credstore.Keyring(kr))
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"demo", "other"} {
		if err := creds.Put(ctx, credstore.Key{Tenant: tenant, Channel: "teams", Account: "ops", Name: "msal_cache"}, []byte("token of "+tenant)); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("bad requests", func(t *testing.T) {
		cases := []struct {
			key, field, code string
			body             map[string]any
			status           int
		}{
			{"demo", "tenant", gateway.EForbidden, map[string]any{"tenant": true}, 403},
			{"demo-admin", "tenant", gateway.EInvalidField, map[string]any{"tenant": true, "subject": person}, 400},
			{"demo-admin", "tenant", "", map[string]any{"tenant": "other"}, 400},
		}
		for _, c := range cases {
			var e apiError
			if code := g.do(http.MethodPost, "/v1/erasures", c.key, c.body, &e); code != c.status || (c.code != "" && e.Error.Code != c.code) || e.Error.Field != c.field {
				t.Errorf("%s %v: %d %+v", c.key, c.body, code, e)
			}
		}
	})

	var job struct {
		ID, Status  string
		WholeTenant bool `json:"whole_tenant"`
		Report      map[string]int64
	}
	if code := g.do(http.MethodPost, "/v1/erasures", "demo-admin", map[string]any{"tenant": true}, &job); code != 202 || !job.WholeTenant {
		t.Fatalf("tenant erasure: %d %+v", code, job)
	}
	if done := waitErasure(t, erased, job.ID); done.State != store.ErasureDone {
		t.Fatalf("ended %s %s", done.State, done.ErrorCode)
	}
	code, body := g.raw(http.MethodGet, "/v1/erasures/"+job.ID, "demo-admin")
	if code != 200 || strings.Contains(body, person) || strings.Contains(body, demoMsg) {
		t.Fatalf("job: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &job); err != nil {
		t.Fatal(err)
	}
	if job.Status != "done" || job.Report["tenant_keys"] != 1 || job.Report["messages"] < 1 || job.Report[credstore.Table] != 1 {
		t.Fatalf("report %+v", job)
	}
	if code := g.do(http.MethodGet, "/v1/erasures/"+job.ID, "other", nil, nil); code != 404 {
		t.Fatalf("other reads demo's job: %d", code)
	}
	if code := g.do(http.MethodGet, "/v1/messages/"+demoMsg, "demo", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("a deleted (cached) key of the erased tenant still works: %d", code)
	}

	for _, q := range []struct {
		query string
		want  int
	}{
		{"SELECT COUNT(*) FROM messages WHERE tenant = 'demo'", 0},
		{"SELECT COUNT(*) FROM " + credstore.Table + " WHERE tenant = 'demo'", 0},
		{"SELECT COUNT(*) FROM api_keys WHERE tenant = 'demo'", 1}, // the admin key, to read the report
		{"SELECT COUNT(*) FROM " + credstore.Table + " WHERE tenant = 'other'", 1},
	} {
		var n int
		if err := db.SQL().QueryRowContext(ctx, q.query).Scan(&n); err != nil || n != q.want {
			t.Errorf("%s: %d (%v), want %d", q.query, n, err, q.want)
		}
	}
	var m struct{ Content struct{ Text string } }
	if code := g.do(http.MethodGet, "/v1/messages/"+otherMsg+"?include=content", "other", nil, &m); code != 200 || m.Content.Text != "other's words" {
		t.Fatalf("other's message after demo's erasure: %d %+v", code, m)
	}
	if v, err := creds.Get(ctx, credstore.Key{Tenant: "other", Channel: "teams", Account: "ops", Name: "msal_cache"}); err != nil || string(v) != "token of other" {
		t.Fatalf("other's credential: %q %v", v, err)
	}
}

// TestConsentChangesAudited: every consent change through the API (PUT, DELETE, import) is in
// the audit log with the API key's id, the client's IP, the time and the subject's blind index,
// never the subject itself.
func TestConsentChangesAudited(t *testing.T) {
	ctx := context.Background()
	g, _ := startPrivacyGateway(t, t.TempDir())
	db, kr := g.addAdminKey("reader", "demo")
	key, err := db.APIKeyBySecret(ctx, g.keys["demo"])
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Second)
	path := "/v1/consent/whatsapp/" + person
	if code := g.do(http.MethodPut, path, "demo", map[string]any{"state": "opted_in", "category": "marketing"}, nil); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	if code := g.do(http.MethodDelete, path+"?category=marketing", "demo", nil, nil); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	if code := g.do(http.MethodPut, path, "demo", map[string]any{"state": "opted_out"}, nil); code != 200 {
		t.Fatalf("PUT opt-out: %d", code)
	}
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/consent:import", strings.NewReader("+4915112340001,opted_in,2026-11-01,import\n"))
	req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("import: %d", resp.StatusCode)
	}

	idx, err := kr.BlindIndex(ctx, "demo", person)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := db.AuditEntries(ctx, "demo", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ action, target, detail string }{
		{"consent_changed", crypt.ShortSubject(idx), "whatsapp opted_in marketing"},
		{"consent_withdrawn", crypt.ShortSubject(idx), "whatsapp marketing"},
		{"consent_changed", crypt.ShortSubject(idx), "whatsapp opted_out"},
		{"consent_imported", "", "1 rows"},
	}
	var got []store.AuditEntry
	for _, e := range entries {
		if strings.HasPrefix(e.Action, "consent_") {
			got = append(got, e)
		}
		if strings.Contains(e.Target+e.Detail, person) {
			t.Errorf("audit entry names the subject: %+v", e)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("consent audit entries: %+v", got)
	}
	for i, w := range want {
		e := got[i]
		if e.Action != w.action || e.Target != w.target || e.Detail != w.detail || e.Actor.KeyID != key.ID || e.Actor.IP != "127.0.0.1" ||
			e.At.Before(start) || e.At.After(time.Now()) {
			t.Errorf("entry %d: %+v, want %+v by %s from 127.0.0.1", i, e, w, key.ID)
		}
	}
}

// TestStoreKeysDSN: store.keys_dsn places the key vault; nothing is written to the default place
// beside the data file.
func TestStoreKeysDSN(t *testing.T) {
	dir := t.TempDir()
	vault := filepath.Join(dir, "vault", "keys.db")
	if err := os.MkdirAll(filepath.Dir(vault), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(twoTenants+"store: {keys_dsn: %s}\n", dir, vault)))
	if err != nil {
		t.Fatal(err)
	}
	db, kr, err := server.OpenStore(context.Background(), cfg, true, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := kr.BlindIndex(context.Background(), "demo", person); err != nil { // creates the tenant key
		t.Fatal(err)
	}
	if _, err := os.Stat(vault); err != nil {
		t.Fatalf("the configured vault: %v", err)
	}
	if _, err := os.Stat(storesql.VaultPath(cfg.Store.DSN)); !os.IsNotExist(err) {
		t.Fatalf("a vault beside the data file: %v", err)
	}
}

// TestRetentionMetrics: what the retention sweeper of a running gateway purges shows in /metrics
// as switchboard_retention_purged_total per tenant and kind.
func TestRetentionMetrics(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	yaml := strings.Replace(twoTenants, "  - id: demo\n", "  - id: demo\n    retention: {content_days: 7, metadata_days: 30, inbound_days: 20}\n", 1)
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(yaml, dir)))
	if err != nil {
		t.Fatal(err)
	}
	db, _, err := server.OpenStore(ctx, cfg, true, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	for i, m := range []struct {
		dir gateway.Direction
		age time.Duration
	}{{gateway.Outbound, 40 * day}, {gateway.Outbound, 10 * day}, {gateway.Inbound, 25 * day}, {gateway.Outbound, time.Hour}} {
		peer, _ := gateway.ParseAddress(gateway.WhatsApp, person)
		msg := &gateway.Message{Tenant: "demo", Channel: gateway.WhatsApp, Account: "sales", Peer: peer,
			Content: gateway.Content{Text: "old words"}, CreatedAt: time.Now().Add(-m.age)}
		if m.dir == gateway.Inbound {
			msg.ChannelMessageID = fmt.Sprintf("wamid.%d", i)
			_, err = db.CreateInbound(ctx, msg)
		} else {
			_, _, _, err = db.CreateMessage(ctx, store.NewMessage{Message: msg})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	swept := make(chan privacy.SweepReport, 4)
	g, _ := startPrivacyGatewayWith(t, dir, yaml, func(tenant string, r privacy.SweepReport) {
		if tenant == "demo" {
			swept <- r
		}
	})
	var r privacy.SweepReport
	select {
	case r = <-swept:
	case <-time.After(30 * time.Second):
		t.Fatal("no retention sweep")
	}
	if r.Messages != 1 || r.Inbound != 1 || r.Contents != 1 {
		t.Fatalf("sweep %+v", r)
	}
	fams := g.scrape()
	if f := fams["switchboard_retention_purged_total"]; f == nil || f.GetType().String() != "COUNTER" {
		t.Fatalf("no retention counter: %v", f)
	}
	for kind, want := range map[string]float64{"content": 1, "messages": 1, "inbound": 1} {
		m := sample(fams, "switchboard_retention_purged_total", map[string]string{"tenant": "demo", "kind": kind})
		if m == nil || m.GetCounter().GetValue() != want {
			t.Errorf("%s: %v, want %v", kind, m, want)
		}
	}
}

// TestRotationUnderLoadThroughGateway: 1,000 sends through the HTTP API of a running gateway
// while `keys rotate` rewraps the tenant keys under a new primary master key: every message
// reaches delivered, all open afterwards with the new master key alone, and the old key is
// retirable.
func TestRotationUnderLoadThroughGateway(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	g, _ := startPrivacyGateway(t, dir)
	for _, tenant := range []string{"demo", "other"} { // the tenant keys, under the first master key
		g.send(tenant, map[string]any{"channel": "whatsapp", "to": person, "text": "before the rotation"})
	}
	g.stop()
	keysFile := filepath.Join(dir, "master.keys")
	old, err := crypt.LoadMasterKeys(keysFile)
	if err != nil || len(old) != 1 {
		t.Fatalf("master keys: %v %v", old, err)
	}
	newKey := crypt.MasterKey{ID: "mk_new", Key: bytes.Repeat([]byte{9}, crypt.KeySize)}
	writeKeys := func(keys ...crypt.MasterKey) {
		var lines []string
		for _, k := range keys {
			lines = append(lines, crypt.FormatMasterKey(k))
		}
		if err := os.WriteFile(keysFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys(newKey, old[0]) // the new key first, the old one after it

	g, _ = startPrivacyGateway(t, dir)
	const sends = 1000
	type sent struct{ tenant, id, text string }
	results := make(chan sent, sends)
	errs := make(chan error, sends)
	started := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < sends; i += 8 {
				if i == sends/10 {
					close(started) // rotate once a tenth of the sends is in
				}
				tenant := []string{"demo", "other"}[i%2]
				text := fmt.Sprintf("message %d", i)
				id, err := postMessage(g.url, g.keys[tenant], fmt.Sprintf("+49151123%05d", i%50), text)
				if err != nil {
					errs <- err
					return
				}
				results <- sent{tenant, id, text}
			}
		})
	}
	<-started
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(twoTenants, dir)))
	if err != nil {
		t.Fatal(err)
	}
	db, kr, err := server.OpenStore(ctx, cfg, true, zerolog.Nop()) // what `keys rotate` does
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := db.RotateTenantKeys(ctx, kr)
	if err != nil || rotated != 2 {
		t.Fatalf("rotated %d tenant keys: %v", rotated, err)
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var all []sent
	for r := range results {
		all = append(all, r)
		g.waitFor(r.id, gateway.StatusDelivered)
	}
	if len(all) != sends {
		t.Fatalf("%d sends accepted", len(all))
	}
	if n, err := db.TenantKeysUnder(ctx, old[0].ID); err != nil || n != 0 {
		t.Fatalf("%d tenant keys under the old master key (%v): not retirable", n, err)
	}
	db.Close()
	g.stop()

	writeKeys(newKey)                                            // the old key retired
	db, _, err = server.OpenStore(ctx, cfg, true, zerolog.Nop()) // dev: reads the file, which exists
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, m := range all {
		got, err := db.Message(ctx, m.tenant, m.id, true)
		if err != nil || got.Content.Text != m.text || (got.Status != gateway.StatusDelivered && got.Status != gateway.StatusRead) {
			t.Fatalf("message %s of %s with the new key alone: %+v %v", m.id, m.tenant, got, err)
		}
	}
}

// postMessage sends one message through the API (safe from any goroutine) and returns its id.
func postMessage(base, key, to, text string) (string, error) {
	b, _ := json.Marshal(map[string]any{"channel": "whatsapp", "to": to, "text": text})
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("send: HTTP %d %v", resp.StatusCode, err)
	}
	return out.ID, nil
}
