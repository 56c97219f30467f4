package api_test

import (
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
)

// TestEventCursorIDs: ids name the three streams' positions, keep the two-part form while no
// tenant event was seen, and anything else is a clear invalid_field.
func TestEventCursorIDs(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want api.EventCursor
		text string
	}{
		{"3-7", api.EventCursor{Status: 3, Inbound: 7}, "3-7"},
		{"3-7-0", api.EventCursor{Status: 3, Inbound: 7}, "3-7"},
		{"3-7-2", api.EventCursor{Status: 3, Inbound: 7, Events: 2}, "3-7-2"},
		{" 0-0-9 ", api.EventCursor{Events: 9}, "0-0-9"},
	} {
		got, err := api.ParseEventCursor(tt.id)
		if err != nil || got != tt.want || got.String() != tt.text {
			t.Errorf("ParseEventCursor(%q) = %+v %v (%s), want %+v (%s)", tt.id, got, err, got.String(), tt.want, tt.text)
		}
	}
	for _, bad := range []string{"", "12", "1-2-3-4", "a-b", "1--2", "1-2-", "-1-2"} {
		if _, err := api.ParseEventCursor(bad); gateway.ErrorCode(err) != gateway.EInvalidField || gateway.ErrorField(err) != "Last-Event-ID" {
			t.Errorf("ParseEventCursor(%q): %v", bad, err)
		}
	}
}
