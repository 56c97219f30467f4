package whatsapp

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Pacing is the per-account send rate. WhatsApp bans numbers that send too fast, above all to
// people who never wrote to them, so the defaults are conservative.
type Pacing struct {
	// Interval is the mean time between two sends once Burst is used up. Default 3s (20/min).
	Interval time.Duration
	// Burst is how many sends may leave back to back after a quiet period. Default 3.
	Burst int
	// FirstContactInterval spaces sends to numbers that never wrote to the account. Default 30s;
	// negative turns the extra limit off.
	FirstContactInterval time.Duration
	// Jitter adds a random delay in [0, Jitter) to every paced send, so traffic does not look
	// machine-made. Default Interval/2.
	Jitter time.Duration
	// ReachoutLock is how long sends to numbers that never wrote to the account pause after
	// WhatsApp answers one with its reach-out time lock (error 463); it doubles while the lock
	// persists, up to 24h. Replies to people who wrote continue. Default 1h.
	ReachoutLock time.Duration
}

// maxReachoutLock caps the doubling pause of first contacts under a reach-out time lock.
const maxReachoutLock = 24 * time.Hour

func (p Pacing) withDefaults() Pacing {
	if p.Interval <= 0 {
		p.Interval = 3 * time.Second
	}
	if p.Burst <= 0 {
		p.Burst = 3
	}
	if p.FirstContactInterval == 0 {
		p.FirstContactInterval = 30 * time.Second
	} else if p.FirstContactInterval < 0 {
		p.FirstContactInterval = 0
	}
	if p.ReachoutLock <= 0 {
		p.ReachoutLock = time.Hour
	}
	if p.Jitter < 0 {
		p.Jitter = 0
	} else if p.Jitter == 0 {
		p.Jitter = p.Interval / 2
	}
	return p
}

// pacer is a token bucket in its virtual-scheduling form (GCRA): each send reserves the next
// free slot, so concurrent senders queue in order and the long-run rate never exceeds 1/Interval.
type pacer struct {
	clock Clock
	cfg   Pacing

	mu    sync.Mutex
	tat   time.Time // theoretical arrival time of the next send
	fcTAT time.Time // the same for first contacts
	// reach-out time lock: first contacts wait until lockedUntil; the next lock lasts lockNext
	lockedUntil time.Time
	lockNext    time.Duration
	randDur     func(max time.Duration) time.Duration
}

func newPacer(clock Clock, cfg Pacing, rnd *rand.Rand) *pacer {
	p := &pacer{clock: clock, cfg: cfg.withDefaults()}
	var mu sync.Mutex
	p.randDur = func(max time.Duration) time.Duration {
		if max <= 0 {
			return 0
		}
		mu.Lock()
		defer mu.Unlock()
		if rnd == nil {
			return time.Duration(rand.Int64N(int64(max)))
		}
		return time.Duration(rnd.Int64N(int64(max)))
	}
	return p
}

// reserve books a slot and returns when it is.
func (p *pacer) reserve(firstContact bool) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	// Up to Burst sends may be early by (Burst-1)·Interval.
	tolerance := time.Duration(p.cfg.Burst-1) * p.cfg.Interval
	at := now
	if earliest := p.tat.Add(-tolerance); earliest.After(at) {
		at = earliest
	}
	firstContact = firstContact && p.cfg.FirstContactInterval > 0
	if firstContact && p.fcTAT.After(at) {
		at = p.fcTAT
	}
	paced := at.After(now)
	base := p.tat
	if base.Before(at) {
		base = at
	}
	p.tat = base.Add(p.cfg.Interval)
	if firstContact {
		p.fcTAT = at.Add(p.cfg.FirstContactInterval)
	}
	if paced {
		at = at.Add(p.randDur(p.cfg.Jitter))
	}
	return at
}

// wait blocks until the account may send again; ctx ends the wait (the slot is then lost, which
// only makes pacing more conservative).
func (p *pacer) wait(ctx context.Context, firstContact bool) error {
	at := p.reserve(firstContact)
	d := at.Sub(p.clock.Now())
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-p.clock.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reachoutLocked returns the end of the reach-out time lock when first contacts must wait now.
func (p *pacer) reachoutLocked() (until time.Time, locked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lockedUntil, p.lockedUntil.After(p.clock.Now())
}

// lockReachout starts (or extends) the pause of first contacts after WhatsApp refused one with
// its reach-out time lock; each lock in a row lasts twice as long as the one before, up to 24h.
func (p *pacer) lockReachout() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lockNext == 0 {
		p.lockNext = p.cfg.ReachoutLock
	}
	p.lockedUntil = p.clock.Now().Add(p.lockNext)
	p.lockNext = min(2*p.lockNext, maxReachoutLock)
	return p.lockedUntil
}

// reachoutOpen records that a first contact went through: the next lock starts short again.
func (p *pacer) reachoutOpen() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lockNext = 0
}
