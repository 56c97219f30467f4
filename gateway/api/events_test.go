package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
)

// fakeEvents replays a fixed list after the cursor, then waits for the client to leave.
type fakeEvents struct {
	tenants chan string
	from    chan api.EventCursor
	list    []api.Event
}

// Position is "now": before every event of the list.
func (f *fakeEvents) Position(context.Context) (api.EventCursor, error) {
	return api.EventCursor{}, nil
}

func (f *fakeEvents) Events(ctx context.Context, tenant string, from api.EventCursor, fn func(api.Event) error) error {
	f.tenants <- tenant
	f.from <- from
	for _, ev := range f.list {
		if ev.Cursor.Status <= from.Status && ev.Cursor.Inbound <= from.Inbound {
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

func statusEvent(seq uint64, ch gateway.Channel, st gateway.Status) api.Event {
	data, _ := json.Marshal(gateway.StatusEvent{MessageID: "msg_1", Tenant: "acme", Channel: ch, Status: st})
	return api.Event{Cursor: api.EventCursor{Status: seq}, Type: api.EventMessageStatus, Channel: ch, Status: st, Data: data}
}

func TestEventsFilterHeartbeatAndResume(t *testing.T) {
	src := &fakeEvents{tenants: make(chan string, 4), from: make(chan api.EventCursor, 4), list: []api.Event{
		statusEvent(1, gateway.WhatsApp, gateway.StatusSent),
		statusEvent(2, gateway.Teams, gateway.StatusSent),
		statusEvent(3, gateway.Teams, gateway.StatusRead),
		{Cursor: api.EventCursor{Status: 3, Inbound: 7}, Type: api.EventMessageInbound, Channel: gateway.Teams, Data: json.RawMessage(`{"id":"msg_2"}`)},
		statusEvent(4, gateway.WhatsApp, gateway.StatusRead),
	}}
	e := newEnv(t, func(c *api.Config, d *api.Deps) {
		d.Events = src
		c.Heartbeat = 10 * time.Millisecond
	})
	tests := []struct {
		name, query, lastID string
		want                []string // event ids
		from                api.EventCursor
	}{
		{"everything", "", "", []string{"1-0", "2-0", "3-0", "3-7", "4-0"}, api.EventCursor{}},
		{"read on teams", "?channel=teams&status=read", "", []string{"3-0"}, api.EventCursor{}},
		{"inbound only", "?type=message.inbound", "", []string{"3-7"}, api.EventCursor{}},
		{"resumed", "?type=message.status", "2-0", []string{"3-0", "4-0"}, api.EventCursor{Status: 2}},
		{"resumed by query", "?last_event_id=3-7", "", []string{"4-0"}, api.EventCursor{Status: 3, Inbound: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hr, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v1/events"+tt.query, nil)
			hr.Header.Set("Authorization", "Bearer "+secretAcme)
			if tt.lastID != "" {
				hr.Header.Set("Last-Event-ID", tt.lastID)
			}
			res, err := e.srv.Client().Do(hr)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("HTTP %d %q", res.StatusCode, res.Header.Get("Content-Type"))
			}
			if tenant := <-src.tenants; tenant != "acme" {
				t.Fatalf("tenant %q", tenant)
			}
			if from := <-src.from; from != tt.from {
				t.Fatalf("from %v, want %v", from, tt.from)
			}
			var ids []string
			sc := bufio.NewScanner(res.Body)
			// Heartbeats keep coming while the stream is idle: one after the expected events ends the read.
			for sc.Scan() {
				line := sc.Text()
				if id, ok := strings.CutPrefix(line, "id: "); ok {
					ids = append(ids, id)
				}
				if line == ": heartbeat" && len(ids) >= len(tt.want) {
					break
				}
			}
			if strings.Join(ids, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("ids %v, want %v", ids, tt.want)
			}
		})
	}
}
