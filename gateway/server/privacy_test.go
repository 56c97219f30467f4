package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/server"
	"github.com/switchboard-gateway/switchboard/store"
)

// startPrivacyGateway is startGateway with erasure jobs reported on a channel.
func startPrivacyGateway(t *testing.T, dir string) (*gw, <-chan store.Erasure) {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(twoTenants, dir)))
	if err != nil {
		t.Fatal(err)
	}
	g := &gw{t: t, dir: dir, keys: map[string]string{}, log: &syncBuffer{}, stopped: make(chan struct{})}
	g.seen = &statuses{reached: map[string]map[gateway.Status]bool{}, changed: make(chan struct{})}
	erased := make(chan store.Erasure, 16)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, server.Options{
		Dev:       true,
		Log:       zerolog.New(g.log).With().Timestamp().Logger(),
		OnApplied: func(_ context.Context, applied []store.Applied) { g.seen.record(applied) },
		OnErasure: func(e store.Erasure) { erased <- e },
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g.url = "http://" + srv.Addr()
	for _, tenant := range []string{"demo", "other"} {
		b, err := os.ReadFile(filepath.Join(dir, tenant+".apikey"))
		if err != nil {
			t.Fatal(err)
		}
		g.keys[tenant] = strings.TrimSpace(string(b))
	}
	go func() {
		defer close(g.stopped)
		if err := srv.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	g.stop = func() { cancel(); <-g.stopped }
	t.Cleanup(g.stop)
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
