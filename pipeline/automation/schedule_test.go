package automation

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// fakeClock is a Clock the test moves; it announces every timer the scheduler sets.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
	set    chan time.Time // the deadline of each timer, as it is set
}

type fakeTimer struct {
	at time.Time
	c  chan time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := fakeTimer{at: f.now.Add(d), c: make(chan time.Time, 1)}
	f.timers = append(f.timers, t)
	f.set <- t.at
	return t.c, func() bool { return true }
}

// advance moves the clock to t and fires the timers that are due.
func (f *fakeClock) advance(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
	kept := f.timers[:0]
	for _, tm := range f.timers {
		if !tm.at.After(t) {
			tm.c <- t
			continue
		}
		kept = append(kept, tm)
	}
	f.timers = kept
}

// TestScheduleWeekdaysInBerlin: "0 9 * * MON-FRI" in Europe/Berlin fires at 09:00 Berlin on a
// Friday, next on Monday (not on Saturday), and once only across a restart; an occurrence missed
// while down is caught up once.
func TestScheduleWeekdaysInBerlin(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(day, hour, min int) time.Time { return time.Date(2026, 11, day, hour, min, 0, 0, berlin) }
	dir := t.TempDir()
	fired := openStore(t, dir) // the fired-at record is in the store
	rules := `
      - name: weekday-reminder
        when: {schedule: {cron: "0 9 * * MON-FRI", timezone: Europe/Berlin}}
        do: [{send: {channel: whatsapp, to: "+4915112345678", text: "Reminder for {{.At.Format \"Mon 2 Jan 15:04\"}}"}}]
`
	in := &fakeIntake{byKey: map[string]*gateway.Message{}, optedOut: map[string]bool{}}
	outcomes := make(chan Outcome, 10)
	e := New(Config{Intake: in, Log: zerolog.Nop(), OnAction: func(o Outcome) { outcomes <- o }}, parse(t, rules))

	run := func(clock *fakeClock) (stop func()) {
		s, err := NewScheduler(SchedulerConfig{Engine: e, Fired: fired, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	expectWait := func(clock *fakeClock, want time.Time) {
		t.Helper()
		select {
		case got := <-clock.set:
			if !got.Equal(want) {
				t.Fatalf("scheduler waits until %s, want %s", got.In(berlin), want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the scheduler set no timer")
		}
		if len(outcomes) != 0 {
			t.Fatalf("unexpected firing: %+v", <-outcomes)
		}
	}
	expectFire := func(want string) {
		t.Helper()
		select {
		case o := <-outcomes:
			if o.Result != "accepted" || o.Text != want {
				t.Fatalf("outcome %+v, want text %q", o, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no firing")
		}
	}

	// Thursday 2026-11-19 20:00 Berlin: the next occurrence is Friday 09:00 Berlin (08:00 UTC).
	clock := &fakeClock{now: at(19, 20, 0), set: make(chan time.Time, 10)}
	stop := run(clock)
	expectWait(clock, at(20, 9, 0))
	clock.advance(at(20, 9, 0))
	expectFire("Reminder for Fri 20 Nov 09:00")
	// Next: Monday, not Saturday or Sunday.
	expectWait(clock, at(23, 9, 0))
	stop()

	// A restart on Friday 09:00:30 fires nothing again.
	clock = &fakeClock{now: at(20, 9, 0).Add(30 * time.Second), set: make(chan time.Time, 10)}
	stop = run(clock)
	expectWait(clock, at(23, 9, 0))
	stop()

	// Down over Monday 09:00, up at 10:15: Monday's occurrence fires once, then Tuesday's is next.
	clock = &fakeClock{now: at(23, 10, 15), set: make(chan time.Time, 10)}
	stop = run(clock)
	expectFire("Reminder for Mon 23 Nov 09:00")
	expectWait(clock, at(24, 9, 0))
	stop()

	if len(in.accepted) != 2 {
		t.Fatalf("%d messages sent, want 2", len(in.accepted))
	}
	if last, ok, _ := openStore(t, dir).LastFired(t.Context(), "acme", "weekday-reminder"); !ok || !last.Equal(at(23, 9, 0)) {
		t.Fatalf("fired-at record %s %v", last, ok)
	}
}

// fakeLease grants the lease at once; lose ends the current holding.
type fakeLease struct {
	mu    sync.Mutex
	names []string
	lose  context.CancelFunc
	held  chan struct{}
}

func (l *fakeLease) Hold(ctx context.Context, name string, fn func(context.Context) error) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.mu.Lock()
	l.names = append(l.names, name)
	l.lose = cancel
	l.mu.Unlock()
	l.held <- struct{}{}
	return fn(lctx)
}

// TestScheduleRunsUnderTheLease: the scheduler works while it holds the lease and asks for it
// again when it is lost.
func TestScheduleRunsUnderTheLease(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	in := &fakeIntake{byKey: map[string]*gateway.Message{}, optedOut: map[string]bool{}}
	e := New(Config{Intake: in, Log: zerolog.Nop()}, parse(t, `
      - name: daily
        when: {schedule: {cron: "@daily", timezone: Europe/Berlin}}
        do: [{send: {channel: teams, to: "teams:channel:team1/chan1", text: "good morning"}}]
`))
	clock := &fakeClock{now: time.Date(2026, 11, 20, 12, 0, 0, 0, berlin), set: make(chan time.Time, 10)}
	lease := &fakeLease{held: make(chan struct{}, 10)}
	s, err := NewScheduler(SchedulerConfig{Engine: e, Fired: openStore(t, t.TempDir()), Clock: clock, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	<-lease.held
	<-clock.set // waiting for midnight, under the lease
	lease.mu.Lock()
	lease.lose()
	lease.mu.Unlock()
	<-lease.held // asked again
	<-clock.set
	cancel()
	<-done
	if len(lease.names) != 2 || lease.names[0] != LeaseName {
		t.Fatalf("lease holds %v", lease.names)
	}
}
