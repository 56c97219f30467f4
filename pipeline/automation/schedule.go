package automation

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// FiredStore keeps, per tenant and rule, the occurrence a schedule last fired, so a restart
// neither fires it again nor forgets it; in the store, it is shared by every replica
// (store.AutomationState).
type FiredStore interface {
	LastFired(ctx context.Context, tenant, rule string) (at time.Time, ok bool, err error)
	SetFired(ctx context.Context, tenant, rule string, at time.Time) error
}

// Clock is the time source of the Scheduler; tests use a fake one.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a function that stops it.
	After(d time.Duration) (<-chan time.Time, func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// SchedulerConfig wires a Scheduler.
type SchedulerConfig struct {
	Engine *Engine       // required: its rules, its Intake, its OnAction
	Fired  FiredStore    // required
	Clock  Clock         // default the real clock
	Retry  time.Duration // after a failed firing; default 30s
	// Lease, when set, runs the schedules only while this process holds the lease LeaseName, so
	// that one replica of several fires them (gateway/bus.Leases implements it). The fired-at
	// record is in the store, so the replica that takes over knows what the last holder fired.
	Lease Leaser
}

// Leaser holds a named lease while fn runs (gateway/bus.Leases, adapters.Leaser).
type Leaser interface {
	Hold(ctx context.Context, name string, fn func(ctx context.Context) error) error
}

// LeaseName is the lease the Scheduler holds while it fires schedules.
const LeaseName = "automation.scheduler"

// Scheduler fires the schedule rules of the engine. A rule's occurrence is recorded in the
// FiredStore after its actions are accepted; the actions' messages have ids derived from the rule
// and the occurrence, so a crash between the two repeats nothing. Occurrences missed while the
// gateway was down are caught up once (the latest only); a rule that never fired starts from the
// Scheduler's start.
type Scheduler struct {
	cfg SchedulerConfig
}

// NewScheduler returns a Scheduler.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Engine == nil || cfg.Fired == nil {
		return nil, errors.New("automation: scheduler needs an engine and a fired-at store")
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 30 * time.Second
	}
	return &Scheduler{cfg: cfg}, nil
}

// Run fires schedules until ctx is done (with a Lease: while it holds the lease, and waits to get
// it back when it is lost). It re-reads the rules when they are swapped.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.cfg.Lease == nil {
		return s.run(ctx)
	}
	for ctx.Err() == nil {
		if err := s.cfg.Lease.Hold(ctx, LeaseName, s.run); err != nil && ctx.Err() == nil {
			s.cfg.Engine.cfg.Log.Warn().Err(err).Str("event", "schedule_lease").Msg("cannot hold the scheduler lease; retrying")
			wait, stop := s.cfg.Clock.After(s.cfg.Retry)
			select {
			case <-ctx.Done():
				stop()
			case <-wait:
			}
		}
	}
	return nil
}

func (s *Scheduler) run(ctx context.Context) error {
	start := s.cfg.Clock.Now()
	for {
		rs := s.cfg.Engine.rules.Load()
		now := s.cfg.Clock.Now()
		var wake time.Time
		for tenant, rules := range rs.byTenant {
			for _, r := range rules {
				if r.Schedule == nil {
					continue
				}
				next, err := s.step(ctx, tenant, r, start, now)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					s.cfg.Engine.cfg.Log.Error().Err(err).Str("event", "schedule_error").Str("tenant", tenant).Str("rule", r.Name).Send()
					next = now.Add(s.cfg.Retry)
				}
				if !next.IsZero() && (wake.IsZero() || next.Before(wake)) {
					wake = next
				}
			}
		}
		var timer <-chan time.Time
		stop := func() bool { return false }
		if !wake.IsZero() {
			timer, stop = s.cfg.Clock.After(wake.Sub(now))
		}
		select {
		case <-ctx.Done():
			stop()
			return nil
		case <-rs.replaced:
			stop()
		case <-timer:
		}
	}
}

// step fires r if an occurrence is due and returns when the next one is.
func (s *Scheduler) step(ctx context.Context, tenant string, r config.Automation, start, now time.Time) (time.Time, error) {
	st := r.Schedule
	last, ok, err := s.cfg.Fired.LastFired(ctx, tenant, r.Name)
	if err != nil {
		return time.Time{}, err
	}
	ref := start
	if ok {
		ref = last
	}
	occ := st.Spec.Next(ref.In(st.Location))
	if occ.IsZero() || occ.After(now) {
		return occ, nil
	}
	for n := st.Spec.Next(occ); !n.IsZero() && !n.After(now); n = st.Spec.Next(n) {
		occ = n // catch up once: the latest missed occurrence only
	}
	if err := s.fire(ctx, tenant, r, occ); err != nil {
		return time.Time{}, err
	}
	if err := s.cfg.Fired.SetFired(ctx, tenant, r.Name, occ); err != nil {
		return time.Time{}, err
	}
	return st.Spec.Next(occ), nil
}

// fire carries out r's actions for the occurrence occ. The actions' ids derive from the rule and
// the occurrence, so a crash before the fired-at record is written repeats nothing.
func (s *Scheduler) fire(ctx context.Context, tenant string, r config.Automation, occ time.Time) error {
	e := s.cfg.Engine
	ev := Event{Kind: KindSchedule, ID: "schedule:" + occ.UTC().Format(time.RFC3339), Tenant: tenant, At: occ}
	m, ok := e.planRule(r, ev)
	if !ok || e.cfg.Intake == nil {
		return nil
	}
	if m.failed {
		return gateway.Errorf(gateway.EInvalidField, "automation %s: %s", r.Name, m.Skipped)
	}
	for _, p := range m.Actions {
		if err := e.act(ctx, ev, p); err != nil {
			return err
		}
	}
	return nil
}
