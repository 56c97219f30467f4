package delivery_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/delivery"
)

// fakeDNS resolves names from a table; anything else does not resolve.
type fakeDNS map[string]string

func (f fakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ip, ok := f[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	return []netip.Addr{netip.MustParseAddr(ip)}, nil
}

// TestCreateRefusesInternalTargets: at creation, before anything is stored, a URL on an internal
// address, or on a name that resolves to one, is refused with forbidden on the url field.
func TestCreateRefusesInternalTargets(t *testing.T) {
	db := openStore(t)
	r := delivery.NewRegistry(delivery.RegistryConfig{Store: db, Resolver: fakeDNS{
		"metadata.attacker.example": "169.254.169.254",
		"loop.attacker.example":     "127.0.0.1",
		"mapped.attacker.example":   "::ffff:10.0.0.1",
		"crm.example.com":           "93.184.215.14",
	}, AllowPrivate: func(tenant string) bool { return tenant == "trusted" }})
	status := []string{delivery.EventMessageStatus}
	for _, tt := range []struct {
		name, tenant, url string
		private           bool
		code, field       string
	}{
		{"loopback", "acme", "http://127.0.0.1/hook", false, gateway.EForbidden, "url"},
		{"metadata service", "acme", "http://169.254.169.254/latest/meta-data", false, gateway.EForbidden, "url"},
		{"name resolving to the metadata service", "acme", "https://metadata.attacker.example/hook", false, gateway.EForbidden, "url"},
		{"name resolving to loopback", "acme", "https://loop.attacker.example:8443/hook", false, gateway.EForbidden, "url"},
		{"v4-mapped private address", "acme", "https://mapped.attacker.example/hook", false, gateway.EForbidden, "url"},
		{"ipv6 loopback", "acme", "http://[::1]/hook", false, gateway.EForbidden, "url"},
		{"allow_private not permitted", "acme", "http://127.0.0.1/hook", true, gateway.EForbidden, "allow_private"},
		{"does not resolve", "acme", "https://nowhere.example/hook", false, gateway.EInvalidField, "url"},
		{"credentials in the url", "acme", "https://user:pw@crm.example.com/hook", false, gateway.EInvalidField, "url"},
		{"relative", "acme", "/hook", false, gateway.EInvalidField, "url"},
		{"public", "acme", "https://crm.example.com/hook", false, "", ""},
		{"private where permitted", "trusted", "http://127.0.0.1/hook", true, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, err := r.Create(t.Context(), tt.tenant, delivery.NewWebhook{URL: tt.url, Events: status, AllowPrivate: tt.private})
			if gateway.ErrorCode(err) != tt.code && !(tt.code == "" && err == nil) || gateway.ErrorField(err) != tt.field {
				t.Fatalf("err = %v (field %q), want %q on %q", err, gateway.ErrorField(err), tt.code, tt.field)
			}
			if tt.code == "" && (w.Secret == "" || w.ID == "") {
				t.Fatalf("created %+v without id or secret", w)
			}
		})
	}
	if ws, _ := db.ListWebhooks(t.Context(), "acme"); len(ws) != 1 {
		t.Fatalf("only the public endpoint is stored: %+v", ws)
	}
}
