package privacy

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"
)

// Retention is how long a tenant keeps data; a zero duration keeps it forever.
type Retention struct {
	Content  time.Duration // message bodies and media references (metadata stays)
	Metadata time.Duration // whole messages and their status history
	Inbound  time.Duration // inbound messages
}

// RetentionStore is what the sweeper needs (store/sql.DB implements it).
type RetentionStore interface {
	PurgeContent(ctx context.Context, tenant string, before time.Time, limit int) (int64, error)
	PurgeMessages(ctx context.Context, tenant string, before time.Time, inboundOnly bool, limit int) (msgs, events int64, err error)
}

// SweepReport is what one sweep purged.
type SweepReport struct {
	Contents, Messages, Inbound, StatusEvents int64
}

// SweeperConfig wires a Sweeper.
type SweeperConfig struct {
	Store RetentionStore // required
	// Policies returns the retention of every tenant that has one; asked at each sweep, so a
	// config reload applies at the next one.
	Policies func() map[string]Retention // required
	Batch    int                         // rows per transaction; default 500
	Interval time.Duration               // between sweeps; default 1h
	Clock    func() time.Time
	Log      zerolog.Logger
	// OnSweep, when set, sees every sweep's report (metrics, tests).
	OnSweep func(tenant string, r SweepReport)
}

// Sweeper purges what retention no longer allows, in bounded batches. Several replicas may run
// one each: every batch is an idempotent UPDATE or DELETE of rows past their time.
type Sweeper struct{ cfg SweeperConfig }

// NewSweeper returns a Sweeper.
func NewSweeper(cfg SweeperConfig) (*Sweeper, error) {
	if cfg.Store == nil || cfg.Policies == nil {
		return nil, errors.New("privacy: the sweeper needs a store and policies")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Sweeper{cfg: cfg}, nil
}

// Run sweeps at once and then every Interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if err := s.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Error().Err(err).Msg("retention sweep")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// SweepOnce purges, for every tenant with a policy, what is older than it allows.
func (s *Sweeper) SweepOnce(ctx context.Context) error {
	now := s.cfg.Clock()
	var errs []error
	for tenant, p := range s.cfg.Policies() {
		r, err := s.sweep(ctx, tenant, p, now)
		if r != (SweepReport{}) {
			s.cfg.Log.Info().Str("event", "retention").Str("tenant", tenant).Int64("contents", r.Contents).
				Int64("messages", r.Messages).Int64("inbound", r.Inbound).Int64("status_events", r.StatusEvents).Send()
		}
		if s.cfg.OnSweep != nil {
			s.cfg.OnSweep(tenant, r)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Sweeper) sweep(ctx context.Context, tenant string, p Retention, now time.Time) (SweepReport, error) {
	var r SweepReport
	if p.Metadata > 0 {
		for {
			m, e, err := s.cfg.Store.PurgeMessages(ctx, tenant, now.Add(-p.Metadata), false, s.cfg.Batch)
			r.Messages, r.StatusEvents = r.Messages+m, r.StatusEvents+e
			if err != nil || m == 0 {
				if err != nil {
					return r, err
				}
				break
			}
		}
	}
	if p.Inbound > 0 {
		for {
			m, e, err := s.cfg.Store.PurgeMessages(ctx, tenant, now.Add(-p.Inbound), true, s.cfg.Batch)
			r.Inbound, r.StatusEvents = r.Inbound+m, r.StatusEvents+e
			if err != nil || m == 0 {
				if err != nil {
					return r, err
				}
				break
			}
		}
	}
	if p.Content > 0 {
		for {
			n, err := s.cfg.Store.PurgeContent(ctx, tenant, now.Add(-p.Content), s.cfg.Batch)
			r.Contents += n
			if err != nil || n == 0 {
				return r, err
			}
		}
	}
	return r, nil
}
