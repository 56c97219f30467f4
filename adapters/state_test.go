package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// TestRunnerReportsAccountState: a gated account that becomes ready, then cannot send, is
// reported each time through OnState (the account.state event), with the reason it paused.
func TestRunnerReportsAccountState(t *testing.T) {
	s := newSystem(t, options{noRunner: true})
	type state struct {
		ready  bool
		reason string
	}
	states := make(chan state, 8)
	ad := newGatedAdapter(false)
	r, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Adapter: ad,
		Store: s.db, Bus: s.bus, Sealer: s.kr, MaxDeliver: 3, Log: zerolog.Nop(),
		OnState: func(_ context.Context, ready bool, reason string, _ time.Time) { states <- state{ready, reason} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	}()
	next := func() state {
		t.Helper()
		select {
		case st := <-states:
			return st
		case <-time.After(30 * time.Second):
			t.Fatal("no account state reported")
		}
		return state{}
	}
	ad.setReady(true)
	if st := next(); !st.ready {
		t.Fatalf("after it became ready: %+v", st)
	}
	ad.setReady(false)
	if st := next(); st.ready || st.reason != "logged_out" {
		t.Fatalf("after it stopped being ready: %+v", st)
	}
}
