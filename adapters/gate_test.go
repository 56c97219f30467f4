package adapters_test

// The Runner with a Gate (an account that can be paused) and with sends that outlast the ack
// wait, on the real embedded bus and SQLite store (see e2e_test.go's system).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// gatedAdapter is an account that is ready or paused; onSend, when set, runs inside Send.
type gatedAdapter struct {
	mu       sync.Mutex
	ready    chan struct{} // closed while ready
	notReady chan struct{} // closed while paused
	seq      int
	sends    []adapters.Outbound
	sent     chan adapters.Outbound
	onSend   func(ctx context.Context, n int) error // n counts Send calls from 1
	runs     chan struct{}                          // when set, Run reports that it started
}

func newGatedAdapter(ready bool) *gatedAdapter {
	a := &gatedAdapter{ready: make(chan struct{}), notReady: make(chan struct{}), sent: make(chan adapters.Outbound, 1000)}
	if ready {
		close(a.ready)
	} else {
		close(a.notReady)
	}
	return a
}

func (a *gatedAdapter) setReady(ready bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.ready:
		if !ready {
			a.ready = make(chan struct{})
			close(a.notReady)
		}
	default:
		if ready {
			a.notReady = make(chan struct{})
			close(a.ready)
		}
	}
}

func (a *gatedAdapter) wait(ctx context.Context, which func() chan struct{}) error {
	a.mu.Lock()
	ch := which()
	a.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *gatedAdapter) WaitReady(ctx context.Context) error {
	return a.wait(ctx, func() chan struct{} { return a.ready })
}

func (a *gatedAdapter) WaitNotReady(ctx context.Context) error {
	return a.wait(ctx, func() chan struct{} { return a.notReady })
}

func (a *gatedAdapter) Paused() (bool, string, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.ready:
		return false, "", time.Time{}
	default:
		return true, "logged_out", time.Time{}
	}
}

func (a *gatedAdapter) NewChannelMessageID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq++
	return fmt.Sprintf("WA%04d", a.seq)
}

func (a *gatedAdapter) Send(ctx context.Context, m adapters.Outbound) (string, error) {
	a.mu.Lock()
	a.sends = append(a.sends, m)
	n, hook := len(a.sends), a.onSend
	a.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, n); err != nil {
			return "", err
		}
	}
	a.sent <- m
	return m.ChannelMessageID, nil
}

func (a *gatedAdapter) Run(ctx context.Context, _ adapters.Sink) error {
	a.mu.Lock()
	runs := a.runs
	a.mu.Unlock()
	if runs != nil {
		runs <- struct{}{}
	}
	<-ctx.Done()
	return nil
}

func (a *gatedAdapter) calls() []adapters.Outbound {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]adapters.Outbound(nil), a.sends...)
}

// runGated runs a Runner over ad on the system's bus and store until the test ends.
func (s *system) runGated(ad adapters.Adapter, ackWait time.Duration) {
	s.t.Helper()
	s.runLeased(ad, ackWait, nil)
}

// runLeased runs a Runner over ad, with lease when not nil, until the test ends or stop is
// called; it returns the runner and stop.
func (s *system) runLeased(ad adapters.Adapter, ackWait time.Duration, lease adapters.Leaser) (*adapters.Runner, func()) {
	s.t.Helper()
	r, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Adapter: ad,
		Store: s.db, Bus: s.bus, Sealer: s.kr, AckWait: ackWait, MaxDeliver: 3, Lease: lease,
		BackOff: []time.Duration{10 * time.Millisecond}, Log: zerolog.New(s.logs),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					s.t.Errorf("runner: %v", err)
				}
			case <-time.After(30 * time.Second):
				s.t.Error("the runner did not stop")
			}
		})
	}
	s.t.Cleanup(stop)
	return r, stop
}

// TestRunnerGate: while the account is paused, dispatches wait in the stream and no attempt is
// used; a send that finds the account paused mid-way waits for it within the same delivery.
func TestRunnerGate(t *testing.T) {
	tests := []struct {
		name       string
		readyFirst bool
		messages   int
		// pauseOnFirstSend: the first Send pauses the account and fails as a paused account does
		// (retryable, asking for minutes); the test resumes the account once it has seen that.
		pauseOnFirstSend bool
	}{
		{name: "paused from the start: dispatches wait, then all go out on their first delivery", messages: 20},
		{name: "paused during a send: the same delivery waits and sends again", readyFirst: true, messages: 1, pauseOnFirstSend: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSystem(t, options{noRunner: true})
			ad := newGatedAdapter(tt.readyFirst)
			failed := make(chan struct{})
			if tt.pauseOnFirstSend {
				ad.onSend = func(_ context.Context, n int) error {
					if n != 1 {
						return nil
					}
					ad.setReady(false)
					close(failed)
					return adapters.RetryAfter(5*time.Minute, errors.New("the WhatsApp account is not linked"))
				}
			}
			s.runGated(ad, 0)
			var ids []string
			for i := range tt.messages {
				m := s.accept(number, fmt.Sprintf("message %d", i))
				ids = append(ids, m.ID)
			}
			if !tt.readyFirst {
				for _, id := range ids {
					s.waitStatus(id, gateway.StatusQueued)
				}
				if n := len(ad.calls()); n != 0 {
					t.Fatalf("%d sends while the account was paused", n)
				}
				ad.setReady(true)
			}
			if tt.pauseOnFirstSend {
				select {
				case <-failed:
				case <-time.After(30 * time.Second):
					t.Fatal("the first send never happened")
				}
				ad.setReady(true)
			}
			for _, id := range ids {
				s.waitStatus(id, gateway.StatusSent)
			}
			perMessage := map[string]int{}
			for _, c := range ad.calls() {
				if c.Attempt != 1 {
					t.Errorf("%s sent on delivery %d: an attempt was used up while paused", c.MessageID, c.Attempt)
				}
				perMessage[c.MessageID]++
			}
			want := 1
			if tt.pauseOnFirstSend {
				want = 2 // the failed try and the send, both in delivery 1
			}
			for _, id := range ids {
				if perMessage[id] != want {
					t.Errorf("%s: %d Send calls, want %d", id, perMessage[id], want)
				}
			}
			if len(ad.sent) != len(ids) {
				t.Errorf("%d messages went out, want %d", len(ad.sent), len(ids))
			}
		})
	}
}

// TestRunnerSendOutlastsAckWait: a send that waits (pacing) for three ack waits keeps its
// delivery: no redelivery, no canceled context, one send.
func TestRunnerSendOutlastsAckWait(t *testing.T) {
	const ackWait = 300 * time.Millisecond
	s := newSystem(t, options{noRunner: true})
	ad := newGatedAdapter(true)
	ad.onSend = func(ctx context.Context, _ int) error {
		pacing := time.NewTimer(3 * ackWait) // the account's pacing holds the send back
		defer pacing.Stop()
		select {
		case <-pacing.C:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("the send's context ended while it waited: %w", context.Cause(ctx))
		}
	}
	s.runGated(ad, ackWait)
	m := s.accept(number, "slow one")
	s.waitStatus(m.ID, gateway.StatusSent)
	calls := ad.calls()
	if len(calls) != 1 || calls[0].Attempt != 1 {
		t.Fatalf("sends: %+v", calls)
	}
}

// TestRunnerLease: two runners of one account (two replicas) on the real bus: only the holder of
// the account's lease runs the adapter and sends; the other is on standby (and ready for
// /readyz). When the holder stops, the other takes the account over and sends.
func TestRunnerLease(t *testing.T) {
	s := newSystem(t, options{noRunner: true})
	adA, adB := newGatedAdapter(true), newGatedAdapter(true)
	adA.runs, adB.runs = make(chan struct{}, 4), make(chan struct{}, 4)
	runA, stopA := s.runLeased(adA, 0, s.bus.Leases(time.Second, "replica-a"))
	select {
	case <-adA.runs:
	case <-time.After(30 * time.Second):
		t.Fatal("the first runner never ran its adapter")
	}
	runB, _ := s.runLeased(adB, 0, s.bus.Leases(time.Second, "replica-b"))
	first := s.accept(number, "to the holder")
	s.waitStatus(first.ID, gateway.StatusSent)
	if len(adA.calls()) != 1 || len(adB.calls()) != 0 {
		t.Fatalf("sends: holder %d, standby %d", len(adA.calls()), len(adB.calls()))
	}
	if runA.Standby() || !runB.Standby() {
		t.Errorf("standby: a %v, b %v", runA.Standby(), runB.Standby())
	}
	if err := runB.Ready(t.Context()); err != nil {
		t.Errorf("the standby replica is not ready: %v", err)
	}
	select {
	case <-adB.runs:
		t.Fatal("the standby replica ran the adapter")
	default:
	}

	stopA()
	select {
	case <-adB.runs:
	case <-time.After(30 * time.Second):
		t.Fatal("the standby replica never took over")
	}
	second := s.accept(number, "to the new holder")
	s.waitStatus(second.ID, gateway.StatusSent)
	if len(adA.calls()) != 1 || len(adB.calls()) != 1 || runB.Standby() {
		t.Fatalf("after the takeover: a %d sends, b %d sends, b standby %v", len(adA.calls()), len(adB.calls()), runB.Standby())
	}
}
