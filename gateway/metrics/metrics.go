// Package metrics is Switchboard's Prometheus instrumentation (DESIGN.md §3.2 GET /metrics):
// messages accepted, status changes and error codes per tenant and channel, the accept→delivered
// latency, consent decisions, and the backlog of every durable bus consumer, read at scrape time.
//
// Each Metrics owns its own prometheus.Registry (no global default registry), so two gateways in
// one process (tests) never share counters. Labels are tenant, channel, status, error code,
// stream and consumer names: never a message id, a phone number or any other identifier.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

const namespace = "switchboard"

// Backlogs reports the unfinished work of every durable consumer; called at each scrape.
type Backlogs interface {
	Backlogs(ctx context.Context) ([]Backlog, error)
}

// Backlog is one durable consumer's pending plus unacknowledged messages.
type Backlog struct {
	Stream, Consumer string
	Messages         uint64
}

// Accounts reports whether each channel account can send; called at each scrape.
type Accounts interface {
	AccountStates(ctx context.Context) []AccountState
}

// AccountState is one channel account's state: Ready when it can send (connected, not paused);
// State is its word in GET /v1/accounts (connected, logged_out, banned_until …).
type AccountState struct {
	Tenant, Channel, Account string
	Ready                    bool
	State                    string
}

// Config configures New.
type Config struct {
	// Backlogs, when set, is asked for consumer backlogs at every scrape.
	Backlogs Backlogs
	// Accounts, when set, is asked for the accounts' states at every scrape.
	Accounts Accounts
	// ScrapeTimeout bounds the backlog query of one scrape (default 5s).
	ScrapeTimeout time.Duration
	Log           zerolog.Logger
}

// Metrics holds the gateway's collectors and their registry.
type Metrics struct {
	reg *prometheus.Registry

	accepted      *prometheus.CounterVec
	statuses      *prometheus.CounterVec
	errors        *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	rejections    *prometheus.CounterVec
	consentChange *prometheus.CounterVec
	webhooks      *prometheus.CounterVec
	retention     *prometheus.CounterVec
}

// New returns a Metrics with every collector registered on a fresh registry, together with the
// Go runtime and process collectors.
func New(cfg Config) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "messages_accepted_total",
			Help: "Messages accepted by the API (202), per tenant and channel.",
		}, []string{"tenant", "channel"}),
		statuses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "message_status_changes_total",
			Help: "Status changes recorded (the current status moved), per tenant, channel and new status.",
		}, []string{"tenant", "channel", "status"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "message_errors_total",
			Help: "Messages that ended failed or rejected, per tenant, channel, status and error code.",
		}, []string{"tenant", "channel", "status", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "message_delivery_latency_seconds",
			Help:    "Time from accept to the delivered receipt, per tenant and channel.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"tenant", "channel"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "consent_rejections_total",
			Help: "Sends refused by the consent check, per tenant, channel, check point and error code.",
		}, []string{"tenant", "channel", "point", "code"}),
		consentChange: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "consent_changes_total",
			Help: "Consent changes recorded (opted_in, opted_out, …), per tenant, channel, new state and source.",
		}, []string{"tenant", "channel", "state", "source"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "webhook_attempts_total",
			Help: "Webhook delivery attempts, per tenant, endpoint name and outcome (ok, failed, gave_up).",
		}, []string{"tenant", "endpoint", "outcome"}),
	}
	m.reg.MustRegister(m.accepted, m.statuses, m.errors, m.latency, m.rejections, m.consentChange, m.webhooks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.retention = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "retention_purged_total",
		Help: "Rows purged by the retention sweeper, per tenant and kind (content, messages, inbound, status_events).",
	}, []string{"tenant", "kind"})
	m.reg.MustRegister(m.retention)
	if cfg.Backlogs != nil {
		timeout := cfg.ScrapeTimeout
		if timeout <= 0 {
			timeout = 5 * time.Second
		}
		m.reg.MustRegister(&backlogCollector{src: cfg.Backlogs, timeout: timeout, log: cfg.Log})
	}
	if cfg.Accounts != nil {
		timeout := cfg.ScrapeTimeout
		if timeout <= 0 {
			timeout = 5 * time.Second
		}
		m.reg.MustRegister(&accountCollector{src: cfg.Accounts, timeout: timeout})
	}
	return m
}

// Registry is the registry the collectors are on (tests, extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Accepted counts one accepted message.
func (m *Metrics) Accepted(tenant string, ch gateway.Channel) {
	m.accepted.WithLabelValues(tenant, string(ch)).Inc()
}

// Applied observes a batch the status recorder made durable (pipeline.RecorderConfig.OnApplied).
// Only changes that moved a message's status count: a duplicate or a late receipt does not.
func (m *Metrics) Applied(_ context.Context, applied []store.Applied) {
	for _, a := range applied {
		if !a.Advanced || a.Missing || a.Duplicate {
			continue
		}
		ev := a.Event
		tenant, ch := ev.Tenant, string(ev.Channel)
		m.statuses.WithLabelValues(tenant, ch, string(ev.Status)).Inc()
		if (ev.Status == gateway.StatusFailed || ev.Status == gateway.StatusRejected) && ev.Error != nil && ev.Error.Code != "" {
			m.errors.WithLabelValues(tenant, ch, string(ev.Status), ev.Error.Code).Inc()
		}
		if ev.Status == gateway.StatusDelivered && !a.CreatedAt.IsZero() && !ev.At.IsZero() {
			if d := ev.At.Sub(a.CreatedAt); d >= 0 {
				m.latency.WithLabelValues(tenant, ch).Observe(d.Seconds())
			}
		}
	}
}

// ConsentRejected counts one send refused by the consent check (pipeline/consent's Metrics).
func (m *Metrics) ConsentRejected(tenant string, ch gateway.Channel, point, code string) {
	m.rejections.WithLabelValues(tenant, string(ch), point, code).Inc()
}

// ConsentChanged counts one recorded consent change (pipeline/consent's Metrics).
func (m *Metrics) ConsentChanged(tenant string, ch gateway.Channel, state, source string) {
	m.consentChange.WithLabelValues(tenant, string(ch), state, source).Inc()
}

// RetentionPurged counts what one retention sweep purged for tenant (pipeline/privacy's
// Sweeper): message contents emptied, outbound and inbound messages deleted, status events
// deleted with them.
func (m *Metrics) RetentionPurged(tenant string, contents, messages, inbound, statusEvents int64) {
	for kind, n := range map[string]int64{"content": contents, "messages": messages, "inbound": inbound, "status_events": statusEvents} {
		m.retention.WithLabelValues(tenant, kind).Add(float64(n))
	}
}

// backlogCollector asks for the consumers' backlogs at scrape time.
type backlogCollector struct {
	src     Backlogs
	timeout time.Duration
	log     zerolog.Logger
}

var backlogDesc = prometheus.NewDesc(namespace+"_consumer_backlog_messages",
	"Messages a durable bus consumer has not finished (pending plus unacknowledged).",
	[]string{"stream", "consumer"}, nil)

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- backlogDesc }

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	bl, err := c.src.Backlogs(ctx)
	if err != nil {
		c.log.Warn().Err(err).Msg("metrics: consumer backlogs")
		ch <- prometheus.NewInvalidMetric(backlogDesc, err)
		return
	}
	for _, b := range bl {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(b.Messages), b.Stream, b.Consumer)
	}
}

// WebhookAttempt counts one webhook delivery attempt (pipeline/delivery's Metrics); outcome is
// ok, failed or gave_up. endpoint is a configured endpoint's name, or "api" for one made through
// the API (never its generated id).
func (m *Metrics) WebhookAttempt(tenant, endpoint, outcome string) {
	m.webhooks.WithLabelValues(tenant, endpoint, outcome).Inc()
}

// accountCollector asks for the accounts' states at scrape time.
type accountCollector struct {
	src     Accounts
	timeout time.Duration
}

var accountDesc = prometheus.NewDesc(namespace+"_account_ready",
	"1 when a channel account can send (connected and not paused), else 0.",
	[]string{"tenant", "channel", "account"}, nil)

var accountStateDesc = prometheus.NewDesc(namespace+"_account_state",
	"1 for a channel account's current connection state (connected, disconnected, logged_out, banned_until, unlinked …).",
	[]string{"tenant", "channel", "account", "state"}, nil)

func (c *accountCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- accountDesc
	ch <- accountStateDesc
}

func (c *accountCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for _, a := range c.src.AccountStates(ctx) {
		v := 0.0
		if a.Ready {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(accountDesc, prometheus.GaugeValue, v, a.Tenant, a.Channel, a.Account)
		if a.State != "" {
			ch <- prometheus.MustNewConstMetric(accountStateDesc, prometheus.GaugeValue, 1, a.Tenant, a.Channel, a.Account, a.State)
		}
	}
}
