// Package delivery pushes a tenant's events to its webhook endpoints, signed per the Standard
// Webhooks specification (sign.go), durably: every endpoint has its own durable consumers on the
// STATUS and INBOUND streams, taking one event at a time, so an endpoint sees the events of a
// message in order and a failing endpoint holds up only itself. A failed attempt is retried with
// exponential backoff and jitter until it succeeds or the event is older than MaxAge; a process
// that dies between attempts leaves the event unacknowledged, and the next process retries it.
// Targets on internal addresses are refused at dial time unless allowed (ssrf.go).
package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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
)

// Event types an endpoint can subscribe to.
const (
	EventMessageStatus  = "message.status"
	EventMessageInbound = "message.inbound"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxAge    = 72 * time.Hour
	DefaultBaseDelay = 5 * time.Second
	DefaultMaxDelay  = time.Hour
	DefaultTimeout   = 15 * time.Second
)

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
		if ev != EventMessageStatus && ev != EventMessageInbound {
			return gateway.FieldErrorf(gateway.EInvalidField, "webhooks.events", "webhook %s: unknown event %q (message.status, message.inbound)", e.ID, ev)
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

// Consumer is the part of the bus the dispatcher needs.
type Consumer interface {
	Consume(ctx context.Context, cfg bus.ConsumerConfig, h bus.Handler) error
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
}

// Dispatcher runs the endpoints' consumers.
type Dispatcher struct {
	cfg     Config
	clients map[string]*http.Client // by tenant/endpoint id
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
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.Client == nil {
		cfg.Client = func(e Endpoint) *http.Client { return NewClient(e.AllowPrivate, cfg.Timeout) }
	}
	d := &Dispatcher{cfg: cfg, clients: map[string]*http.Client{}}
	for _, e := range cfg.Endpoints {
		if err := e.validate(); err != nil {
			return nil, err
		}
		key := e.Tenant + "/" + e.ID
		if d.clients[key] != nil {
			return nil, gateway.FieldErrorf(gateway.EInvalidField, "webhooks.id", "tenant %s has two webhooks named %s", e.Tenant, e.ID)
		}
		d.clients[key] = cfg.Client(e)
	}
	return d, nil
}

// Run consumes until ctx is done; an attempt in flight finishes, a retry waiting is left
// unacknowledged for the next run.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, 2*len(d.cfg.Endpoints))
	for _, e := range d.cfg.Endpoints {
		for _, sub := range []struct{ event, stream, filter string }{
			{EventMessageStatus, bus.StreamStatus, bus.StatusSubject(e.Tenant)},
			{EventMessageInbound, bus.StreamInbound, bus.InboundSubject(e.Tenant, "*")},
		} {
			if !e.wants(sub.event) {
				continue
			}
			cc := bus.ConsumerConfig{
				Stream: sub.stream, Durable: "webhook_" + e.Tenant + "_" + e.ID + "_" + strings.ToLower(sub.stream),
				FilterSubject: sub.filter, AckWait: d.cfg.AckWait, MaxDeliver: 1 << 20, MaxAckPending: 1, Concurrency: 1,
			}
			wg.Go(func() {
				if err := d.cfg.Bus.Consume(ctx, cc, func(hctx context.Context, m *bus.Msg) error {
					return d.handle(ctx, hctx, e, sub.event, m)
				}); err != nil && !errors.Is(err, context.Canceled) {
					errc <- fmt.Errorf("webhook %s/%s: %w", e.Tenant, e.ID, err)
				}
			})
		}
	}
	wg.Wait()
	close(errc)
	return <-errc
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
func (d *Dispatcher) handle(run, hctx context.Context, e Endpoint, event string, m *bus.Msg) error {
	data, at, ok, err := d.eventData(hctx, event, m)
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
	id := "evt_" + strings.ToLower(m.Stream) + "_" + strconv.FormatUint(m.StreamSeq, 10)
	log := d.cfg.Log.With().Str("event", "webhook_attempt").Str("tenant", e.Tenant).Str("webhook", e.ID).
		Str("webhook_id", id).Str("type", event).Logger()
	for attempt := 1; ; attempt++ {
		_ = m.InProgress()
		start := d.cfg.Clock.Now()
		status, err := d.post(hctx, e, id, body)
		latency := d.cfg.Clock.Now().Sub(start)
		ev := log.Info()
		if err != nil {
			ev = log.Warn().Str("error", err.Error())
		}
		ev.Int("attempt", attempt).Int("status_code", status).Float64("latency_ms", float64(latency.Microseconds())/1000).Send()
		if err == nil {
			d.count(e, "ok")
			return nil
		}
		if d.cfg.Clock.Now().Sub(at) >= d.cfg.MaxAge {
			d.count(e, "gave_up")
			log.Error().Int("attempts", attempt).Msg("webhook: giving up on an event older than the retry period")
			return nil
		}
		d.count(e, "failed")
		if err := d.wait(run, hctx, m, d.delay(attempt)); err != nil {
			return err // shutting down: the event stays unacknowledged
		}
	}
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

func (d *Dispatcher) count(e Endpoint, outcome string) {
	if d.cfg.Metrics != nil {
		d.cfg.Metrics.WebhookAttempt(e.Tenant, e.ID, outcome)
	}
}

// post makes one attempt; a 2xx answer is success.
func (d *Dispatcher) post(ctx context.Context, e Endpoint, id string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	return Post(ctx, d.clients[e.Tenant+"/"+e.ID], e, id, d.cfg.Clock.Now(), body)
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
func (d *Dispatcher) eventData(ctx context.Context, event string, m *bus.Msg) (json.RawMessage, time.Time, bool, error) {
	switch event {
	case EventMessageStatus:
		var ev gateway.StatusEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			d.cfg.Log.Warn().Err(err).Msg("webhook: undecodable status event")
			return nil, time.Time{}, false, nil
		}
		at := ev.At
		if at.IsZero() {
			at = m.Time
		}
		return m.Data, at, true, nil
	default:
		var env pipeline.InboundEnvelope
		if err := json.Unmarshal(m.Data, &env); err != nil {
			d.cfg.Log.Warn().Err(err).Msg("webhook: undecodable inbound envelope")
			return nil, time.Time{}, false, nil
		}
		ev, err := pipeline.OpenInbound(ctx, d.cfg.Sealer, env)
		if code := gateway.ErrorCode(err); err != nil && code != gateway.ENotFound && code != gateway.ESubjectErased {
			return nil, time.Time{}, false, err
		}
		if err != nil {
			d.cfg.Log.Debug().Err(err).Str("msg_id", env.ID).Msg("webhook: inbound envelope does not open (erased?)")
			return nil, time.Time{}, false, nil
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, time.Time{}, false, nil
		}
		return b, env.At, true, nil
	}
}
