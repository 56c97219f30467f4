package server_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// scrape reads /metrics (no API key) and parses it with the Prometheus text parser.
func (g *gw) scrape() map[string]*dto.MetricFamily {
	g.t.Helper()
	resp, err := http.Get(g.url + "/metrics")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("/metrics: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		g.t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// sample finds the metric of family name whose labels include want.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

func TestMetricsAfterSends(t *testing.T) {
	g := startGateway(t, t.TempDir())
	read := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "hello"})
	failed := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+61491570156", "text": "hello"})
	g.waitFor(read, gateway.StatusRead)
	g.waitFor(failed, gateway.StatusFailed)
	// An opt-out, then a send it refuses at accept.
	if code := g.do(http.MethodPut, "/v1/consent/whatsapp/+4915112345699", "demo", map[string]any{"state": "opted_out"}, nil); code/100 != 2 {
		t.Fatalf("opt-out: HTTP %d", code)
	}
	if code := g.do(http.MethodPost, "/v1/messages", "demo", map[string]any{"channel": "whatsapp", "to": "+4915112345699", "text": "x"}, nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("send to an opted-out number: HTTP %d", code)
	}

	fams := g.scrape()
	demoWA := map[string]string{"tenant": "demo", "channel": "whatsapp"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range demoWA {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	counters := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"switchboard_messages_accepted_total", demoWA, 2},
		{"switchboard_message_status_changes_total", with(map[string]string{"status": "read"}), 1},
		{"switchboard_message_status_changes_total", with(map[string]string{"status": "delivered"}), 1},
		{"switchboard_message_status_changes_total", with(map[string]string{"status": "failed"}), 1},
		{"switchboard_message_errors_total", with(map[string]string{"status": "failed", "code": "not_on_whatsapp"}), 1},
		{"switchboard_consent_rejections_total", with(map[string]string{"point": "intake", "code": "recipient_opted_out"}), 1},
		{"switchboard_consent_changes_total", with(map[string]string{"state": "opted_out"}), 1},
	}
	for _, c := range counters {
		m := sample(fams, c.name, c.labels)
		if m == nil {
			t.Errorf("%s%v: missing", c.name, c.labels)
			continue
		}
		if got := m.GetCounter().GetValue(); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	h := sample(fams, "switchboard_message_delivery_latency_seconds", demoWA)
	if h == nil || h.GetHistogram().GetSampleCount() != 1 || h.GetHistogram().GetSampleSum() <= 0 {
		t.Errorf("delivery latency histogram: %v", h)
	}
	if m := sample(fams, "switchboard_consumer_backlog_messages", map[string]string{"stream": "STATUS"}); m == nil {
		t.Errorf("no backlog gauge for a STATUS consumer: %v", fams["switchboard_consumer_backlog_messages"])
	}
	if m := sample(fams, "switchboard_account_ready", map[string]string{"tenant": "demo", "channel": "whatsapp", "account": "sales"}); m == nil || m.GetGauge().GetValue() != 1 {
		t.Errorf("account state of the sandbox account: %v", m)
	}
	if m := sample(fams, "switchboard_account_state", map[string]string{"tenant": "demo", "channel": "whatsapp", "account": "sales", "state": "ready"}); m == nil || m.GetGauge().GetValue() != 1 {
		t.Errorf("connection state of the sandbox account: %v", fams["switchboard_account_state"])
	}
	// No identifiers as labels: no message id, number or masked number anywhere in the output.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				if strings.HasPrefix(v, "msg_") || strings.Contains(v, "4915112345") || strings.Contains(v, "*") {
					t.Errorf("%s has an identifier label %s=%q", name, l.GetName(), v)
				}
			}
		}
	}
}

// sseEvent is one Server-Sent Event as a client sees it.
type sseEvent struct{ id, typ, data string }

// sseClient reads GET /v1/events.
type sseClient struct {
	t      *testing.T
	cancel context.CancelFunc
	events chan sseEvent
	done   chan struct{}
}

func (g *gw) events(tenant, query, lastID string) *sseClient {
	g.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.url+"/v1/events"+query, nil)
	req.Header.Set("Authorization", "Bearer "+g.keys[tenant])
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		g.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		g.t.Fatalf("events: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	c := &sseClient{t: g.t, cancel: cancel, events: make(chan sseEvent), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.data != "" {
					select {
					case c.events <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.typ = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	g.t.Cleanup(c.close)
	return c
}

func (c *sseClient) next() sseEvent {
	c.t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(30 * time.Second):
		c.t.Fatal("no event within 30s")
	}
	return sseEvent{}
}

// close disconnects and waits for the reader to stop.
func (c *sseClient) close() {
	c.cancel()
	<-c.done
}

func TestEventsResumeWithLastEventID(t *testing.T) {
	g := startGateway(t, t.TempDir())
	first := g.events("demo", "?type=message.status", "")

	m1 := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "one"})
	g.send("other", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "not yours"})
	var got []sseEvent
	got = append(got, first.next()) // disconnect after the first event, with more on their way
	first.close()

	g.waitFor(m1, gateway.StatusRead)
	m2 := g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345679", "text": "two"})
	g.waitFor(m2, gateway.StatusRead)

	second := g.events("demo", "?type=message.status", got[len(got)-1].id)
	reads := 0
	for reads < 2 {
		ev := second.next()
		got = append(got, ev)
		if strings.Contains(ev.data, `"status":"read"`) {
			reads++
		}
	}
	second.close()

	// The whole stream from its start, read up to the same point, is exactly what the two
	// sessions saw together: nothing missed, nothing repeated, nothing of the other tenant.
	all := g.events("demo", "?type=message.status", "0-0")
	var want []sseEvent
	for {
		ev := all.next()
		want = append(want, ev)
		if ev.id == got[len(got)-1].id {
			break
		}
	}
	all.close()
	if len(got) != len(want) {
		t.Fatalf("sessions saw %d events, the stream has %d:\n%v\n%v", len(got), len(want), got, want)
	}
	seen := map[string]bool{}
	for i := range want {
		if got[i].data != want[i].data || got[i].typ != "message.status" {
			t.Errorf("event %d: got %+v, want %+v", i, got[i], want[i])
		}
		if seen[got[i].data] {
			t.Errorf("event repeated: %s", got[i].data)
		}
		seen[got[i].data] = true
		if !strings.Contains(got[i].data, `"tenant":"demo"`) {
			t.Errorf("another tenant's event: %s", got[i].data)
		}
	}
	for _, id := range []string{m1, m2} {
		for _, st := range []string{"sent", "delivered", "read"} {
			if !seen[findEvent(got, id, st)] {
				t.Errorf("%s %s missing", id, st)
			}
		}
	}
}

func findEvent(evs []sseEvent, id, status string) string {
	for _, ev := range evs {
		if strings.Contains(ev.data, `"message_id":"`+id+`"`) && strings.Contains(ev.data, `"status":"`+status+`"`) {
			return ev.data
		}
	}
	return "\x00missing"
}

func TestEventsBadRequests(t *testing.T) {
	g := startGateway(t, t.TempDir())
	tests := []struct {
		name, query, lastID string
		status              int
		code                string
	}{
		{"unknown type", "?type=nope", "", 400, "invalid_field"},
		{"unknown channel", "?channel=fax", "", 400, "unknown_channel"},
		{"bad last event id", "", "12", 400, "invalid_field"},
		{"no key", "", "", 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, g.url+"/v1/events"+tt.query, nil)
			if tt.code != "unauthorized" {
				req.Header.Set("Authorization", "Bearer "+g.keys["demo"])
			}
			if tt.lastID != "" {
				req.Header.Set("Last-Event-ID", tt.lastID)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body strings.Builder
			bufio.NewReader(resp.Body).WriteTo(&body)
			if resp.StatusCode != tt.status || !strings.Contains(body.String(), `"code":"`+tt.code+`"`) {
				t.Fatalf("HTTP %d %s, want %d %s", resp.StatusCode, body.String(), tt.status, tt.code)
			}
		})
	}
}

// TestShutdownEndsEventStreams stops the gateway while a client follows /v1/events: the stream
// ends and the HTTP server shuts down without waiting out its timeout.
func TestShutdownEndsEventStreams(t *testing.T) {
	g := startGateway(t, t.TempDir())
	c := g.events("demo", "", "")
	g.stop()
	<-c.done // the server closed the stream
	if strings.Contains(g.log.String(), "http shutdown") {
		t.Fatalf("the HTTP server did not shut down cleanly:\n%s", g.log.String())
	}
}

func TestEventsCarryInboundMessages(t *testing.T) {
	g := startGateway(t, t.TempDir())
	c := g.events("demo", "?type=message.inbound&channel=whatsapp", "")
	// A send that reaches read shows the sandbox account is running.
	g.waitFor(g.send("demo", map[string]any{"channel": "whatsapp", "to": "+4915112345678", "text": "hello"}), gateway.StatusRead)
	g.inbound("+4915112345678", "where is my parcel")
	ev := c.next()
	if ev.typ != "message.inbound" || !strings.Contains(ev.data, `"text":"where is my parcel"`) || !strings.Contains(ev.data, `"tenant":"demo"`) {
		t.Fatalf("event %+v", ev)
	}
	if st, in, ok := strings.Cut(ev.id, "-"); !ok || st == "" || in == "0" {
		t.Fatalf("event id %q does not carry the inbound position", ev.id)
	}
}
