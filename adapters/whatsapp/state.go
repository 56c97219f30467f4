package whatsapp

import (
	"math"
	"math/rand/v2"
	"time"
)

// State is where an account's connection stands.
type State string

const (
	StateUnlinked     State = "unlinked"     // no device: link it (`switchboard whatsapp link`)
	StateConnecting   State = "connecting"   // dialling or waiting for the login to complete
	StateConnected    State = "connected"    // logged in: sends go out
	StateDisconnected State = "disconnected" // waiting to reconnect (backoff)
	StateLoggedOut    State = "logged_out"   // unlinked from the phone: relink; messages wait
	StateBanned       State = "banned"       // temporarily banned: paused until BannedUntil
	StateOutdated     State = "outdated"     // WhatsApp rejected the client version: upgrade
	StateReplaced     State = "replaced"     // another connection took over this device
)

// Status is an account's state with its details, as the runner, /readyz and
// `switchboard whatsapp accounts` show it.
type Status struct {
	Tenant        string
	Account       string
	State         State
	Detail        string    // why, for people: never content or full identifiers
	BannedUntil   time.Time // set in StateBanned
	Since         time.Time // when this state began
	LastConnected time.Time
	LastSeenPhone time.Time // when the linked phone was last active (its own messages and receipts)
	Attempt       int       // consecutive failed connection attempts
}

// CanSend reports whether sends may go out now.
func (s Status) CanSend() bool { return s.State == StateConnected }

// Backoff spaces reconnection attempts: Min·Factor^attempt, capped at Max, with equal jitter
// (half fixed, half random) so many accounts that lost the network together do not come back
// in step.
type Backoff struct {
	Min    time.Duration // default 1s
	Max    time.Duration // default 5m
	Factor float64       // default 2
}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = time.Second
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Minute
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	if b.Factor < 1 {
		b.Factor = 2
	}
	return b
}

// Delay returns the wait before attempt n (n=0 is the first retry after a failure), a value in
// [d/2, d] where d = min(Max, Min·Factor^n).
func (b Backoff) Delay(n int, rnd func(max time.Duration) time.Duration) time.Duration {
	b = b.withDefaults()
	d := float64(b.Min) * math.Pow(b.Factor, float64(n))
	if d > float64(b.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(b.Max)
	}
	half := time.Duration(d / 2)
	return half + rnd(time.Duration(d)-half+1)
}

func randFunc(rnd *rand.Rand) func(max time.Duration) time.Duration {
	return func(max time.Duration) time.Duration {
		if max <= 0 {
			return 0
		}
		if rnd == nil {
			return time.Duration(rand.Int64N(int64(max)))
		}
		return time.Duration(rnd.Int64N(int64(max)))
	}
}
