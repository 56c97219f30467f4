package api

import (
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
)

func TestAddressCacheAgreesWithParseAddressAndStaysBounded(t *testing.T) {
	c := newAddressCache(4)
	tests := []struct {
		raw, want, code string
	}{
		{"+49 151 1234 5678", "+4915112345678", ""},
		{"+49 151 1234 5678", "+4915112345678", ""}, // from the cache
		{"+49123", "", gateway.EInvalidRecipient},
		{"+49123", "", gateway.EInvalidRecipient}, // errors are not cached: same answer again
	}
	for _, tt := range tests {
		a, err := c.parse(gateway.WhatsApp, tt.raw)
		if gateway.ErrorCode(err) != tt.code || (tt.code == "" && a.String() != tt.want) {
			t.Fatalf("parse(%q) = %q, %v", tt.raw, a.String(), err)
		}
	}
	for _, n := range []string{"+4915112345671", "+4915112345672", "+4915112345673", "+4915112345674", "+4915112345675"} {
		if _, err := c.parse(gateway.WhatsApp, n); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.addrs) > 4 || len(c.addrs) != len(c.order) {
		t.Fatalf("cache holds %d (order %d), bound 4", len(c.addrs), len(c.order))
	}
	if a, err := c.parse(gateway.Teams, "+4915112345675"); err == nil {
		t.Fatalf("a phone number parsed as a Teams address from the cache: %v", a)
	}
}
