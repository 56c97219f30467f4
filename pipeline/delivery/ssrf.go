package delivery

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// ErrForbiddenTarget is the cause of a refused connection to a private, loopback, link-local or
// otherwise internal address.
var errForbiddenTarget = gateway.Errorf(gateway.EForbidden, "webhook target is an internal address")

// internal reports whether ip is an address a webhook must not reach by default: loopback,
// private (RFC 1918, fc00::/7), link-local (169.254/16 with the cloud metadata service, fe80::/10),
// unspecified, multicast, and the shared address space of carrier-grade NAT (100.64/10).
func internal(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() ||
		netip.MustParsePrefix("100.64.0.0/10").Contains(ip)
}

// guardControl is a net.Dialer Control func: it runs after DNS resolution, on the address about
// to be connected, so a name that resolves (or rebinds) to an internal address is refused too.
func guardControl(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("webhook target %q: %w", address, err)
	}
	if internal(ip) {
		return gateway.WrapError(gateway.EForbidden, errForbiddenTarget, "webhook target %s is an internal address (private, loopback or link-local); allow_private permits it", ip)
	}
	return nil
}

// NewClient returns the HTTP client webhooks are posted with. Unless allowPrivate, every
// connection to an internal address is refused at dial time. It uses no proxy (a proxy would
// connect on our behalf, past the check) and follows no redirect (a 3xx is a failed attempt).
func NewClient(allowPrivate bool, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = guardControl
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
