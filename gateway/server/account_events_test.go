package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway/server"
)

// switchableAccount is a gated channel account that is ready until lost is closed; readied
// hears each time the runner found it ready.
type switchableAccount struct {
	lost    chan struct{}
	readied chan struct{}
}

func (a *switchableAccount) NewChannelMessageID() string { return "" }
func (a *switchableAccount) Send(context.Context, adapters.Outbound) (string, error) {
	return "", errors.New("not used")
}
func (a *switchableAccount) Run(ctx context.Context, _ adapters.Sink) error { <-ctx.Done(); return nil }
func (a *switchableAccount) WaitReady(ctx context.Context) error {
	select {
	case <-a.lost:
		<-ctx.Done()
		return ctx.Err()
	default:
		select {
		case a.readied <- struct{}{}:
		default:
		}
		return nil
	}
}
func (a *switchableAccount) WaitNotReady(ctx context.Context) error {
	select {
	case <-a.lost:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (a *switchableAccount) Paused() (bool, string, time.Time) {
	select {
	case <-a.lost:
		return true, "logged_out", time.Time{}
	default:
		return false, "", time.Time{}
	}
}

// TestAccountStateReachesEvents: an account that stops being able to send (a WhatsApp logout)
// is announced as account.state on GET /v1/events, with the reason, to its tenant.
func TestAccountStateReachesEvents(t *testing.T) {
	wa := &switchableAccount{lost: make(chan struct{}), readied: make(chan struct{}, 1)}
	g := startGatewayWith(t, t.TempDir(), whatsmeowTenant, func(o *server.Options) {
		o.Drivers = map[string]server.DriverFactory{
			config.DriverWhatsMeow: func(context.Context, server.DriverEnv) (adapters.Adapter, error) { return wa, nil },
		}
	})
	c := g.events("acme", "?type=account.state", "")
	select {
	case <-wa.readied: // the runner takes dispatches: losing the account now is a change
	case <-time.After(30 * time.Second):
		t.Fatal("the runner never found the account ready")
	}
	close(wa.lost)
	ev := c.next()
	if strings.Contains(ev.data, `"state":"ready"`) { // announced after the client connected
		ev = c.next()
	}
	if ev.typ != "account.state" || !strings.Contains(ev.data, `"channel":"whatsapp","account":"wa","state":"paused","reason":"logged_out"`) {
		t.Fatalf("event %q: %s", ev.typ, ev.data)
	}
}
