package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Event types of GET /v1/events (and of webhooks).
const (
	EventMessageStatus   = "message.status"
	EventMessageInbound  = "message.inbound"
	EventConsentChanged  = gateway.EventConsentChanged
	EventAccountState    = gateway.EventAccountState
	EventWebhookDisabled = gateway.EventWebhookDisabled
)

// eventTypes are the types a client can filter on.
var eventTypes = []string{EventMessageStatus, EventMessageInbound, EventConsentChanged, EventAccountState, EventWebhookDisabled}

// DefaultHeartbeat is how often an idle event stream gets a comment line, so proxies keep it open
// and a dead client is noticed.
const DefaultHeartbeat = 15 * time.Second

// EventCursor is a position in a tenant's event streams: the last STATUS, INBOUND and EVENTS
// stream sequences a client has seen. It is the SSE event id ("<status>-<inbound>-<events>"), so
// a client that reconnects with Last-Event-ID resumes right after the last event it received.
type EventCursor struct {
	Status, Inbound, Events uint64
}

// String is the cursor as an event id. While the EVENTS part is 0 it is left out, so the ids
// keep the two-part form they had before that stream existed.
func (c EventCursor) String() string {
	id := strconv.FormatUint(c.Status, 10) + "-" + strconv.FormatUint(c.Inbound, 10)
	if c.Events > 0 {
		id += "-" + strconv.FormatUint(c.Events, 10)
	}
	return id
}

// ParseEventCursor parses an event id written by String: a two-part id has seen no tenant event
// yet, and resumes EVENTS from the start of what it keeps.
func ParseEventCursor(s string) (EventCursor, error) {
	parts := strings.Split(strings.TrimSpace(s), "-")
	bad := gateway.FieldErrorf(gateway.EInvalidField, "Last-Event-ID",
		"not an event id of this stream (want <status seq>-<inbound seq>-<events seq>)")
	if len(parts) != 2 && len(parts) != 3 {
		return EventCursor{}, bad
	}
	var seqs [3]uint64
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return EventCursor{}, bad
		}
		seqs[i] = n
	}
	return EventCursor{Status: seqs[0], Inbound: seqs[1], Events: seqs[2]}, nil
}

// Event is one event of a tenant's stream.
type Event struct {
	Cursor  EventCursor // the position after this event
	Type    string      // EventMessageStatus, EventMessageInbound, EventConsentChanged …
	Channel gateway.Channel
	Status  gateway.Status // message.status only
	Data    json.RawMessage
}

// EventSource streams a tenant's events in order.
type EventSource interface {
	// Position is the current end of the streams: Events from it sees only what comes next.
	Position(ctx context.Context) (EventCursor, error)
	// Events calls fn with each event of tenant after the position from, in stream order, until
	// ctx is done (then it returns nil) or fn returns an error (returned).
	Events(ctx context.Context, tenant string, from EventCursor, fn func(Event) error) error
}

// eventFilter is the query of GET /v1/events: type, channel and status, each a comma list.
type eventFilter struct {
	types    []string
	channels []gateway.Channel
	statuses []gateway.Status
}

func parseEventFilter(q url.Values) (eventFilter, error) {
	var f eventFilter
	list := func(name string) []string {
		var out []string
		for _, v := range q[name] {
			for p := range strings.SplitSeq(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	for _, t := range list("type") {
		if !slices.Contains(eventTypes, t) {
			return f, gateway.FieldErrorf(gateway.EInvalidField, "type", "unknown event type %q (%s)", t, strings.Join(eventTypes, ", "))
		}
		f.types = append(f.types, t)
	}
	for _, c := range list("channel") {
		ch := gateway.Channel(c)
		if !slices.Contains(gateway.Channels, ch) {
			return f, gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q", c)
		}
		f.channels = append(f.channels, ch)
	}
	for _, s := range list("status") {
		f.statuses = append(f.statuses, gateway.Status(s))
	}
	return f, nil
}

func (f eventFilter) match(ev Event) bool {
	if len(f.types) > 0 && !slices.Contains(f.types, ev.Type) {
		return false
	}
	if len(f.channels) > 0 && !slices.Contains(f.channels, ev.Channel) {
		return false
	}
	if len(f.statuses) > 0 && (ev.Type != EventMessageStatus || !slices.Contains(f.statuses, ev.Status)) {
		return false
	}
	return true
}

// streamEvents serves GET /v1/events as Server-Sent Events: the tenant's status and inbound
// events, filtered by the query, resumed after Last-Event-ID (header, or the last_event_id query
// parameter for clients that cannot set headers), with a comment line as heartbeat.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	filter, err := parseEventFilter(r.URL.Query())
	if err != nil {
		return err
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("last_event_id")
	}
	var from EventCursor
	if last != "" {
		if from, err = ParseEventCursor(last); err != nil {
			return err
		}
	} else if from, err = s.deps.Events.Position(r.Context()); err != nil {
		// Fixed before the answer starts: an event after the 200 is never missed.
		return err
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return nil
	}
	if err := rc.Flush(); err != nil {
		return nil
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events := make(chan Event)
	errc := make(chan error, 1)
	go func() {
		errc <- s.deps.Events.Events(ctx, key.Tenant, from, func(ev Event) error {
			if !filter.match(ev) {
				return nil
			}
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	tick := time.NewTicker(s.heartbeat())
	defer tick.Stop()
	for {
		var werr error
		select {
		case ev := <-events:
			_, werr = fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", ev.Cursor, ev.Type, ev.Data)
		case <-tick.C:
			_, werr = fmt.Fprint(w, ": heartbeat\n\n")
		case err := <-errc:
			if err != nil && !errors.Is(err, context.Canceled) {
				s.log.Warn().Err(err).Str("tenant", key.Tenant).Msg("event stream ended")
			}
			return nil
		}
		if werr == nil {
			werr = rc.Flush()
		}
		if werr != nil { // the client went away
			cancel()
			<-errc
			return nil
		}
	}
}
