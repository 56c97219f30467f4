package delivery

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// DefaultSecretOverlap is how long the replaced secret keeps signing after a rotation, so the
// receiver has time to switch.
const DefaultSecretOverlap = 24 * time.Hour

// Resolver resolves a host name (net.DefaultResolver implements it).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// RegistryConfig configures NewRegistry.
type RegistryConfig struct {
	Store      store.Webhooks
	Dispatcher *Dispatcher // told about every change; nil in tools that only read
	// Configured are the endpoints from the config file: listed and tested, never changed here.
	Configured []Endpoint
	// AllowPrivate says whether a tenant may create endpoints on internal addresses.
	AllowPrivate func(tenant string) bool
	Resolver     Resolver      // default net.DefaultResolver
	Overlap      time.Duration // default DefaultSecretOverlap
	Timeout      time.Duration // of a test event (default DefaultTimeout)
	Now          func() time.Time
}

// Registry is what the API does with webhooks: create, read, rotate, enable, delete, test and
// read the delivery log, scoped to a tenant. Another tenant's endpoint is not found.
type Registry struct {
	cfg RegistryConfig
}

// NewRegistry returns a Registry.
func NewRegistry(cfg RegistryConfig) *Registry {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Overlap <= 0 {
		cfg.Overlap = DefaultSecretOverlap
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AllowPrivate == nil {
		cfg.AllowPrivate = func(string) bool { return false }
	}
	return &Registry{cfg: cfg}
}

// NewWebhook is what a tenant asks for in POST /v1/webhooks.
type NewWebhook struct {
	URL          string
	Events       []string
	AllowPrivate bool
}

// Webhook is an endpoint as the API shows it. Secret is set only in the answer that made it.
type Webhook struct {
	store.Webhook
	Configured bool   // from the config file
	Secret     string // the new whsec_ secret, shown once
}

func (r *Registry) changed() {
	if r.cfg.Dispatcher != nil {
		r.cfg.Dispatcher.Changed()
	}
}

// Create checks and stores a new endpoint with a fresh secret, and starts delivering to it.
func (r *Registry) Create(ctx context.Context, tenant string, nw NewWebhook) (Webhook, error) {
	if len(nw.Events) == 0 {
		return Webhook{}, gateway.FieldErrorf(gateway.EMissingField, "events", "list the event types to receive: %s", strings.Join(Events, ", "))
	}
	for _, ev := range nw.Events {
		if !slices.Contains(Events, ev) {
			return Webhook{}, gateway.FieldErrorf(gateway.EInvalidField, "events", "unknown event type %q: use %s", ev, strings.Join(Events, ", "))
		}
	}
	if nw.AllowPrivate && !r.cfg.AllowPrivate(tenant) {
		return Webhook{}, gateway.FieldErrorf(gateway.EForbidden, "allow_private",
			"this tenant may not create webhooks on internal addresses (config: tenants[].webhooks_allow_private)")
	}
	if err := r.checkTarget(ctx, nw.URL, nw.AllowPrivate); err != nil {
		return Webhook{}, err
	}
	now := r.cfg.Now().UTC()
	secret := NewSecret()
	w := store.Webhook{ID: gateway.NewID("wh"), Tenant: tenant, URL: nw.URL, Events: slices.Compact(slices.Sorted(slices.Values(nw.Events))),
		AllowPrivate: nw.AllowPrivate, Secrets: []store.WebhookSecret{{Value: secret, CreatedAt: now}}, CreatedAt: now}
	if _, err := FromStore(w, now); err != nil {
		return Webhook{}, err
	}
	if err := r.cfg.Store.CreateWebhook(ctx, w); err != nil {
		return Webhook{}, err
	}
	r.changed()
	return Webhook{Webhook: w, Secret: secret}, nil
}

// checkTarget refuses a URL that is not http(s), and one whose host is, or resolves to, an
// internal address unless allowed. The dial-time guard checks again on every connection (DNS
// can change); this check gives the tenant a clear answer at once.
func (r *Registry) checkTarget(ctx context.Context, raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || len(raw) > 2048 {
		return gateway.FieldErrorf(gateway.EInvalidField, "url", "want an absolute http(s) URL without credentials, e.g. https://crm.example.com/hooks/switchboard")
	}
	if allowPrivate {
		return nil
	}
	host := u.Hostname()
	addrs := []netip.Addr{}
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, ip)
	} else {
		if addrs, err = r.cfg.Resolver.LookupNetIP(ctx, "ip", host); err != nil || len(addrs) == 0 {
			return gateway.FieldErrorf(gateway.EInvalidField, "url", "the host %s does not resolve", host)
		}
	}
	for _, ip := range addrs {
		if internal(ip) {
			return gateway.FieldErrorf(gateway.EForbidden, "url",
				"webhook target %s is (or resolves to) %s, an internal address (private, loopback or link-local): refused", host, ip.Unmap())
		}
	}
	return nil
}

// List returns the tenant's endpoints: configured ones first, then the created ones.
func (r *Registry) List(ctx context.Context, tenant string) ([]Webhook, error) {
	var out []Webhook
	for _, e := range r.cfg.Configured {
		if e.Tenant == tenant {
			out = append(out, configured(e))
		}
	}
	ws, err := r.cfg.Store.ListWebhooks(ctx, tenant)
	if err != nil {
		return nil, err
	}
	for _, w := range ws {
		out = append(out, Webhook{Webhook: w})
	}
	return out, nil
}

func configured(e Endpoint) Webhook {
	return Webhook{Webhook: store.Webhook{ID: e.ID, Tenant: e.Tenant, URL: e.URL, Events: e.Events, AllowPrivate: e.AllowPrivate}, Configured: true}
}

// Get returns one of the tenant's endpoints.
func (r *Registry) Get(ctx context.Context, tenant, id string) (Webhook, error) {
	for _, e := range r.cfg.Configured {
		if e.Tenant == tenant && e.ID == id {
			return configured(e), nil
		}
	}
	w, err := r.cfg.Store.Webhook(ctx, tenant, id)
	if err != nil {
		return Webhook{}, err
	}
	return Webhook{Webhook: w}, nil
}

// stored returns a created endpoint; a configured one is a conflict (change it in the file).
func (r *Registry) stored(ctx context.Context, tenant, id string) (store.Webhook, error) {
	w, err := r.Get(ctx, tenant, id)
	if err != nil {
		return store.Webhook{}, err
	}
	if w.Configured {
		return store.Webhook{}, gateway.Errorf(gateway.EConflict, "webhook %s is configured in the config file: change it there", id)
	}
	return w.Webhook, nil
}

// Delete removes a created endpoint and stops delivering to it.
func (r *Registry) Delete(ctx context.Context, tenant, id string) error {
	if _, err := r.stored(ctx, tenant, id); err != nil {
		return err
	}
	if err := r.cfg.Store.DeleteWebhook(ctx, tenant, id); err != nil {
		return err
	}
	r.changed()
	return nil
}

// Rotate gives a created endpoint a new secret; the current one signs beside it for Overlap.
func (r *Registry) Rotate(ctx context.Context, tenant, id string) (Webhook, error) {
	if _, err := r.stored(ctx, tenant, id); err != nil {
		return Webhook{}, err
	}
	now := r.cfg.Now().UTC()
	secret := NewSecret()
	w, err := r.cfg.Store.RotateWebhookSecret(ctx, tenant, id, secret, now, now.Add(r.cfg.Overlap))
	if err != nil {
		return Webhook{}, err
	}
	r.changed()
	return Webhook{Webhook: w, Secret: secret}, nil
}

// Enable resumes a disabled endpoint where it stopped.
func (r *Registry) Enable(ctx context.Context, tenant, id string) (Webhook, error) {
	if _, err := r.stored(ctx, tenant, id); err != nil {
		return Webhook{}, err
	}
	if err := r.cfg.Store.SetWebhookDisabled(ctx, tenant, id, time.Time{}, ""); err != nil {
		return Webhook{}, err
	}
	r.changed()
	return r.Get(ctx, tenant, id)
}

// Deliveries returns a page of an endpoint's delivery log, newest first.
func (r *Registry) Deliveries(ctx context.Context, tenant, id, cursor string) ([]store.WebhookAttempt, string, error) {
	if _, err := r.Get(ctx, tenant, id); err != nil {
		return nil, "", err
	}
	return r.cfg.Store.WebhookAttempts(ctx, tenant, id, cursor, 100)
}

// TestResult is the answer of an endpoint to a test event.
type TestResult struct {
	StatusCode int
	Latency    time.Duration
	Error      string // error class, "" on success
	Detail     string // what went wrong, for the person testing
}

// Test posts a signed webhook.test event to an endpoint and reports its answer.
func (r *Registry) Test(ctx context.Context, tenant, id string) (TestResult, error) {
	w, err := r.Get(ctx, tenant, id)
	if err != nil {
		return TestResult{}, err
	}
	var e Endpoint
	if w.Configured {
		for _, c := range r.cfg.Configured {
			if c.Tenant == tenant && c.ID == id {
				e = c
			}
		}
	} else if e, err = FromStore(w.Webhook, r.cfg.Now()); err != nil {
		return TestResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	now := r.cfg.Now()
	status, err := Post(ctx, NewClient(e.AllowPrivate, r.cfg.Timeout), e, gateway.NewID("evt_test"), now, TestPayload(now))
	res := TestResult{StatusCode: status, Latency: r.cfg.Now().Sub(now), Error: ErrorClass(status, err)}
	if err != nil {
		res.Detail = gateway.ErrorMessage(err)
		if gateway.ErrorCode(err) == gateway.EInternal {
			res.Detail = err.Error() // a transport error: the receiver's problem, safe to show its owner
		}
	}
	return res, nil
}

// Replay re-delivers the endpoint's events stored since `since` (Dispatcher.Replay), in the
// background.
func (r *Registry) Replay(ctx context.Context, tenant, id string, since time.Time) error {
	if _, err := r.Get(ctx, tenant, id); err != nil {
		return err
	}
	if since.After(r.cfg.Now()) {
		return gateway.FieldErrorf(gateway.EInvalidField, "since", "since is in the future")
	}
	if r.cfg.Dispatcher == nil {
		return gateway.Errorf(gateway.EUnavailable, "webhook delivery is not running")
	}
	return r.cfg.Dispatcher.Replay(tenant, id, since, nil)
}
