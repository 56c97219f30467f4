package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// TestEventsResumeAcrossThreeStreams disconnects a client of GET /v1/events in the middle of
// status, inbound and consent events and reconnects it with Last-Event-ID: together the two
// sessions saw exactly what the whole stream holds, each stream in its order, nothing twice.
func TestEventsResumeAcrossThreeStreams(t *testing.T) {
	g := startGateway(t, t.TempDir())
	first := g.events("demo", "", "")
	consent := func(number string) {
		t.Helper()
		if code := g.do(http.MethodPut, "/v1/consent/whatsapp/"+strings.Replace(number, "+", "%2B", 1), "demo", map[string]any{"state": "opted_in"}, nil); code != http.StatusOK {
			t.Fatalf("consent: HTTP %d", code)
		}
	}
	consent("+4915112345670")
	m1 := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "one"})
	var got []sseEvent
	got = append(got, first.next(), first.next()) // disconnect with more on their way
	first.close()

	g.waitFor(m1, gateway.StatusRead)
	if code := g.do(http.MethodPost, "/v1/sandbox/whatsapp/sales/inbound", "demo", map[string]string{"from": "+4915112345671", "text": "hello there"}, nil); code/100 != 2 {
		t.Fatalf("inbound: HTTP %d", code)
	}
	consent("+4915112345672")

	second := g.events("demo", "", got[len(got)-1].id)
	has := func(evs []sseEvent) bool {
		var read, inbound, consents bool
		n := 0
		for _, ev := range evs {
			read = read || strings.Contains(ev.data, `"status":"read"`)
			inbound = inbound || ev.typ == "message.inbound"
			if ev.typ == "consent.changed" {
				n++
			}
		}
		consents = n == 2
		return read && inbound && consents
	}
	for !has(got) {
		got = append(got, second.next())
	}
	second.close()
	if last := got[len(got)-1].id; strings.Count(last, "-") != 2 {
		t.Errorf("after a tenant event the id names three streams: %q", last)
	}

	all := g.events("demo", "", "0-0")
	var want []sseEvent
	for len(want) < len(got) {
		want = append(want, all.next())
	}
	all.close()
	// The streams interleave by arrival, which a replay need not repeat: compare each stream.
	byType := func(evs []sseEvent) map[string][]string {
		m := map[string][]string{}
		for _, ev := range evs {
			m[ev.typ] = append(m[ev.typ], ev.data)
		}
		return m
	}
	g1, w1 := byType(got), byType(want)
	for _, typ := range []string{"message.status", "message.inbound", "consent.changed"} {
		if strings.Join(g1[typ], "\n") != strings.Join(w1[typ], "\n") {
			t.Errorf("%s: the sessions saw\n%v\nthe stream holds\n%v", typ, g1[typ], w1[typ])
		}
	}
	seen := map[string]bool{}
	for _, ev := range got {
		if seen[ev.id] {
			t.Errorf("event id %s twice", ev.id)
		}
		seen[ev.id] = true
		if strings.Contains(ev.data, "4915112345670") || strings.Contains(ev.data, "4915112345672") {
			t.Errorf("a consent event names the number in full: %s", ev.data)
		}
	}
}
