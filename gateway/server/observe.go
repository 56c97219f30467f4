package server

import (
	"context"
	"regexp"
	"sync"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/gateway/events"
	"github.com/switchboard-gateway/switchboard/gateway/metrics"
	"github.com/switchboard-gateway/switchboard/store"
)

// newMetrics is the gateway's metrics, with the bus consumers' backlogs read at scrape time.
func (s *Server) newMetrics() *metrics.Metrics {
	return metrics.New(metrics.Config{
		Backlogs: busBacklogs{s.bus},
		Accounts: accountStates{s},
		Log:      s.log.With().Str("component", "metrics").Logger(),
	})
}

// onApplied sees every batch the status recorder made durable: metrics, then the caller's hook.
func (s *Server) onApplied(ctx context.Context, applied []store.Applied) {
	s.metrics.Applied(ctx, applied)
	if s.opts.OnApplied != nil {
		s.opts.OnApplied(ctx, applied)
	}
}

// eventSource serves GET /v1/events from the bus; its streams end when the HTTP server starts
// shutting down (endStreams).
func (s *Server) eventSource() api.EventSource {
	done := make(chan struct{})
	s.endStreams = sync.OnceFunc(func() { close(done) })
	return &events.Source{JS: s.bus.JetStream(), Sealer: s.keyring, Log: s.log.With().Str("component", "events").Logger(), Done: done}
}

// countingIntake counts accepted messages on their way through the API.
type countingIntake struct {
	api.Intake
	m *metrics.Metrics
}

func (c countingIntake) Accept(ctx context.Context, nm store.NewMessage) (*gateway.Message, string, bool, error) {
	msg, hash, created, err := c.Intake.Accept(ctx, nm)
	if err == nil && created && msg != nil {
		c.m.Accepted(msg.Tenant, msg.Channel)
	}
	return msg, hash, created, err
}

// busBacklogs lists the durable consumers of the streams and asks the bus for each backlog.
type busBacklogs struct{ b *bus.Bus }

func (bb busBacklogs) Backlogs(ctx context.Context) ([]metrics.Backlog, error) {
	var out []metrics.Backlog
	for _, name := range []string{bus.StreamSend, bus.StreamDispatch, bus.StreamStatus, bus.StreamInbound, bus.StreamEvents} {
		st, err := bb.b.JetStream().Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		lister := st.ListConsumers(ctx)
		var durables []string
		for info := range lister.Info() {
			if info.Config.Durable != "" {
				durables = append(durables, info.Config.Durable)
			}
		}
		if err := lister.Err(); err != nil {
			return nil, err
		}
		for _, d := range durables {
			n, err := bb.b.Backlog(ctx, name, d)
			if gateway.ErrorCode(err) == gateway.ENotFound {
				continue // deleted since the listing
			}
			if err != nil {
				return nil, err
			}
			out = append(out, metrics.Backlog{Stream: name, Consumer: d, Messages: n})
		}
	}
	return withoutGeneratedIDs(out), nil
}

// apiWebhookID is the generated id of a webhook endpoint made through the API (wh_ and a ULID),
// as it appears inside the names of the endpoint's durable consumers.
var apiWebhookID = regexp.MustCompile(`_wh_[0-9a-hjkmnp-tv-z]{26}_`)

// withoutGeneratedIDs names the consumers of endpoints made through the API "api" and sums their
// backlogs per stream: a generated id as a label would make a series per endpoint ever created.
func withoutGeneratedIDs(in []metrics.Backlog) []metrics.Backlog {
	out := make([]metrics.Backlog, 0, len(in))
	at := map[[2]string]int{}
	for _, b := range in {
		b.Consumer = apiWebhookID.ReplaceAllString(b.Consumer, "_api_")
		k := [2]string{b.Stream, b.Consumer}
		if i, ok := at[k]; ok {
			out[i].Messages += b.Messages
			continue
		}
		at[k] = len(out)
		out = append(out, b)
	}
	return out
}

// accountStates reports each account runner's readiness.
type accountStates struct{ s *Server }

func (a accountStates) AccountStates(ctx context.Context) []metrics.AccountState {
	out := make([]metrics.AccountState, 0, len(a.s.runners))
	for i, r := range a.s.runners {
		k := a.s.runnerKeys[i]
		out = append(out, metrics.AccountState{Channel: string(k.channel), Tenant: k.tenant, Account: k.account, Ready: r.Ready(ctx) == nil,
			State: describeAccount(k.channel, config.AccountConfig{}, a.s.adapters[k]).State})
	}
	return out
}
