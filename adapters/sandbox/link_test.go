package sandbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters/sandbox"
	"github.com/switchboard-gateway/switchboard/gateway"
)

func TestSimulatedLink(t *testing.T) {
	tests := []struct {
		name      string
		phone     string
		wantSteps int
		wantPhone string
	}{
		{"qr codes", "", 2, "+15******0000"},
		{"pairing code", "+4915112345678", 1, gateway.MaskIdentifier("+4915112345678")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, t.TempDir(), sandbox.Config{LinkStep: 3 * time.Second})
			steps := make(chan sandbox.LinkStep, 10)
			type result struct {
				phone string
				err   error
			}
			done := make(chan result, 1)
			go func() {
				p, err := e.sb.Link(context.Background(), tc.phone, func(s sandbox.LinkStep) { steps <- s })
				done <- result{p, err}
			}()
			for i := range tc.wantSteps {
				s := <-steps
				if s.PairingCode != (tc.phone != "") || s.Code == "" || s.For != 3*time.Second {
					t.Errorf("step %d: %+v", i, s)
				}
				if ds := e.fireWhenScheduled(1); len(ds) != 1 || ds[0] != 3*time.Second {
					t.Errorf("step %d shown for %v", i, ds)
				}
			}
			res := <-done
			if res.err != nil || res.phone != tc.wantPhone {
				t.Fatalf("Link = %q, %v", res.phone, res.err)
			}
			if len(steps) != 0 {
				t.Errorf("%d steps after success", len(steps))
			}
		})
	}
}

func TestSimulatedLinkCancelled(t *testing.T) {
	e := start(t, t.TempDir(), sandbox.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.sb.Link(ctx, "", func(sandbox.LinkStep) {})
		done <- err
	}()
	e.fireWhenScheduled(1) // the first code was shown for its time; the second is never scanned
	cancel()
	err := <-done
	if gateway.ErrorCode(err) != gateway.ETimeout || !strings.Contains(gateway.ErrorMessage(err), "cancelled") {
		t.Fatalf("err = %v", err)
	}
}
