// Package api is Switchboard's HTTP API (DESIGN.md §3.2): sends, message status, health and
// readiness, and in dev mode the sandbox's inbound injection.
//
// The package defines the small interfaces it needs (Intake, MessageReader, KeyFinder,
// Directory, SandboxInjector); gateway/server wires the real store, bus and config behind them.
// Every route goes through one wrapper (Server.handle) that bounds it with a timeout,
// authenticates the API key, applies the tenant's rate limit, turns a returned error into the
// one error body (error.go) and writes one access-log line.
package api

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// Intake accepts a send: it runs accept-time policy (consent, opt-out), stores the message
// durably with its first history event and publishes it for routing.
//
// When the tenant already has a message with nm.Message.IdempotencyKey, Intake stores nothing
// and returns that message, the request hash it was created with, and created=false; the API
// then answers a replay or an idempotency conflict. A policy refusal is a *gateway.Error with a
// policy code (recipient_opted_out, consent_required, outside_window, …) and is not remembered
// under the idempotency key.
type Intake interface {
	Accept(ctx context.Context, nm store.NewMessage) (msg *gateway.Message, existingHash string, created bool, err error)
}

// MessageReader is the read side of store.Messages the API needs. Every call is scoped to a
// tenant; another tenant's message is gateway.ENotFound.
type MessageReader interface {
	Message(ctx context.Context, tenant, id string, withContent bool) (*gateway.Message, error)
	ListMessages(ctx context.Context, tenant string, f store.MessageFilter) (msgs []*gateway.Message, nextCursor string, err error)
	History(ctx context.Context, tenant, id string) ([]gateway.StatusEvent, error)
}

// KeyFinder resolves an API key secret (sbk_…) to its key; gateway.ENotFound when no key has
// that secret. store.Tenants implements it.
type KeyFinder interface {
	APIKeyBySecret(ctx context.Context, secret string) (gateway.APIKey, error)
}

// Directory says which channels and accounts a tenant has (from config).
type Directory interface {
	HasAccount(tenant string, ch gateway.Channel, account string) bool
	// DefaultAccount is the account used when a send omits `from`; false when the tenant has none
	// on that channel.
	DefaultAccount(tenant string, ch gateway.Channel) (string, bool)
}

// SandboxInjector makes a sandbox account receive an inbound message, as if the person `from`
// had written `text`. Dev mode only: a nil injector leaves the route unregistered.
type SandboxInjector interface {
	Inject(ctx context.Context, tenant string, ch gateway.Channel, account, from, text string) (channelMessageID string, err error)
}

// ReadyCheck is one dependency /readyz asks about (store, bus, adapters …). Check must honour
// ctx; its error is logged, never shown to the caller.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
	// State, when set, names the state behind the check (an account's "unlinked"), shown beside it.
	State func() string
}

// Config tunes the server. Zero values take the defaults noted.
type Config struct {
	MaxBody       int64         // largest request body in bytes; default 1 MiB
	MaxMediaBytes int64         // largest uploaded file (POST /v1/media); default 100 MiB
	MediaTTL      time.Duration // how long an uploaded file is kept; default 7 days
	Timeout       time.Duration // per-request deadline (context); default 10s
	RatePerSecond float64       // per-tenant request rate; 0 = unlimited
	Burst         int           // per-tenant burst; default max(1, RatePerSecond)
	KeyCacheTTL   time.Duration // how long a resolved API key is cached; default 30s, negative disables
	Log           zerolog.Logger
	Now           func() time.Time // default time.Now; used for timestamps, rate limits and the key cache
	Heartbeat     time.Duration    // comment line on an idle GET /v1/events stream; default 15s
}

// Default limits.
const (
	DefaultMaxBody     = 1 << 20
	DefaultTimeout     = 10 * time.Second
	DefaultKeyCacheTTL = 30 * time.Second
)

// Deps are the collaborators of the server. Intake, Messages, Keys and Directory are required;
// Sandbox and Ready are optional.
type Deps struct {
	Intake    Intake
	Messages  MessageReader
	Keys      KeyFinder
	Directory Directory
	Sandbox   SandboxInjector // nil: no /v1/sandbox route (production)
	Consent   ConsentRegistry // nil: no /v1/consent routes
	Privacy   Privacy         // nil: no /v1/erasures, /v1/exports, /v1/restrictions routes
	Media     MediaFiles      // nil: no /v1/media routes, and sends take media by URL only
	Audit     Auditor         // nil: consent changes by API are not in the audit log
	Ready     []ReadyCheck
	// Channel maps patterns ("POST /v1/channels/teams/notifications") to channel webhooks that
	// authenticate themselves (Graph's clientState): no API key, no tenant rate limit, but the same
	// access log, deadline and panic recovery as every route.
	Channel map[string]http.Handler
	// Events, when set, serves GET /v1/events (Server-Sent Events, events.go).
	Events EventSource
	// Metrics, when set, serves GET /metrics (Prometheus exposition, no API key).
	Metrics http.Handler
	// Hooks, when set, serves POST /v1/hooks/{name} (automation hook triggers, hooks.go).
	Hooks Hooks
	// Webhooks, when set, serves /v1/webhooks (webhooks.go).
	Webhooks WebhookRegistry
	// Accounts, when set, serves GET /v1/accounts; Linker POST /v1/accounts/{channel}/{account}/link.
	Accounts Accounts
	Linker   Linker
}

// Server is the HTTP API. It implements http.Handler; the caller owns the http.Server (listen
// address, TLS, ReadHeaderTimeout, graceful Shutdown).
type Server struct {
	cfg      Config
	deps     Deps
	mux      *http.ServeMux
	keys     *keyCache
	limits   *tenantLimits // nil when unlimited
	addrs    *addressCache
	log      zerolog.Logger
	now      func() time.Time
	patterns []string // registered patterns, in order (Routes)
	links    sync.Map // tenant + "\x00" + account → struct{}: the links running now
}

// New returns a Server with its routes registered. It panics when a required dependency is
// missing: that is a wiring mistake, caught at start-up.
func New(cfg Config, deps Deps) *Server {
	if deps.Intake == nil || deps.Messages == nil || deps.Keys == nil || deps.Directory == nil {
		panic("api.New: Intake, Messages, Keys and Directory are required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxMediaBytes <= 0 {
		cfg.MaxMediaBytes = DefaultMaxMediaBytes
	}
	if cfg.MediaTTL <= 0 {
		cfg.MediaTTL = DefaultMediaTTL
	}
	if cfg.KeyCacheTTL == 0 {
		cfg.KeyCacheTTL = DefaultKeyCacheTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:   cfg,
		deps:  deps,
		mux:   http.NewServeMux(),
		keys:  newKeyCache(cfg.KeyCacheTTL, maxCachedKeys),
		addrs: newAddressCache(maxCachedAddresses),
		log:   cfg.Log,
		now:   cfg.Now,
	}
	if cfg.RatePerSecond > 0 {
		s.limits = newTenantLimits(cfg.RatePerSecond, cfg.Burst)
	}
	s.routes()
	return s
}

// routes registers every route. New endpoints (consent, erasures, exports, events, channel
// webhooks) are added here, each with its handler in its own file.
func (s *Server) routes() {
	s.handle("POST /v1/messages", 0, s.createMessage)
	s.handle("GET /v1/messages/{id}", 0, s.getMessage, "include")
	s.handle("GET /v1/messages", 0, s.listMessages, "status", "channel", "direction", "since", "limit", "cursor")
	if s.deps.Sandbox != nil {
		s.handle("POST /v1/sandbox/{channel}/{account}/inbound", 0, s.sandboxInbound)
	}
	if s.deps.Consent != nil {
		s.handle("PUT /v1/consent/{channel}/{subject}", 0, s.putConsent)
		s.handle("GET /v1/consent/{channel}/{subject}", 0, s.getConsent)
		s.handle("DELETE /v1/consent/{channel}/{subject}", 0, s.deleteConsent, "category")
		s.handle("POST /v1/consent:import", 0, s.importConsent, "channel")
	}
	if s.deps.Privacy != nil {
		s.privacyRoutes()
	}
	if s.deps.Media != nil {
		s.mediaRoutes()
	}
	for pattern, h := range s.deps.Channel {
		s.handle(pattern, public, func(w http.ResponseWriter, r *http.Request, _ gateway.APIKey) error {
			h.ServeHTTP(w, r)
			return nil
		})
	}
	if s.deps.Events != nil {
		s.handle("GET /v1/events", streaming|repeatable, s.streamEvents, "type", "channel", "status", "last_event_id")
	}
	if s.deps.Hooks != nil {
		s.handle("POST /v1/hooks/{name}", 0, s.callHook)
	}
	if s.deps.Webhooks != nil {
		s.webhookRoutes()
	}
	if m := s.deps.Metrics; m != nil {
		s.handle("GET /metrics", public|quiet, func(w http.ResponseWriter, r *http.Request, _ gateway.APIKey) error {
			m.ServeHTTP(w, r)
			return nil
		})
	}
	if s.deps.Accounts != nil {
		s.handle("GET /v1/accounts", 0, s.listAccounts)
	}
	if s.deps.Linker != nil {
		s.handle("POST /v1/accounts/{channel}/{account}/link", streaming, s.linkAccount)
	}
	s.handle("GET /v1/openapi.json", public, s.openAPI)
	s.handle("GET /healthz", public|quiet, s.healthz)
	s.handle("GET /readyz", public|quiet, s.readyz)
	// Everything else: a JSON 404, or 405 with Allow when another method would match.
	s.handle("/", public, s.unmatched)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// handlerFunc is what a route implements. key is the caller's API key (zero on public routes).
// A returned error is written by Server.handle as the one error body; a handler that has
// already written its answer returns nil.
type handlerFunc func(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error

// routeOpts change what Server.handle does around a handler.
type routeOpts uint8

const (
	// public routes need no API key: probes, and later channel webhooks (Graph notifications),
	// which authenticate themselves.
	public routeOpts = 1 << iota
	// streaming routes get no handler deadline: Server-Sent Events bound themselves (heartbeats,
	// client disconnect via r.Context()).
	streaming
	// quiet routes log their access line at debug level (probes every few seconds).
	quiet
	// repeatable routes take a query parameter more than once (?type=a&type=b).
	repeatable
)

// handle registers pattern with the middleware every route shares, in this order: access log
// and panic recovery, deadline, authentication, tenant rate limit, query check, handler, error
// body. params are the query parameters the route takes: an authenticated route refuses any
// other, as a body refuses unknown fields, so a misspelt filter or a typo on a DELETE is an error,
// not a silent no-op.
func (s *Server) handle(pattern string, opts routeOpts, h handlerFunc, params ...string) {
	route := pattern
	if pattern == "/" {
		route = "unmatched"
	} else {
		s.patterns = append(s.patterns, pattern)
	}
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s.serve(route, opts, params, h, w, r)
	})
}

func (s *Server) serve(route string, opts routeOpts, params []string, h handlerFunc, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &responseWriter{ResponseWriter: w, route: route}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error().Str("route", route).Str("panic", panicText(v)).Bytes("stack", stack()).Msg("handler panicked")
			if !rw.wrote {
				s.writeError(rw, r, gateway.Errorf(gateway.EInternal, "internal error"))
			}
		}
		s.logAccess(rw, r, opts, time.Since(start))
	}()

	if opts&streaming == 0 {
		deadline := time.Now().Add(s.cfg.Timeout)
		ctx, cancel := context.WithDeadline(r.Context(), deadline)
		defer cancel()
		r = r.WithContext(ctx)
		// The context does not interrupt a blocked body read: bound a slow client too.
		_ = http.NewResponseController(w).SetReadDeadline(deadline)
	}

	var key gateway.APIKey
	if opts&public == 0 {
		var err error
		if key, err = s.authenticate(r); err != nil {
			s.writeError(rw, r, err)
			return
		}
		rw.tenant, rw.keyID = key.Tenant, key.ID
		if err := s.rateLimit(key.Tenant); err != nil {
			s.writeError(rw, r, err)
			return
		}
		if err := checkQuery(r, opts&repeatable != 0, params); err != nil {
			s.writeError(rw, r, err)
			return
		}
	}
	if err := h(rw, r, key); err != nil {
		s.writeError(rw, r, err)
	}
}

func (s *Server) logAccess(rw *responseWriter, r *http.Request, opts routeOpts, latency time.Duration) {
	ev := s.log.Info()
	switch {
	case opts&quiet != 0 && rw.status < 500:
		ev = s.log.Debug()
	case rw.status >= 500:
		ev = s.log.Warn()
	}
	if ev == nil {
		return
	}
	status := rw.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
	}
	ev = ev.Str("event", "access").Str("method", r.Method).Str("route", rw.route).Int("status", status).
		Float64("latency_ms", float64(latency.Microseconds())/1000).Int64("bytes", rw.bytes)
	if rw.tenant != "" {
		ev = ev.Str("tenant", rw.tenant).Str("key_id", rw.keyID)
	}
	if rw.code != "" {
		ev = ev.Str("error_code", rw.code)
	}
	ev.Send()
}

// responseWriter records what was written, for the access log and so an error after the
// header went out is not written twice. Unwrap lets http.ResponseController reach the
// connection (Flush for SSE, deadlines).
type responseWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool

	route, tenant, keyID string
	code                 string // error code, when the answer was an error
}

func (w *responseWriter) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.status, w.wrote = status, true
	w.ResponseWriter.WriteHeader(status)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// unmatched answers requests no route took: 405 with Allow when the path exists under another
// method, else 404. Both as JSON error bodies.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request, _ gateway.APIKey) error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" && p != "/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		if slices.Contains(allow, http.MethodGet) {
			allow = append(allow, http.MethodHead)
		}
		w.Header()["Allow"] = []string{strings.Join(allow, ", ")}
		return gateway.Errorf(codeMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path)
	}
	return gateway.Errorf(gateway.ENotFound, "no route for %s %s", r.Method, r.URL.Path)
}
