package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/switchboard-gateway/switchboard/adapters"
)

// Run keeps the account connected until ctx ends, reporting receipts and inbound messages to
// sink. It reconnects with capped, jittered backoff; on logout it waits for a new link; on a
// temporary ban it waits for the ban to expire; on an outdated client it waits for an upgrade.
func (a *Adapter) Run(ctx context.Context, sink adapters.Sink) error {
	a.mu.Lock()
	if a.sink != nil {
		a.mu.Unlock()
		return errors.New("whatsapp: Run called twice")
	}
	a.sink, a.runCtx = sink, ctx
	a.mu.Unlock()
	defer a.shutdown()

	if err := a.cfg.Store.Warm(ctx); err != nil {
		return fmt.Errorf("whatsapp: device store: %w", err)
	}
	a.restoreBan(ctx)
	for ctx.Err() == nil {
		a.step(ctx)
	}
	return nil
}

// restoreBan keeps honouring a ban recorded before a restart.
func (a *Adapter) restoreBan(ctx context.Context) {
	s, ok, err := a.cfg.Store.LoadState(ctx)
	if err != nil || !ok || s.State != string(StateBanned) || !s.BannedUntil.After(a.clock.Now()) {
		return
	}
	a.setState(StateBanned, s.Detail, func(st *Status) { st.BannedUntil = s.BannedUntil })
}

// shutdown disconnects and leaves the adapter ready for another Run (the runner runs it again when
// this process takes the account's lease back).
func (a *Adapter) shutdown() {
	a.mu.Lock()
	cli, cancel := a.client, a.connCancel
	a.connCancel = nil
	a.sink, a.runCtx = nil, nil
	a.mu.Unlock()
	if cli != nil {
		cli.Disconnect()
	}
	if cancel != nil {
		cancel()
	}
	switch a.Status().State {
	case StateConnected, StateConnecting, StateReplaced:
		a.setState(StateDisconnected, "stopped", func(s *Status) { s.Attempt = 0 })
	}
}

// sleep waits for d on the adapter's clock, a wake-up, or ctx; it reports whether d passed.
func (a *Adapter) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	select {
	case <-a.clock.After(d):
		return true
	case <-wake:
		return false
	case <-ctx.Done():
		return false
	}
}

// step runs one turn of the connection state machine.
func (a *Adapter) step(ctx context.Context) {
	// The state is read fresh below, so a wake-up queued before now carries no news.
	select {
	case <-a.wake:
	default:
	}
	a.mu.Lock()
	st, cli, drop := a.status, a.client, a.forceDrop
	a.forceDrop = false
	a.mu.Unlock()

	if drop && cli != nil {
		a.dropConnection()
		a.setState(StateDisconnected, "keep-alive timed out", nil)
		return
	}
	switch st.State {
	case StateUnlinked, StateLoggedOut:
		a.dropClient()
		if a.loadDevice(ctx) {
			return
		}
		// Wait for a link in this process, or look again later for one made by another process.
		select {
		case <-a.relinked:
		case <-a.clock.After(a.cfg.LinkPoll):
		case <-ctx.Done():
		}
	case StateBanned:
		a.dropConnection()
		if d := st.BannedUntil.Sub(a.clock.Now()); d > 0 && !a.sleep(ctx, d, a.wake) {
			return
		}
		if a.Status().State == StateBanned {
			a.setState(StateDisconnected, "temporary ban expired", func(s *Status) { s.Attempt = 0 })
		}
	case StateOutdated:
		a.dropConnection()
		select { // only a restart with a newer build helps; a relink retries too
		case <-a.relinked:
			a.setState(StateDisconnected, "", nil)
		case <-ctx.Done():
		}
	case StateDisconnected, StateReplaced:
		if cli == nil {
			if !a.loadDevice(ctx) {
				a.setState(StateUnlinked, "", nil)
			}
			return
		}
		n := st.Attempt
		if st.State == StateReplaced {
			n = 1 << 10 // another connection took the device: come back only after the longest wait
		}
		if n > 0 || st.State == StateReplaced {
			if !a.sleep(ctx, a.cfg.Backoff.Delay(n-1, a.rnd), a.wake) {
				return
			}
		}
		a.connect(ctx, cli)
	case StateConnecting:
		if !a.sleep(ctx, a.cfg.LoginTimeout, a.wake) {
			return
		}
		if a.Status().State == StateConnecting {
			a.dropConnection()
			a.setState(StateDisconnected, "login timed out", func(s *Status) { s.Attempt++ })
		}
	case StateConnected:
		select {
		case <-a.wake:
		case <-ctx.Done():
		}
	}
}

// connect dials once. The connection lives until dropConnection or ctx ends; only the dial and
// handshake are bounded by ConnectTimeout.
func (a *Adapter) connect(ctx context.Context, cli LinkClient) {
	a.setState(StateConnecting, "", nil)
	connCtx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	a.connCancel = cancel
	a.mu.Unlock()
	err := dialWithin(connCtx, cancel, a.cfg.ConnectTimeout, cli.Connect)
	if err != nil {
		cancel()
		a.mu.Lock()
		a.connCancel = nil
		a.mu.Unlock()
		a.log.Warn().Err(err).Msg("could not connect to WhatsApp")
		if a.Status().State == StateConnecting { // not already moved on by an event (ban, logout …)
			a.setState(StateDisconnected, "connect failed", func(s *Status) { s.Attempt++ })
		}
	}
}

// dialWithin runs connect(ctx) and cancels ctx when it has not returned within d: the dial of an
// unreachable network gives up instead of hanging.
func dialWithin(ctx context.Context, cancel context.CancelFunc, d time.Duration, connect func(context.Context) error) error {
	done := make(chan struct{})
	timedOut := make(chan struct{})
	go func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			close(timedOut)
			cancel()
		case <-done:
		}
	}()
	err := connect(ctx)
	close(done)
	select {
	case <-timedOut:
		if err == nil {
			err = context.DeadlineExceeded
		}
		return fmt.Errorf("no answer from WhatsApp within %s: %w", d, err)
	default:
	}
	return err
}

func (a *Adapter) dropConnection() {
	a.mu.Lock()
	cli, cancel := a.client, a.connCancel
	a.connCancel = nil
	a.mu.Unlock()
	if cli != nil && cli.IsConnected() {
		cli.Disconnect()
	}
	if cancel != nil {
		cancel()
	}
}

// dropClient forgets the current client (after a logout its device is gone).
func (a *Adapter) dropClient() {
	a.dropConnection()
	a.mu.Lock()
	cli, id := a.client, a.handlerID
	a.client, a.device = nil, nil
	a.gen++
	a.mu.Unlock()
	if cli != nil {
		go cli.RemoveEventHandler(id) // not from inside a handler: whatsmeow would deadlock
	}
}

// loadDevice installs a client for the stored device; false when the account is not linked.
func (a *Adapter) loadDevice(ctx context.Context) bool {
	dev, err := a.cfg.Store.Device(ctx)
	if err != nil {
		a.log.Error().Err(err).Msg("could not load the WhatsApp device")
		return false
	}
	if dev == nil {
		return false
	}
	a.install(dev)
	a.setState(StateDisconnected, "", func(s *Status) { s.Attempt = 0 })
	return true
}

func (a *Adapter) install(dev *store.Device) {
	cli := a.cfg.NewClient(dev)
	a.mu.Lock()
	a.gen++
	gen := a.gen
	a.client, a.device = cli, dev
	a.mu.Unlock()
	id := cli.AddEventHandler(a.handlerFor(gen))
	a.mu.Lock()
	a.handlerID = id
	a.mu.Unlock()
}

// stableAfter is how long a connection must last for its loss to reset the backoff.
const stableAfter = time.Minute

// onConnEvent moves the state machine on whatsmeow's connection events.
func (a *Adapter) onConnEvent(evt any) {
	now := a.clock.Now()
	switch e := evt.(type) {
	case *events.Connected:
		// Attempt is not reset here: a connection that drops right after login counts as a failed
		// attempt, so a flapping account backs off instead of reconnecting in a loop.
		a.setState(StateConnected, "", func(s *Status) { s.LastConnected = now })
	case *events.Disconnected:
		a.mu.Lock()
		var s Status
		var changed bool
		switch a.status.State {
		case StateConnected:
			stable := now.Sub(a.status.Since) >= stableAfter
			s, changed = a.setStateLocked(StateDisconnected, "connection lost", func(s *Status) {
				if stable {
					s.Attempt = 0
				} else {
					s.Attempt++
				}
			})
		case StateConnecting:
			s, changed = a.setStateLocked(StateDisconnected, "connection lost during login", func(s *Status) { s.Attempt++ })
		}
		a.mu.Unlock()
		if changed {
			a.persist(s)
		}
	case *events.KeepAliveTimeout:
		if e.ErrorCount >= a.cfg.KeepAliveMaxErrors {
			a.mu.Lock()
			if a.status.State == StateConnected {
				a.forceDrop = true
				select {
				case a.wake <- struct{}{}:
				default:
				}
			}
			a.mu.Unlock()
		}
	case *events.LoggedOut:
		// The device is dead: destroy its keys before anything looks for a device again
		// (whatsmeow deletes it too, in the background). Queued messages wait in the stream.
		a.mu.Lock()
		dev := a.device
		a.mu.Unlock()
		if dev != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := a.cfg.Store.DeleteDevice(ctx, dev); err != nil {
				a.log.Error().Err(err).Msg("could not delete the logged-out device")
			}
			cancel()
		}
		a.setState(StateLoggedOut, "unlinked from the phone ("+e.Reason.String()+"): relink with `switchboard whatsapp link`", nil)
	case *events.StreamReplaced:
		a.setState(StateReplaced, "another connection is using this device", nil)
	case *events.TemporaryBan:
		d := e.Expire
		if d <= 0 {
			d = a.cfg.BanFallback
		}
		a.setState(StateBanned, e.Code.String(), func(s *Status) { s.BannedUntil = now.Add(d) })
	case *events.ClientOutdated:
		a.setState(StateOutdated, "WhatsApp rejected the client version (405): upgrade Switchboard to a build with a newer go.mau.fi/whatsmeow and restart", nil)
	case *events.ConnectFailure:
		a.setState(StateDisconnected, "connect failure "+e.Reason.String(), func(s *Status) { s.Attempt++ })
	case *events.CATRefreshError, *events.StreamError:
		a.setState(StateDisconnected, fmt.Sprintf("%T", evt)[8:], func(s *Status) { s.Attempt++ })
	}
}
