package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters/sandbox"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// consentTenant keeps the consent defaults: WhatsApp requires an opt-in (or an open reply
// window), Teams does not. The confirmations are configured.
const consentTenant = `
data_dir: %s
server: {listen: "127.0.0.1:0"}
tenants:
  - id: demo
    channels:
      whatsapp:
        consent:
          replies: {opt_out: "Unsubscribed. Reply START to come back.", opt_in: "Welcome back.", help: "Reply STOP to unsubscribe."}
        accounts: [{name: sales, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
      teams:
        accounts: [{name: ops, driver: sandbox, sandbox: {delivered_after: 5ms, read_after: 10ms}}]
`

func startConsentGateway(t *testing.T, dir string) *gw {
	t.Helper()
	return startGatewayWith(t, dir, consentTenant)
}

type apiError struct {
	Error struct{ Code, Message, Field string } `json:"error"`
}

// sendCode posts a send and returns the HTTP status and the error code (if any) and id.
func (g *gw) sendCode(body map[string]any, headers map[string]string) (int, string, string) {
	g.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/messages", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID    string `json:"id"`
		Error struct{ Code string }
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Error.Code, out.ID
}

type consentView struct {
	State         string     `json:"state"`
	LastInboundAt *time.Time `json:"last_inbound_at"`
	History       []struct {
		State, Source, Actor, Note string
		InboundMessageID           string `json:"inbound_message_id"`
	} `json:"history"`
}

func (g *gw) consent(ch, subject string) consentView {
	g.t.Helper()
	var v consentView
	if code := g.do(http.MethodGet, "/v1/consent/"+ch+"/"+url.PathEscape(subject), "demo", nil, &v); code != http.StatusOK {
		g.t.Fatalf("GET consent: HTTP %d", code)
	}
	return v
}

// eventually polls the consent API until cond holds: the inbound handler runs behind the bus and
// announces nothing the test could wait on.
func (g *gw) eventually(what string, cond func() bool) {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			g.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition that has no event, with a deadline
	}
}

func (g *gw) inbound(from, text string) {
	g.t.Helper()
	var out map[string]any
	if code := g.do(http.MethodPost, "/v1/sandbox/whatsapp/sales/inbound", "demo", map[string]string{"from": from, "text": text}, &out); code != http.StatusAccepted {
		g.t.Fatalf("sandbox inbound: HTTP %d %v", code, out)
	}
}

// outboundIDs lists the tenant's outbound message ids.
func (g *gw) outboundIDs() map[string]bool {
	g.t.Helper()
	var out struct {
		Data []struct{ ID string } `json:"data"`
	}
	if code := g.do(http.MethodGet, "/v1/messages?direction=outbound&limit=500", "demo", nil, &out); code != http.StatusOK {
		g.t.Fatalf("list: HTTP %d", code)
	}
	ids := map[string]bool{}
	for _, m := range out.Data {
		ids[m.ID] = true
	}
	return ids
}

// newReply waits for the one outbound message that is not in before: a keyword confirmation.
func (g *gw) newReply(before map[string]bool) string {
	g.t.Helper()
	var id string
	g.eventually("the keyword confirmation", func() bool {
		for m := range g.outboundIDs() {
			if !before[m] {
				id = m
				return true
			}
		}
		return false
	})
	return id
}

func (g *gw) text(id string) string {
	var m struct{ Content struct{ Text string } }
	g.do(http.MethodGet, "/v1/messages/"+id+"?include=content", "demo", nil, &m)
	return m.Content.Text
}

func TestConsentKeywordsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	g := startConsentGateway(t, dir)
	const number = "+4915112340077"
	send := map[string]any{"channel": "whatsapp", "to": number, "text": "Your parcel arrives today"}

	// WhatsApp requires an opt-in: nobody has written yet.
	if status, code, _ := g.sendCode(send, nil); status != 422 || code != gateway.EConsentRequired {
		t.Fatalf("send before any contact: %d %s, want 422 consent_required", status, code)
	}
	// The person writes first: the reply window opens and the send goes through.
	g.inbound(number, "Hi, where is my parcel?")
	g.eventually("the reply window", func() bool { return g.consent("whatsapp", number).LastInboundAt != nil })
	g.waitFor(g.send("demo", send), gateway.StatusRead)

	// STOP (any case, surrounding spaces): opted out, the confirmation goes out, nothing else does.
	before := g.outboundIDs()
	g.inbound(number, "  stop ")
	stopReply := g.newReply(before)
	g.waitFor(stopReply, gateway.StatusRead)
	if got := g.text(stopReply); got != "Unsubscribed. Reply START to come back." {
		t.Fatalf("opt-out confirmation text %q", got)
	}
	v := g.consent("whatsapp", number)
	if v.State != "opted_out" || len(v.History) != 1 || v.History[0].Source != "keyword" || v.History[0].InboundMessageID == "" || v.History[0].Actor != "whatsapp:sales" {
		t.Fatalf("consent after STOP: %+v", v)
	}
	if status, code, _ := g.sendCode(send, nil); status != 422 || code != gateway.ERecipientOptedOut {
		t.Fatalf("send after STOP: %d %s, want 422 recipient_opted_out", status, code)
	}
	// HELP after STOP: the confirmation of STOP was the one message allowed; no HELP reply.
	g.inbound(number, "HELP")
	g.eventually("the HELP to be handled", func() bool {
		return strings.Contains(g.log.String(), `"event":"keyword_reply_suppressed"`)
	})

	// START: opted in again, with its confirmation, and sends work.
	before = g.outboundIDs()
	g.inbound(number, "Start!")
	startReply := g.newReply(before)
	g.waitFor(startReply, gateway.StatusRead)
	if got := g.text(startReply); got != "Welcome back." {
		t.Fatalf("opt-in confirmation text %q", got)
	}
	if v := g.consent("whatsapp", number); v.State != "opted_in" || len(v.History) != 2 {
		t.Fatalf("consent after START: %+v", v)
	}
	if status, code, _ := g.sendCode(send, nil); status != http.StatusAccepted {
		t.Fatalf("send after START: %d %s, want 202", status, code)
	}

	// Both confirmations reached the sandbox network, each once.
	l, err := sandbox.ReadLedger(filepath.Join(dir, "sandbox", "demo"), gateway.WhatsApp, "sales")
	if err != nil {
		t.Fatal(err)
	}
	if l.Sends[stopReply] != 1 || l.Sends[startReply] != 1 {
		t.Fatalf("sandbox ledger sends: STOP reply %d, START reply %d; want 1 each", l.Sends[stopReply], l.Sends[startReply])
	}

	// The log tells the story with the masked subject only.
	logs := g.log.String()
	for _, want := range []string{`"event":"opt_out"`, `"event":"opt_in"`, `"event":"consent_rejected"`, `"error_code":"recipient_opted_out"`, `"error_code":"consent_required"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log has no %s", want)
		}
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"event":"opt_out"`) && !strings.Contains(l, `"subject":"s_`) {
			t.Errorf("opt-out log line without a subject: %s", l)
		}
	}
}

// TestConsentNeverInPlaintext records consent with a note, STOPs by keyword and imports a CSV,
// then reads every file under the data dir and the log for the identifiers and the note.
func TestConsentNeverInPlaintext(t *testing.T) {
	dir := t.TempDir()
	g := startConsentGateway(t, dir)
	const number, imported, note = "+4915112349911", "+4915112349922", "Signed-form-Okapi-3317"
	const teamsUser = "teams:user:7f3c1e2a-58b4-4b7e-9d6a-1c2b3d4e5f60"
	if code := g.do(http.MethodPut, "/v1/consent/whatsapp/"+url.PathEscape(number), "demo",
		map[string]string{"state": "opted_in", "note": note}, nil); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	if code := g.do(http.MethodPut, "/v1/consent/teams/"+teamsUser, "demo", map[string]string{"state": "opted_out", "source": "admin"}, nil); code != http.StatusOK {
		t.Fatalf("PUT teams: %d", code)
	}
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/consent:import", strings.NewReader(imported+",opted_out,2026-01-02,import\n"))
	req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	before := g.outboundIDs()
	g.inbound(number, "STOP")
	g.waitFor(g.newReply(before), gateway.StatusRead)
	if v := g.consent("whatsapp", number); v.State != "opted_out" || v.History[0].Note != note {
		t.Fatalf("consent: %+v", v)
	}
	g.stop()

	needles := []string{number, strings.TrimPrefix(number, "+"), imported, strings.TrimPrefix(imported, "+"), "7f3c1e2a-58b4-4b7e-9d6a-1c2b3d4e5f60", note}
	requireNoPlaintext(t, dir, needles...)
	logs := g.log.String()
	for _, n := range needles {
		if strings.Contains(logs, n) {
			t.Errorf("the log holds %q", n)
		}
	}
	if !strings.Contains(logs, `"event":"opt_out"`) {
		t.Error("no opt_out log event")
	}
}

// TestIdempotentReplayAfterOptOut: a replay of an Idempotency-Key gets its original 202 even
// though the recipient opted out since; a new request is refused.
func TestIdempotentReplayAfterOptOut(t *testing.T) {
	g := startConsentGateway(t, t.TempDir())
	const user = "teams:user:0a1b2c3d-0000-4000-8000-000000000001"
	body := map[string]any{"to": user, "text": "deploy done"}
	hdr := map[string]string{"Idempotency-Key": "replay-1"}
	status, _, id := g.sendCode(body, hdr)
	if status != http.StatusAccepted {
		t.Fatalf("first send: %d", status)
	}
	if code := g.do(http.MethodPut, "/v1/consent/teams/"+user, "demo", map[string]string{"state": "opted_out"}, nil); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	status, _, again := g.sendCode(body, hdr)
	if status != http.StatusAccepted || again != id {
		t.Fatalf("replay: %d %s, want 202 with %s", status, again, id)
	}
	if status, code, _ := g.sendCode(body, map[string]string{"Idempotency-Key": "replay-2"}); status != 422 || code != gateway.ERecipientOptedOut {
		t.Fatalf("new request: %d %s", status, code)
	}
}

func TestConsentAPIBadInput(t *testing.T) {
	g := startConsentGateway(t, t.TempDir())
	const number = "+4915112340088"
	if code := g.do(http.MethodPut, "/v1/consent/whatsapp/"+url.PathEscape(number), "demo", map[string]string{"state": "opted_out"}, nil); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	long := strings.Repeat("x", 1001)
	tests := []struct {
		name, method, path string
		body               any
		status             int
		code, field        string
	}{
		{"missing state", "PUT", "/v1/consent/whatsapp/%2B4915112340099", map[string]string{}, 400, "missing_field", "state"},
		{"unknown state", "PUT", "/v1/consent/whatsapp/%2B4915112340099", map[string]string{"state": "maybe"}, 400, "invalid_field", "state"},
		{"unknown field", "PUT", "/v1/consent/whatsapp/%2B4915112340099", map[string]string{"state": "opted_in", "why": "x"}, 400, "unknown_field", "why"},
		{"unknown category", "PUT", "/v1/consent/whatsapp/%2B4915112340099", map[string]string{"state": "opted_in", "category": "spam"}, 400, "invalid_field", "category"},
		{"keyword source", "PUT", "/v1/consent/whatsapp/%2B4915112340099", map[string]string{"state": "opted_in", "source": "keyword"}, 400, "invalid_field", "source"},
		{"unknown source", "PUT", "/v1/consent/whatsapp/%2B4915112340099", map[string]string{"state": "opted_in", "source": "rumour"}, 400, "invalid_field", "source"},
		{"note too long", "PUT", "/v1/consent/whatsapp/%2B4915112340099", map[string]string{"state": "opted_in", "note": long}, 400, "invalid_field", "note"},
		{"not a number", "PUT", "/v1/consent/whatsapp/015112340099", map[string]string{"state": "opted_in"}, 400, "invalid_recipient", "subject"},
		{"a group is not a person", "GET", "/v1/consent/whatsapp/120363000000000001@g.us", nil, 400, "invalid_recipient", "subject"},
		{"a teams chat is not a person", "GET", "/v1/consent/teams/teams:chat:19:abc", nil, 400, "invalid_recipient", "subject"},
		{"unknown channel", "GET", "/v1/consent/sms/%2B4915112340099", nil, 400, "unknown_channel", "channel"},
		{"withdrawing an opt-out", "DELETE", "/v1/consent/whatsapp/" + url.PathEscape(number), nil, 409, "conflict", ""},
		{"unknown category on DELETE", "DELETE", "/v1/consent/whatsapp/" + url.PathEscape(number) + "?category=spam", nil, 400, "invalid_field", "category"},
		{"no key", "GET", "/v1/consent/whatsapp/" + url.PathEscape(number), nil, 401, "unauthorized", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out apiError
			tenant := "demo"
			if tt.code == "unauthorized" {
				tenant = ""
			}
			status := g.do(tt.method, tt.path, tenant, tt.body, &out)
			if status != tt.status || out.Error.Code != tt.code || (tt.field != "" && out.Error.Field != tt.field) {
				t.Fatalf("got %d %+v, want %d %s %s", status, out.Error, tt.status, tt.code, tt.field)
			}
		})
	}
	// Nothing of the refused requests was recorded.
	if v := g.consent("whatsapp", "+4915112340099"); v.State != "none" || len(v.History) != 0 {
		t.Fatalf("a refused request left consent behind: %+v", v)
	}
	if v := g.consent("whatsapp", number); v.State != "opted_out" || len(v.History) != 1 {
		t.Fatalf("the opt-out moved: %+v", v)
	}

	// DELETE withdraws an opt-in: none, with evidence; WhatsApp sends then need the window again.
	const in = "+4915112340066"
	g.do(http.MethodPut, "/v1/consent/whatsapp/"+url.PathEscape(in), "demo", map[string]string{"state": "opted_in"}, nil)
	if status, _, _ := g.sendCode(map[string]any{"channel": "whatsapp", "to": in, "text": "hi"}, nil); status != http.StatusAccepted {
		t.Fatalf("send after opt-in: %d", status)
	}
	var v consentView
	if code := g.do(http.MethodDelete, "/v1/consent/whatsapp/"+url.PathEscape(in), "demo", nil, &v); code != http.StatusOK || v.State != "none" || len(v.History) != 2 {
		t.Fatalf("DELETE: %d %+v", code, v)
	}
	if status, code, _ := g.sendCode(map[string]any{"channel": "whatsapp", "to": in, "text": "hi"}, nil); status != 422 || code != gateway.EConsentRequired {
		t.Fatalf("send after withdrawal: %d %s", status, code)
	}
}

func TestConsentImportReportsBadRows(t *testing.T) {
	g := startConsentGateway(t, t.TempDir())
	csv := strings.Join([]string{
		"subject,state,date,source",                                                  // 1: header
		"+4915112341001,opted_out,2026-11-01,import",                                 // 2: good
		"+4915112341002,opted_in,2026-11-02T10:00:00Z,",                              // 3: good (source defaults to import)
		"015112341003,opted_out,2026-11-01,import",                                   // 4: not international
		"+4915112341004,opted_maybe,2026-11-01,import",                               // 5: bad state
		"+4915112341005,opted_in,yesterday,import",                                   // 6: bad date
		"+4915112341006,opted_in",                                                    // 7: too few columns
		"+4915112341007,opted_in,2026-11-01,rumour",                                  // 8: bad source
		`"+4915112341008,opted_in,2026-11-01,import`,                                 // 9: unterminated quote (eats the rest)
		"teams:user:0a1b2c3d-0000-4000-8000-000000000009,opted_out,2026-11-03,admin", // never read: inside the quote
	}, "\n") + "\n"
	req, _ := http.NewRequest(http.MethodPost, g.url+"/v1/consent:import", strings.NewReader(csv))
	req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	req.Header.Set("Content-Type", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var rep struct {
		Imported int
		Rejected []struct {
			Line                int
			Code, Field, Reason string
		}
	}
	if err := json.Unmarshal(body, &rep); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("import: %d %s", resp.StatusCode, body)
	}
	if rep.Imported != 2 {
		t.Errorf("imported %d, want 2: %s", rep.Imported, body)
	}
	want := map[int]string{4: "subject", 5: "state", 6: "date", 7: "", 8: "source", 9: ""}
	if len(rep.Rejected) != len(want) {
		t.Fatalf("rejected rows: %s", body)
	}
	for _, r := range rep.Rejected {
		field, ok := want[r.Line]
		if !ok || r.Field != field || r.Reason == "" || r.Code == "" {
			t.Errorf("rejected row %+v, want line in %v with field %q", r, want, field)
		}
		if strings.Contains(r.Reason, "15112341003") {
			t.Errorf("the report repeats a number in the clear: %s", r.Reason)
		}
	}
	if v := g.consent("whatsapp", "+4915112341001"); v.State != "opted_out" || len(v.History) != 1 || v.History[0].Source != "import" {
		t.Errorf("good row 2: %+v", v)
	}
	if v := g.consent("whatsapp", "+4915112341002"); v.State != "opted_in" || v.History[0].Source != "import" {
		t.Errorf("good row 3: %+v", v)
	}
	for _, bad := range []string{"+4915112341004", "+4915112341005", "+4915112341007"} {
		if v := g.consent("whatsapp", bad); v.State != "none" || len(v.History) != 0 {
			t.Errorf("bad row %s left consent behind: %+v", bad, v)
		}
	}
	// An empty body is refused as a whole.
	var out apiError
	req, _ = http.NewRequest(http.MethodPost, g.url+"/v1/consent:import", strings.NewReader("subject,state,date,source\n"))
	req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	json.NewDecoder(resp2.Body).Decode(&out)
	if resp2.StatusCode != 400 || out.Error.Code != "missing_field" {
		t.Errorf("empty import: %d %+v", resp2.StatusCode, out.Error)
	}
}
