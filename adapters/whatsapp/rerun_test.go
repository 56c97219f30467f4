package whatsapp

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/whatsmeow/store"
)

// TestRunAgainAfterStop: the runner stops the adapter when this process loses the account's
// lease and runs it again when it takes the lease back; the second Run connects again.
func TestRunAgainAfterStop(t *testing.T) {
	st := newDeviceStore(t)
	(&harness{t: t, store: st}).saveDevice("4915100000001")
	clock := NewFakeClock(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC))
	states := make(chan Status, 64)
	a, err := New(Config{
		Tenant: "acme", Account: "sales", Store: st, Clock: clock, Log: zerolog.Nop(),
		NewClient: func(dev *store.Device) LinkClient { return newFakeClient(dev, clock) },
		OnStatus:  func(s Status) { states <- s },
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(want State) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case s := <-states:
				if s.State == want {
					return
				}
			case <-deadline:
				t.Fatalf("state %s never reported; now %+v", want, a.Status())
			}
		}
	}
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx, &fakeSink{}) }()
		waitFor(StateConnected)
		if err := a.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("round %d: Run: %v", round, err)
		}
		waitFor(StateDisconnected)
		if paused, _, _ := a.Paused(); !paused {
			t.Fatalf("round %d: a stopped adapter says it can send", round)
		}
	}
}
