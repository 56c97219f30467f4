package automation

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
)

// TestScheduleFiresOnOneReplica: two gateways on one store and one bus. Only the holder of the
// scheduler lease fires; when it stops, the other takes over and, reading the fired-at record
// from the store, does not fire the same occurrence again.
func TestScheduleFiresOnOneReplica(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	at := func(day, hour int) time.Time { return time.Date(2026, 11, day, hour, 0, 0, 0, berlin) }
	b, err := bus.Open(t.Context(), bus.Config{Embedded: &bus.Embedded{StoreDir: t.TempDir(), StoreKey: "test-store-key-0123456789abcdef0123456789abcdef"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	dir := t.TempDir()
	rules := `
      - name: weekday-reminder
        when: {schedule: {cron: "0 9 * * MON-FRI", timezone: Europe/Berlin}}
        do: [{send: {channel: whatsapp, to_list: reminders, template_name: reminder}}]
`
	outcomes := make(chan Outcome, 10)
	type replica struct {
		clock *fakeClock
		stop  func()
	}
	start := func(name string) *replica {
		in := &fakeIntake{byKey: map[string]*gateway.Message{}, optedOut: map[string]bool{}}
		st := openStore(t, dir) // its own connection to the shared database
		e := New(Config{Intake: in, Store: st, Log: zerolog.Nop(), OnAction: func(o Outcome) { outcomes <- o }}, parse(t, rules))
		r := &replica{clock: &fakeClock{now: at(20, 8), set: make(chan time.Time, 10)}}
		s, err := NewScheduler(SchedulerConfig{Engine: e, Fired: st, Clock: r.clock, Lease: b.Leases(0, name)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		r.stop = func() { cancel(); <-done }
		t.Cleanup(r.stop)
		return r
	}
	a, c := start("replica-a"), start("replica-c")

	// One of them holds the lease and waits for Friday 09:00; the other waits for the lease.
	var holder, other *replica
	select {
	case got := <-a.clock.set:
		holder, other = a, c
		if !got.Equal(at(20, 9)) {
			t.Fatalf("waits until %s", got)
		}
	case got := <-c.clock.set:
		holder, other = c, a
		if !got.Equal(at(20, 9)) {
			t.Fatalf("waits until %s", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no replica took the scheduler lease")
	}
	other.clock.advance(at(20, 9))
	holder.clock.advance(at(20, 9))
	for range 2 { // one message per member of the list
		select {
		case o := <-outcomes:
			if o.Result != "accepted" {
				t.Fatalf("outcome %+v", o)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the holder did not fire")
		}
	}
	if got := <-holder.clock.set; !got.Equal(at(23, 9)) {
		t.Fatalf("holder next waits until %s", got)
	}

	// The holder stops; the other takes the lease and knows Friday's occurrence has fired.
	holder.stop()
	select {
	case got := <-other.clock.set:
		if !got.Equal(at(23, 9)) {
			t.Fatalf("the new holder waits until %s, want Monday 09:00", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the other replica did not take over")
	}
	if len(outcomes) != 0 {
		t.Fatalf("fired again on the other replica: %+v", <-outcomes)
	}
}
