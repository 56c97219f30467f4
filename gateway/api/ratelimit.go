package api

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// tenantLimits is one token bucket per tenant. Tenants come from authenticated keys only, so
// the map is bounded by the tenants in config.
type tenantLimits struct {
	limit rate.Limit
	burst int

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newTenantLimits(perSecond float64, burst int) *tenantLimits {
	if burst <= 0 {
		burst = int(math.Max(1, math.Ceil(perSecond)))
	}
	return &tenantLimits{limit: rate.Limit(perSecond), burst: burst, m: make(map[string]*rate.Limiter)}
}

// allow takes one token from tenant's bucket, or says how long until one is there.
func (l *tenantLimits) allow(tenant string, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	lim := l.m[tenant]
	if lim == nil {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[tenant] = lim
	}
	l.mu.Unlock()
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return time.Second, false
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// rateLimit applies the tenant's request rate: rate_limited (429) with Retry-After when the
// bucket is empty.
func (s *Server) rateLimit(tenant string) error {
	if s.limits == nil {
		return nil
	}
	wait, ok := s.limits.allow(tenant, s.now())
	if ok {
		return nil
	}
	return &gateway.Error{
		Code:    gateway.ERateLimited,
		Message: "too many requests for this tenant; retry after the time in Retry-After",
		Err:     retryAfter(wait),
	}
}
