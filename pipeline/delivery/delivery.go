// Package delivery pushes a tenant's events to its webhook endpoints, signed per the Standard
// Webhooks specification (sign.go), durably: every endpoint has its own durable consumers on the
// STATUS and INBOUND streams, taking one event at a time, so an endpoint sees the events of a
// message in order and a failing endpoint holds up only itself. A failed attempt is retried with
// exponential backoff and jitter until it succeeds or the event is older than MaxAge; a process
// that dies between attempts leaves the event unacknowledged, and the next process retries it.
// Targets on internal addresses are refused at dial time unless allowed (ssrf.go).
//
// Endpoints come from the config file or from the API (registry.go, kept in the store with their
// secrets sealed); the dispatcher follows the store without a restart, logs every attempt,
// disables a stored endpoint after DisableAfter events given up in a row (webhook.disabled), and
// replays what the streams kept since a time with the original webhook-ids (replay.go).
package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

// Event types an endpoint can subscribe to.
const (
	EventMessageStatus   = "message.status"
	EventMessageInbound  = "message.inbound"
	EventConsentChanged  = gateway.EventConsentChanged
	EventAccountState    = gateway.EventAccountState
	EventWebhookDisabled = gateway.EventWebhookDisabled
)

// Events are the event types an endpoint can subscribe to.
var Events = []string{EventMessageStatus, EventMessageInbound, EventConsentChanged, EventAccountState, EventWebhookDisabled}

// Defaults for the zero values of Config.
const (
	DefaultMaxAge    = 72 * time.Hour
	DefaultBaseDelay = 5 * time.Second
	DefaultMaxDelay  = time.Hour
	DefaultTimeout   = 15 * time.Second
	// DefaultRefresh is how often the stored endpoints are re-read, for changes made through
	// another replica (this one syncs at once on Changed).
	DefaultRefresh = 30 * time.Second
	// DefaultDisableAfter consecutive events given up disable a stored endpoint. The first one
	// given up means every attempt failed for the whole retry period (MaxAge, 72h); the events
	// queued behind it are by then older than that too, so the endpoint is disabled right after,
	// instead of taking one attempt per backlogged event for days.
	DefaultDisableAfter = 3
	// DefaultLogRetention is how long delivery log lines are kept (at least MaxAge).
	DefaultLogRetention = 7 * 24 * time.Hour
)

// Reasons an endpoint is disabled.
const DisabledPersistentFailure = "persistent_failure"

// Endpoint is one webhook target of a tenant.
type Endpoint struct {
	ID     string // [a-z0-9_-]; names the endpoint's consumers
	Tenant string
	URL    string
	// Events the endpoint receives; empty means all.
	Events []string
	// Secrets sign every request; two during a rotation (both signatures are sent).
	Secrets []Secret
	// AllowPrivate lets the endpoint be on a private, loopback or link-local address.
	AllowPrivate bool
}

func (e Endpoint) key() string { return e.Tenant + "/" + e.ID }

func (e Endpoint) wants(event string) bool {
	return len(e.Events) == 0 || slices.Contains(e.Events, event)
}

func (e Endpoint) validate() error {
	if err := bus.ValidateToken("webhooks.id", e.ID); err != nil {
		return err
	}
	if err := bus.ValidateToken("tenant", e.Tenant); err != nil {
		return err
	}
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return gateway.FieldErrorf(gateway.EInvalidField, "webhooks.url", "webhook %s: want an http(s) URL", e.ID)
	}
	if len(e.Secrets) == 0 || len(e.Secrets) > 2 {
		return gateway.FieldErrorf(gateway.EInvalidField, "webhooks.secrets", "webhook %s: one or two secrets (two while rotating)", e.ID)
	}
	for _, ev := range e.Events {
		if !slices.Contains(Events, ev) {
			return gateway.FieldErrorf(gateway.EInvalidField, "webhooks.events", "webhook %s: unknown event %q (%s)", e.ID, ev, strings.Join(Events, ", "))
		}
	}
	return nil
}

// Clock is the time the retries wait on; tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Metrics counts attempts (gateway/metrics implements it); outcome is "ok", "failed" or "gave_up".
type Metrics interface {
	WebhookAttempt(tenant, endpoint, outcome string)
}

// Consumer is the part of the bus the dispatcher needs: durable consumers, and a replay of what
// a stream stored since a time.
type Consumer interface {
	Consume(ctx context.Context, cfg bus.ConsumerConfig, h bus.Handler) error
	FollowSince(ctx context.Context, subjectFilter string, since time.Time, fn func(*bus.Msg) error) error
}

// Config configures New.
type Config struct {
	Bus       Consumer
	Sealer    pipeline.Sealer // opens inbound envelopes
	Endpoints []Endpoint
	Clock     Clock         // default: real time
	MaxAge    time.Duration // an event older than this is given up (default 72h)
	BaseDelay time.Duration // first retry delay (default 5s), doubling per attempt
	MaxDelay  time.Duration // retry delay ceiling (default 1h)
	Timeout   time.Duration // per attempt (default 15s)
	AckWait   time.Duration // consumers' ack wait; progress is signalled well within it (default 30s)
	Metrics   Metrics
	Log       zerolog.Logger
	// Jitter returns a number in [0,1) (default math/rand/v2): a retry waits between half and all
	// of its exponential delay.
	Jitter func() float64
	// Client posts the requests; default NewClient per endpoint (SSRF guard).
	Client func(e Endpoint) *http.Client
	// Store, when set, holds the endpoints created through the API (run beside the configured
	// ones) and the delivery log.
	Store Store
	// Refresh is how often the stored endpoints are re-read (default 30s).
	Refresh time.Duration
	// DisableAfter is the number of consecutive events given up after which a stored endpoint
	// is disabled (default 3).
	DisableAfter int
	// LogRetention bounds the delivery log (default 7 days, at least MaxAge).
	LogRetention time.Duration
	// Publisher, when set, publishes webhook.disabled when an endpoint is disabled.
	Publisher pipeline.Publisher
}

// Store is the part of store.Webhooks the dispatcher needs.
type Store interface {
	ListWebhooks(ctx context.Context, tenant string) ([]store.Webhook, error)
	SetWebhookDisabled(ctx context.Context, tenant, id string, at time.Time, reason string) error
	RecordWebhookAttempt(ctx context.Context, a store.WebhookAttempt) error
	PurgeWebhookAttempts(ctx context.Context, before time.Time, limit int) (int64, error)
}

// ConsumerDeleter is implemented by a bus that can delete a durable consumer; the dispatcher
// uses it to leave nothing behind for a deleted endpoint.
type ConsumerDeleter interface {
	DeleteConsumer(ctx context.Context, stream, durable string) error
}

// FromStore is the Endpoint of a stored webhook, signing with the secrets active at now.
func FromStore(w store.Webhook, now time.Time) (Endpoint, error) {
	e := Endpoint{ID: w.ID, Tenant: w.Tenant, URL: w.URL, Events: w.Events, AllowPrivate: w.AllowPrivate}
	for _, s := range w.Active(now) {
		k, err := ParseSecret(s.Value)
		if err != nil {
			return e, err
		}
		e.Secrets = append(e.Secrets, k)
	}
	return e, e.validate()
}

// Dispatcher runs the endpoints' consumers: the configured ones for as long as it runs, and the
// API-created ones (Config.Store) as they come, change and go.
type Dispatcher struct {
	cfg     Config
	changed chan struct{} // Changed pokes the sync loop

	mu        sync.Mutex
	running   map[string]*endpointRun // by tenant/endpoint id
	replaying map[string]bool         // endpoints with a replay under way
	runCtx    context.Context         // set while Run runs: replays run under it
	wg        sync.WaitGroup          // every consumer and replay goroutine
	runErr    error                   // the first consumer failure
}

// endpointRun is one endpoint's running consumers.
type endpointRun struct {
	fromStore bool
	stop      context.CancelFunc
	done      chan struct{} // closed when its consumers have returned

	mu      sync.Mutex
	ep      Endpoint // the secrets change in place on a rotation
	client  *http.Client
	givenUp int  // consecutive events given up (auto-disable)
	deleted bool // removed, not just disabled: drop its durable consumers once stopped
}

func (r *endpointRun) current() (Endpoint, *http.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ep, r.client
}

// New checks the endpoints and returns a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Bus == nil || cfg.Sealer == nil {
		return nil, errors.New("delivery: Bus and Sealer are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = DefaultBaseDelay
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = DefaultMaxDelay
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = bus.DefaultAckWait
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.DisableAfter <= 0 {
		cfg.DisableAfter = DefaultDisableAfter
	}
	if cfg.LogRetention <= 0 {
		cfg.LogRetention = max(DefaultLogRetention, cfg.MaxAge)
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.Client == nil {
		cfg.Client = func(e Endpoint) *http.Client { return NewClient(e.AllowPrivate, cfg.Timeout) }
	}
	d := &Dispatcher{cfg: cfg, changed: make(chan struct{}, 1), running: map[string]*endpointRun{}, replaying: map[string]bool{}}
	seen := map[string]bool{}
	for _, e := range cfg.Endpoints {
		if err := e.validate(); err != nil {
			return nil, err
		}
		if seen[e.key()] {
			return nil, gateway.FieldErrorf(gateway.EInvalidField, "webhooks.id", "tenant %s has two webhooks named %s", e.Tenant, e.ID)
		}
		seen[e.key()] = true
	}
	return d, nil
}

// Changed tells a running dispatcher that the stored endpoints changed (created, deleted,
// rotated, enabled): it syncs at once instead of at its next Refresh.
func (d *Dispatcher) Changed() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// Run consumes until ctx is done; an attempt in flight finishes, a retry waiting is left
// unacknowledged for the next run. With a Store it re-reads the stored endpoints every Refresh
// (and on Changed), starting and stopping their consumers, and purges the delivery log.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	d.runCtx = ctx
	d.mu.Unlock()
	for _, e := range d.cfg.Endpoints {
		d.start(ctx, e, false)
	}
	if d.cfg.Store != nil {
		tick := time.NewTicker(d.cfg.Refresh)
		defer tick.Stop()
		d.sync(ctx)
		d.purge(ctx)
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-d.changed:
				d.sync(ctx)
			case <-tick.C:
				d.sync(ctx)
				d.purge(ctx)
			}
		}
	}
	<-ctx.Done()
	d.mu.Lock()
	d.runCtx = nil // no replay starts once the wait below has begun
	d.mu.Unlock()
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.runErr
}

// start runs e's consumers, one per stream it subscribes to, until ctx is done or it is stopped.
func (d *Dispatcher) start(ctx context.Context, e Endpoint, fromStore bool) {
	ectx, stop := context.WithCancel(ctx)
	r := &endpointRun{fromStore: fromStore, stop: stop, done: make(chan struct{}), ep: e, client: d.cfg.Client(e)}
	d.mu.Lock()
	d.running[e.key()] = r
	d.mu.Unlock()
	var consumers sync.WaitGroup
	for _, sub := range subscriptions(e) {
		consumers.Add(1)
		d.wg.Go(func() {
			defer consumers.Done()
			err := d.cfg.Bus.Consume(ectx, sub.consumer(e, d.cfg.AckWait), func(hctx context.Context, m *bus.Msg) error {
				return d.handle(ectx, hctx, r, sub.event, m)
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				d.cfg.Log.Error().Err(err).Str("tenant", e.Tenant).Str("webhook", e.ID).Msg("webhook consumer stopped")
				d.mu.Lock()
				if d.runErr == nil {
					d.runErr = fmt.Errorf("webhook %s/%s: %w", e.Tenant, e.ID, err)
				}
				d.mu.Unlock()
			}
		})
	}
	d.wg.Go(func() {
		consumers.Wait()
		close(r.done)
		r.mu.Lock()
		deleted := r.deleted
		r.mu.Unlock()
		if deleted {
			d.dropConsumers(e)
		}
	})
}

// subscription is one stream (and on EVENTS one kind) an endpoint consumes.
type subscription struct{ event, stream, filter, kind string }

func subscriptions(e Endpoint) []subscription {
	var out []subscription
	for _, sub := range []subscription{
		{EventMessageStatus, bus.StreamStatus, bus.StatusSubject(e.Tenant), ""},
		{EventMessageInbound, bus.StreamInbound, bus.InboundSubject(e.Tenant, "*"), ""},
		{EventConsentChanged, bus.StreamEvents, bus.EventSubject(e.Tenant, "consent"), "consent"},
		{EventAccountState, bus.StreamEvents, bus.EventSubject(e.Tenant, "account"), "account"},
		{EventWebhookDisabled, bus.StreamEvents, bus.EventSubject(e.Tenant, "webhook"), "webhook"},
	} {
		if e.wants(sub.event) {
			out = append(out, sub)
		}
	}
	return out
}

func (s subscription) durable(e Endpoint) string {
	name := "webhook_" + e.Tenant + "_" + e.ID + "_" + strings.ToLower(s.stream)
	if s.kind != "" {
		name += "_" + s.kind
	}
	return name
}

func (s subscription) consumer(e Endpoint, ackWait time.Duration) bus.ConsumerConfig {
	return bus.ConsumerConfig{
		Stream: s.stream, Durable: s.durable(e), FilterSubject: s.filter,
		AckWait: ackWait, MaxDeliver: 1 << 20, MaxAckPending: 1, Concurrency: 1,
	}
}

// dropConsumers deletes a deleted endpoint's durable consumers, so the streams keep nothing for it.
func (d *Dispatcher) dropConsumers(e Endpoint) {
	dc, ok := d.cfg.Bus.(ConsumerDeleter)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sub := range subscriptions(e) {
		if err := dc.DeleteConsumer(ctx, sub.stream, sub.durable(e)); err != nil && gateway.ErrorCode(err) != gateway.ENotFound {
			d.cfg.Log.Warn().Err(err).Str("tenant", e.Tenant).Str("webhook", e.ID).Msg("webhook: deleting a removed endpoint's consumer")
		}
	}
}

// sync makes the running stored endpoints match the store: new and enabled ones start, deleted
// and disabled ones stop, rotated secrets are swapped in.
func (d *Dispatcher) sync(ctx context.Context) {
	ws, err := d.cfg.Store.ListWebhooks(ctx, "")
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Log.Warn().Err(err).Msg("webhook: reading the stored endpoints")
		}
		return
	}
	now := d.cfg.Clock.Now()
	want := map[string]Endpoint{}
	listed := map[string]bool{}
	for _, w := range ws {
		e, err := FromStore(w, now)
		listed[e.key()] = true
		if err != nil {
			d.cfg.Log.Error().Err(err).Str("tenant", w.Tenant).Str("webhook", w.ID).Msg("webhook: a stored endpoint is unusable")
			continue
		}
		if w.DisabledAt.IsZero() {
			want[e.key()] = e
		}
	}
	var stale []*endpointRun
	d.mu.Lock()
	for key, r := range d.running {
		if _, ok := want[key]; r.fromStore && !ok {
			r.mu.Lock()
			r.deleted = !listed[key]
			r.mu.Unlock()
			r.stop()
			stale = append(stale, r)
			delete(d.running, key)
		}
	}
	var fresh []Endpoint
	for key, e := range want {
		r := d.running[key]
		switch {
		case r == nil:
			fresh = append(fresh, e)
		case !r.fromStore:
			d.cfg.Log.Warn().Str("tenant", e.Tenant).Str("webhook", e.ID).Msg("webhook: a stored endpoint has the id of a configured one; the configured one wins")
		default:
			r.mu.Lock()
			r.ep.Secrets = e.Secrets
			r.mu.Unlock()
		}
	}
	d.mu.Unlock()
	for _, r := range stale {
		<-r.done // a disabled endpoint enabled again must not run twice on its durable
	}
	for _, e := range fresh {
		d.start(ctx, e, true)
	}
}

// purge deletes delivery log lines older than LogRetention.
func (d *Dispatcher) purge(ctx context.Context) {
	before := d.cfg.Clock.Now().Add(-d.cfg.LogRetention)
	for {
		n, err := d.cfg.Store.PurgeWebhookAttempts(ctx, before, 1000)
		if err != nil {
			if ctx.Err() == nil {
				d.cfg.Log.Warn().Err(err).Msg("webhook: purging the delivery log")
			}
			return
		}
		if n < 1000 {
			return
		}
	}
}

// TestPayload is the body of a test event (`switchboard webhooks test`): type webhook.test.
func TestPayload(at time.Time) []byte {
	b, _ := json.Marshal(payload{Type: "webhook.test", Timestamp: at.UTC(), Data: json.RawMessage(`{}`)})
	return b
}

// payload is the body of every request: {"type","timestamp","data"}.
type payload struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// handle delivers one event to one endpoint, retrying until it succeeds, the event is too old,
// or run is done (then the event stays unacknowledged and comes back).
func (d *Dispatcher) handle(run, hctx context.Context, r *endpointRun, event string, m *bus.Msg) error {
	e, _ := r.current()
	data, msgID, at, ok, err := d.eventData(hctx, event, m)
	if err != nil {
		return err // the keyring is unavailable: try again later
	}
	if !ok {
		return nil
	}
	body, err := json.Marshal(payload{Type: event, Timestamp: at.UTC(), Data: data})
	if err != nil {
		return bus.Terminal(err)
	}
	id := eventID(m)
	log := d.cfg.Log.With().Str("event", "webhook_attempt").Str("tenant", e.Tenant).Str("webhook", e.ID).
		Str("webhook_id", id).Str("type", event).Logger()
	for attempt := 1; ; attempt++ {
		_ = m.InProgress()
		start := d.cfg.Clock.Now()
		e, client := r.current()
		status, err := d.post(hctx, client, e, id, body)
		latency := d.cfg.Clock.Now().Sub(start)
		ev := log.Info()
		if err != nil {
			ev = log.Warn().Str("error", err.Error())
		}
		ev.Int("attempt", attempt).Int("status_code", status).Float64("latency_ms", float64(latency.Microseconds())/1000).Send()
		d.record(hctx, store.WebhookAttempt{Tenant: e.Tenant, Webhook: e.ID, Event: event, EventID: id, MessageID: msgID,
			Attempt: attempt, StatusCode: status, LatencyMS: latency.Milliseconds(), Error: ErrorClass(status, err), At: start})
		if err == nil {
			d.count(r, e, "ok")
			r.mu.Lock()
			r.givenUp = 0
			r.mu.Unlock()
			return nil
		}
		if d.cfg.Clock.Now().Sub(at) >= d.cfg.MaxAge {
			d.count(r, e, "gave_up")
			log.Error().Int("attempts", attempt).Msg("webhook: giving up on an event older than the retry period")
			d.gaveUp(hctx, r)
			return nil
		}
		d.count(r, e, "failed")
		if err := d.wait(run, hctx, m, d.delay(attempt)); err != nil {
			return err // shutting down: the event stays unacknowledged
		}
	}
}

// eventID is the webhook-id of a stream message: the same on every attempt and on a replay.
func eventID(m *bus.Msg) string {
	return "evt_" + strings.ToLower(m.Stream) + "_" + strconv.FormatUint(m.StreamSeq, 10)
}

// delay is the wait after failed attempt n: BaseDelay·2^(n-1), capped at MaxDelay, of which a
// random half is jitter.
func (d *Dispatcher) delay(n int) time.Duration {
	full := d.cfg.MaxDelay
	if n-1 < 30 {
		full = min(d.cfg.BaseDelay<<(n-1), d.cfg.MaxDelay)
	}
	return full/2 + time.Duration(d.cfg.Jitter()*float64(full/2))
}

// wait waits out a retry delay, telling the bus the message is still in progress.
func (d *Dispatcher) wait(run, hctx context.Context, m *bus.Msg, delay time.Duration) error {
	done := d.cfg.Clock.After(delay)
	keepAlive := time.NewTicker(d.cfg.AckWait / 3)
	defer keepAlive.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-keepAlive.C:
			_ = m.InProgress()
		case <-run.Done():
			return run.Err()
		case <-hctx.Done():
			return hctx.Err()
		}
	}
}

// count counts an attempt under the configured endpoint's name, or "api" for an endpoint made
// through the API: its generated id would be an identifier, a new series per endpoint ever made.
func (d *Dispatcher) count(r *endpointRun, e Endpoint, outcome string) {
	if d.cfg.Metrics == nil {
		return
	}
	name := e.ID
	if r.fromStore {
		name = "api"
	}
	d.cfg.Metrics.WebhookAttempt(e.Tenant, name, outcome)
}

// post makes one attempt; a 2xx answer is success.
func (d *Dispatcher) post(ctx context.Context, client *http.Client, e Endpoint, id string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	return Post(ctx, client, e, id, d.cfg.Clock.Now(), body)
}

// record appends an attempt to the delivery log; a failure to do so is logged, never retried
// (the attempt itself stands).
func (d *Dispatcher) record(ctx context.Context, a store.WebhookAttempt) {
	if d.cfg.Store == nil {
		return
	}
	if err := d.cfg.Store.RecordWebhookAttempt(context.WithoutCancel(ctx), a); err != nil {
		d.cfg.Log.Warn().Err(err).Str("tenant", a.Tenant).Str("webhook", a.Webhook).Msg("webhook: recording an attempt")
	}
}

// gaveUp counts an event given up; DisableAfter in a row disable a stored endpoint.
func (d *Dispatcher) gaveUp(ctx context.Context, r *endpointRun) {
	r.mu.Lock()
	r.givenUp++
	n, e := r.givenUp, r.ep
	r.mu.Unlock()
	if !r.fromStore || n < d.cfg.DisableAfter {
		return
	}
	now := d.cfg.Clock.Now()
	if err := d.cfg.Store.SetWebhookDisabled(context.WithoutCancel(ctx), e.Tenant, e.ID, now, DisabledPersistentFailure); err != nil {
		d.cfg.Log.Error().Err(err).Str("tenant", e.Tenant).Str("webhook", e.ID).Msg("webhook: disabling a failing endpoint")
		return
	}
	d.cfg.Log.Error().Str("event", "webhook_disabled").Str("tenant", e.Tenant).Str("webhook", e.ID).
		Str("reason", DisabledPersistentFailure).Int("events_given_up", n).
		Msg("webhook disabled: every attempt failed for the whole retry period; POST /v1/webhooks/{id}/enable resumes it")
	d.Changed()
	if d.cfg.Publisher != nil {
		if err := pipeline.PublishTenantEvent(context.WithoutCancel(ctx), d.cfg.Publisher, e.Tenant, EventWebhookDisabled, now,
			gateway.WebhookDisabledData{Webhook: e.ID, Reason: DisabledPersistentFailure}); err != nil {
			d.cfg.Log.Warn().Err(err).Str("tenant", e.Tenant).Str("webhook", e.ID).Msg("webhook: publishing webhook.disabled")
		}
	}
}

// ErrorClass names what went wrong with an attempt, for the delivery log: "" when it succeeded.
func ErrorClass(status int, err error) string {
	var nerr net.Error
	switch {
	case err == nil:
		return ""
	case status >= 500:
		return "http_5xx"
	case status >= 400:
		return "http_4xx"
	case status >= 300:
		return "http_3xx"
	case status > 0:
		return "http_status"
	case gateway.ErrorCode(err) == gateway.EForbidden:
		return "forbidden_target"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	}
	return "connection"
}

// Post sends one signed request to e: body with the webhook-id, webhook-timestamp and
// webhook-signature headers. It returns the HTTP status; an answer other than 2xx is an error.
func Post(ctx context.Context, client *http.Client, e Endpoint, id string, ts time.Time, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Switchboard-Webhooks/1")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", Sign(e.Secrets, id, ts, body))
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// eventData is the data of an event and when it happened; ok=false skips it (undecodable, or an
// inbound message whose sender was erased).
func (d *Dispatcher) eventData(ctx context.Context, event string, m *bus.Msg) (data json.RawMessage, msgID string, at time.Time, ok bool, err error) {
	switch event {
	case EventConsentChanged, EventAccountState, EventWebhookDisabled:
		var ev gateway.TenantEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Type != event {
			d.cfg.Log.Warn().Err(err).Str("type", ev.Type).Msg("webhook: undecodable tenant event")
			return nil, "", time.Time{}, false, nil
		}
		return ev.Data, "", ev.At, true, nil
	case EventMessageStatus:
		var ev gateway.StatusEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			d.cfg.Log.Warn().Err(err).Msg("webhook: undecodable status event")
			return nil, "", time.Time{}, false, nil
		}
		at = ev.At
		if at.IsZero() {
			at = m.Time
		}
		return m.Data, ev.MessageID, at, true, nil
	default:
		var env pipeline.InboundEnvelope
		if err := json.Unmarshal(m.Data, &env); err != nil {
			d.cfg.Log.Warn().Err(err).Msg("webhook: undecodable inbound envelope")
			return nil, "", time.Time{}, false, nil
		}
		ev, err := pipeline.OpenInbound(ctx, d.cfg.Sealer, env)
		if code := gateway.ErrorCode(err); err != nil && code != gateway.ENotFound && code != gateway.ESubjectErased {
			return nil, "", time.Time{}, false, err
		}
		if err != nil {
			d.cfg.Log.Debug().Err(err).Str("msg_id", env.ID).Msg("webhook: inbound envelope does not open (erased?)")
			return nil, "", time.Time{}, false, nil
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, "", time.Time{}, false, nil
		}
		return b, env.ID, env.At, true, nil
	}
}
