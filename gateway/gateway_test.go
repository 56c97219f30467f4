package gateway_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		channel  gateway.Channel
		to       string
		want     string
		kind     gateway.AddressKind
		wantCode string
	}{
		{gateway.WhatsApp, "+4915112345678", "+4915112345678", gateway.KindPhone, ""},
		{gateway.WhatsApp, " +49 151 1234 5678 ", "+4915112345678", gateway.KindPhone, ""},
		{gateway.WhatsApp, "+1 (415) 555-2671", "+14155552671", gateway.KindPhone, ""},
		{gateway.WhatsApp, "120363025246125486@g.us", "120363025246125486@g.us", gateway.KindGroup, ""},
		{gateway.WhatsApp, "015112345678", "", "", gateway.EInvalidRecipient},
		{gateway.WhatsApp, "+49123", "", "", gateway.EInvalidRecipient},
		{gateway.WhatsApp, "+abc", "", "", gateway.EInvalidRecipient},
		{gateway.WhatsApp, "abc@g.us", "", "", gateway.EInvalidRecipient},
		{gateway.WhatsApp, "", "", "", gateway.EMissingField},
		{gateway.WhatsApp, "teams:chat:19:abc", "", "", gateway.EInvalidRecipient},
		{gateway.Teams, "teams:chat:19:abc@thread.v2", "teams:chat:19:abc@thread.v2", gateway.KindTeamsChat, ""},
		{gateway.Teams, "teams:channel:team-1/19:chan@thread.tacv2", "teams:channel:team-1/19:chan@thread.tacv2", gateway.KindTeamsChannel, ""},
		{gateway.Teams, "teams:user:8b081ef6-4792-4def-b2c9-c363a1bf41d5", "teams:user:8b081ef6-4792-4def-b2c9-c363a1bf41d5", gateway.KindTeamsUser, ""},
		{gateway.Teams, "teams:channel:onlyteam", "", "", gateway.EInvalidRecipient},
		{gateway.Teams, "teams:user:", "", "", gateway.EInvalidRecipient},
		{gateway.Teams, "teams:user:a b", "", "", gateway.EInvalidRecipient},
		{gateway.Teams, "+4915112345678", "", "", gateway.EInvalidRecipient},
		{"sms", "+4915112345678", "", "", gateway.EUnknownChannel},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.channel, tt.to), func(t *testing.T) {
			a, err := gateway.ParseAddress(tt.channel, tt.to)
			if tt.wantCode != "" {
				if got := gateway.ErrorCode(err); got != tt.wantCode {
					t.Fatalf("code = %q (%v), want %q", got, err, tt.wantCode)
				}
				if err != nil && strings.Contains(err.Error(), strings.TrimSpace(tt.to)) && len(tt.to) > 12 {
					t.Errorf("error %q repeats the full identifier", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if a.String() != tt.want || a.Kind != tt.kind {
				t.Errorf("got %q (%s), want %q (%s)", a.String(), a.Kind, tt.want, tt.kind)
			}
		})
	}
}

func TestMaskIdentifier(t *testing.T) {
	tests := []struct{ in, want string }{
		{"+4915112345678", "+49******5678"},
		{"+14155552671", "+14******2671"},
		{"teams:user:8b081ef6-4792-4def-b2c9-c363a1bf41d5", "teams:user:******41d5"},
		{"120363025246125486@g.us", "******g.us"},
		{"abc", "******"},
	}
	for _, tt := range tests {
		if got := gateway.MaskIdentifier(tt.in); got != tt.want {
			t.Errorf("MaskIdentifier(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAdvances(t *testing.T) {
	tests := []struct {
		cur, next gateway.Status
		want      bool
	}{
		{"", gateway.StatusAccepted, true},
		{gateway.StatusAccepted, gateway.StatusQueued, true},
		{gateway.StatusQueued, gateway.StatusSent, true},
		{gateway.StatusSent, gateway.StatusRead, true}, // delivered may never arrive
		{gateway.StatusRead, gateway.StatusDelivered, false},
		{gateway.StatusRead, gateway.StatusRead, false},
		{gateway.StatusRead, gateway.StatusPlayed, true},
		{gateway.StatusQueued, gateway.StatusRejected, true},
		{gateway.StatusSent, gateway.StatusFailed, true},
		{gateway.StatusDelivered, gateway.StatusFailed, false},
		{gateway.StatusFailed, gateway.StatusSent, false},
		{gateway.StatusRejected, gateway.StatusQueued, false},
		{gateway.StatusSent, "bogus", false},
	}
	for _, tt := range tests {
		if got := gateway.Advances(tt.cur, tt.next); got != tt.want {
			t.Errorf("Advances(%q, %q) = %v, want %v", tt.cur, tt.next, got, tt.want)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	cause := errors.New("disk on fire")
	err := fmt.Errorf("storing: %w", gateway.WrapError(gateway.EUnavailable, cause, "store unavailable"))
	if got := gateway.ErrorCode(err); got != gateway.EUnavailable {
		t.Errorf("code = %q", got)
	}
	if got := gateway.ErrorMessage(err); got != "store unavailable" {
		t.Errorf("message = %q", got)
	}
	if !errors.Is(err, cause) {
		t.Error("cause lost")
	}
	if got := gateway.ErrorCode(cause); got != gateway.EInternal {
		t.Errorf("plain error code = %q", got)
	}
	if got := gateway.ErrorMessage(cause); got != "internal error" {
		t.Errorf("plain error leaks %q", got)
	}
	if gateway.ErrorCode(nil) != "" {
		t.Error("nil has a code")
	}
	fe := gateway.FieldErrorf(gateway.EInvalidField, "text", "too long")
	if gateway.ErrorField(fe) != "text" {
		t.Error("field lost")
	}
}

func TestNewMessageIDIsOrderedAndUnique(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for range 1000 {
		id := gateway.NewMessageID()
		if !strings.HasPrefix(id, "msg_") || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		if id[:14] < prev[:min(14, len(prev))] {
			t.Fatalf("id %q sorts before %q", id, prev)
		}
		seen[id], prev = true, id
	}
}
