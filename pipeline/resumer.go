package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
)

// UnfinishedLister is the part of store.Messages that the Resumer needs.
type UnfinishedLister interface {
	Unfinished(ctx context.Context, afterID string, limit int) ([]gateway.Dispatch, error)
}

// ResumerConfig wires a Resumer.
type ResumerConfig struct {
	Store UnfinishedLister // required
	Bus   Publisher        // required
	// Interval between periodic scans; default 30s.
	Interval time.Duration
	// MinAge: a periodic scan leaves alone messages accepted less than MinAge ago, which are most
	// likely on their way already; default 1m. The scan at start republishes everything.
	MinAge time.Duration
	// PageSize of a store scan; default 500.
	PageSize int
	Log      zerolog.Logger
	Clock    Clock
}

// Resumer republishes messages that were stored but never routed (status still accepted): at start,
// after a crash between the store write and the publish, every Interval, and soon after Retry.
// Republishing is safe: the bus drops a message id it has seen within its duplicate window, and the
// Router ignores a message that is no longer accepted.
type Resumer struct {
	cfg  ResumerConfig
	kick chan struct{}

	mu    sync.Mutex
	retry map[string]gateway.Dispatch
}

// maxRetrySet bounds the in-memory set of failed publishes; beyond it the periodic scan finds them.
const maxRetrySet = 10000

// NewResumer returns a Resumer.
func NewResumer(cfg ResumerConfig) (*Resumer, error) {
	if cfg.Store == nil || cfg.Bus == nil {
		return nil, errors.New("pipeline: resumer needs a store and a bus")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.MinAge <= 0 {
		cfg.MinAge = time.Minute
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 500
	}
	return &Resumer{cfg: cfg, kick: make(chan struct{}, 1), retry: map[string]gateway.Dispatch{}}, nil
}

// Retry asks for d to be published again soon (Intake calls it when its publish failed).
func (r *Resumer) Retry(d gateway.Dispatch) {
	r.mu.Lock()
	if len(r.retry) < maxRetrySet {
		r.retry[d.MessageID] = d
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run scans once at start (every unfinished message), then every Interval (messages older than
// MinAge) and on Retry, until ctx is done. A failed scan is logged and tried again next time.
func (r *Resumer) Run(ctx context.Context) error {
	if n, err := r.Scan(ctx, 0); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		r.cfg.Log.Warn().Err(err).Int("republished", n).Msg("resume scan at start failed")
	} else if n > 0 {
		r.cfg.Log.Info().Int("republished", n).Msg("resumed unfinished messages")
	}
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	// Failed retries wait for the next tick rather than spinning on a bus that is down.
	var retryTimer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n, err := r.Scan(ctx, r.cfg.MinAge); err != nil && ctx.Err() == nil {
				r.cfg.Log.Warn().Err(err).Int("republished", n).Msg("resume scan failed")
			} else if n > 0 {
				r.cfg.Log.Info().Int("republished", n).Msg("resumed unfinished messages")
			}
			r.flushRetries(ctx)
		case <-r.kick:
			if r.flushRetries(ctx) && retryTimer == nil {
				retryTimer = time.After(time.Second)
			}
		case <-retryTimer:
			retryTimer = nil
			if r.flushRetries(ctx) {
				retryTimer = time.After(5 * time.Second)
			}
		}
	}
}

// flushRetries publishes the retry set and reports whether some are left.
func (r *Resumer) flushRetries(ctx context.Context) (left bool) {
	r.mu.Lock()
	pending := make([]gateway.Dispatch, 0, len(r.retry))
	for _, d := range r.retry {
		pending = append(pending, d)
	}
	r.mu.Unlock()
	for _, d := range pending {
		if err := r.publish(ctx, d); err != nil {
			return true
		}
		r.mu.Lock()
		delete(r.retry, d.MessageID)
		r.mu.Unlock()
	}
	return false
}

// Scan publishes every unfinished message accepted at least minAge ago to SEND and returns how
// many it published.
func (r *Resumer) Scan(ctx context.Context, minAge time.Duration) (int, error) {
	cutoff := r.cfg.Clock.now().Add(-minAge)
	after, n := "", 0
	for {
		page, err := r.cfg.Store.Unfinished(ctx, after, r.cfg.PageSize)
		if err != nil {
			return n, err
		}
		for _, d := range page {
			if minAge > 0 {
				if at, ok := idTime(d.MessageID); ok && at.After(cutoff) {
					// Unfinished is oldest first: the rest are younger still.
					return n, nil
				}
			}
			if err := r.publish(ctx, d); err != nil {
				return n, err
			}
			n++
		}
		if len(page) < r.cfg.PageSize {
			return n, nil
		}
		after = page[len(page)-1].MessageID
	}
}

func (r *Resumer) publish(ctx context.Context, d gateway.Dispatch) error {
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return r.cfg.Bus.Publish(ctx, bus.SendSubject(d.Tenant), d.MessageID, data)
}

// idTime returns the time encoded in a ULID-based id such as msg_01J9Z….
func idTime(id string) (time.Time, bool) {
	_, s, ok := strings.Cut(id, "_")
	if !ok {
		return time.Time{}, false
	}
	u, err := ulid.ParseStrict(strings.ToUpper(s))
	if err != nil {
		return time.Time{}, false
	}
	return ulid.Time(u.Time()), true
}
