// Package whatsapp is the WhatsApp channel adapter, on go.mau.fi/whatsmeow (a linked companion
// device). It sends with pre-generated message ids and per-account pacing, receives without loss
// (SynchronousAck, the decrypted-event buffer, and a handler that reports failure when the sink
// did not take the event), turns receipts into statuses, and keeps the connection alive with a
// small state machine: capped, jittered reconnects; a pause on logout, ban or an outdated client.
//
// The adapter talks to whatsmeow through the narrow Client interface, so tests run it against a
// fake fed with whatsmeow's own event types. Device state lives in store/wastore, encrypted.
package whatsapp

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store/wastore"
)

// DeviceStore is what the adapter needs of the account's device store (*wastore.Container).
type DeviceStore interface {
	Device(ctx context.Context) (*store.Device, error)
	NewDevice() *store.Device
	DeleteAll(ctx context.Context) error
	DeleteDevice(ctx context.Context, dev *store.Device) error
	LIDs() store.LIDStore
	SaveState(ctx context.Context, s wastore.AccountState) error
	LoadState(ctx context.Context) (wastore.AccountState, bool, error)
	Warm(ctx context.Context) error
}

var _ DeviceStore = (*wastore.Container)(nil)

// Config configures one account's adapter.
type Config struct {
	Tenant  string
	Account string
	Store   DeviceStore
	// NewClient makes the whatsmeow client of a device; default NewWhatsmeowClient(ClientOptions{}).
	NewClient ClientFactory

	Pacing  Pacing
	Backoff Backoff
	// KeepAliveMaxErrors: after this many consecutive keep-alive timeouts the connection is
	// dropped and redialled. Default 3.
	KeepAliveMaxErrors int
	// ConnectTimeout bounds one dial and handshake; LoginTimeout the wait for the login after it.
	// Defaults 20s and 60s.
	ConnectTimeout time.Duration
	LoginTimeout   time.Duration
	// LinkPoll: while unlinked or logged out, how often to look for a device linked by another
	// process (`switchboard whatsapp link` while the server runs). Default 10s.
	LinkPoll time.Duration
	// SinkTimeout bounds one report to the sink from the event handler. Default 30s.
	SinkTimeout time.Duration
	// BanFallback is the pause after a temporary ban that names no expiry. Default 24h.
	BanFallback time.Duration

	Media      MediaLimits
	HTTPClient *http.Client // fetches media by URL; default a client with a 60s timeout

	Clock Clock      // default the real clock
	Rand  *rand.Rand // jitter source; default math/rand/v2's global one
	Log   zerolog.Logger
	// OnStatus is called after every state change (the server stores, logs and shows it).
	OnStatus func(Status)
}

// Adapter is one WhatsApp account. It implements adapters.Adapter.
type Adapter struct {
	cfg   Config
	clock Clock
	pace  *pacer
	log   zerolog.Logger

	randMu sync.Mutex
	rnd    func(time.Duration) time.Duration

	mu         sync.Mutex
	status     Status
	client     LinkClient
	device     *store.Device
	gen        uint64 // client generation: events of a replaced client are ignored
	handlerID  uint32
	connCancel context.CancelFunc
	ready      chan struct{} // closed while connected
	notReady   chan struct{} // closed while not connected
	wake       chan struct{} // pokes the connection loop
	relinked   chan struct{} // a link finished in this process
	sink       adapters.Sink
	runCtx     context.Context
	forceDrop  bool

	groups map[string]groupSize // group user → member count (GroupSize), under mu
	// phoneSaved is when LastSeenPhone was last written to the store (writes are spaced out).
	phoneSaved time.Time

	known   sync.Map // phone user → struct{}: numbers that wrote to the account
	onWA    sync.Map // phone user → types.JID: numbers confirmed on WhatsApp
	linking sync.Mutex
}

var (
	_ adapters.Adapter = (*Adapter)(nil)
	_ adapters.Gate    = (*Adapter)(nil) // the runner consumes dispatches only while the account can send
)

// New returns the adapter of one account. It does not connect: Run does.
func New(cfg Config) (*Adapter, error) {
	if cfg.Tenant == "" || cfg.Account == "" {
		return nil, gateway.Errorf(gateway.EMissingField, "whatsapp: tenant and account are required")
	}
	if cfg.Store == nil {
		return nil, gateway.Errorf(gateway.EMissingField, "whatsapp: a device store is required")
	}
	if cfg.NewClient == nil {
		cfg.NewClient = NewWhatsmeowClient(ClientOptions{})
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.KeepAliveMaxErrors <= 0 {
		cfg.KeepAliveMaxErrors = 3
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 20 * time.Second
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = 60 * time.Second
	}
	if cfg.LinkPoll <= 0 {
		cfg.LinkPoll = 10 * time.Second
	}
	if cfg.SinkTimeout <= 0 {
		cfg.SinkTimeout = 30 * time.Second
	}
	if cfg.BanFallback <= 0 {
		cfg.BanFallback = 24 * time.Hour
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	}
	cfg.Media = cfg.Media.withDefaults()
	a := &Adapter{
		cfg:      cfg,
		clock:    cfg.Clock,
		log:      cfg.Log.With().Str("channel", "whatsapp").Str("tenant", cfg.Tenant).Str("account", cfg.Account).Logger(),
		ready:    make(chan struct{}),
		notReady: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		relinked: make(chan struct{}, 1),
		groups:   map[string]groupSize{},
	}
	base := randFunc(cfg.Rand)
	a.rnd = func(max time.Duration) time.Duration {
		a.randMu.Lock()
		defer a.randMu.Unlock()
		return base(max)
	}
	a.pace = newPacer(cfg.Clock, cfg.Pacing, nil)
	a.pace.randDur = a.rnd
	a.status = Status{Tenant: cfg.Tenant, Account: cfg.Account, State: StateUnlinked, Since: cfg.Clock.Now()}
	close(a.notReady)
	return a, nil
}

// Status returns the account's current state.
func (a *Adapter) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// Paused reports whether the account cannot send now and why. The runner should stop taking
// work from the dispatch stream while paused (WaitReady), so queued messages wait in the stream
// instead of burning their delivery attempts.
func (a *Adapter) Paused() (paused bool, reason string, until time.Time) {
	s := a.Status()
	if s.CanSend() {
		return false, "", time.Time{}
	}
	return true, string(s.State) + pausedDetail(s), s.BannedUntil
}

func pausedDetail(s Status) string {
	if s.Detail == "" {
		return ""
	}
	return ": " + s.Detail
}

// WaitReady blocks until the account is connected and may send, or ctx ends. With WaitNotReady
// it lets the runner consume its dispatch subject only while the account can send.
func (a *Adapter) WaitReady(ctx context.Context) error {
	a.mu.Lock()
	ready := a.ready
	a.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitNotReady blocks until the account stops being able to send (disconnected, logged out,
// banned …), or ctx ends.
func (a *Adapter) WaitNotReady(ctx context.Context) error {
	a.mu.Lock()
	notReady := a.notReady
	a.mu.Unlock()
	select {
	case <-notReady:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewChannelMessageID returns a WhatsApp message id for the next send (GenerateMessageID). The
// runner stores it before the first attempt and Send passes it in SendRequestExtra, so a retry
// after a crash sends the same id and WhatsApp keeps one message.
func (a *Adapter) NewChannelMessageID() string {
	a.mu.Lock()
	cli := a.client
	a.mu.Unlock()
	if cli != nil {
		return string(cli.GenerateMessageID())
	}
	return generateMessageID(a.clock.Now(), a.ownJID())
}

func (a *Adapter) ownJID() types.JID {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.device.GetJID()
}

// setStateLocked changes the state and logs it; callers hold a.mu and, when changed is true,
// call persist(s) after unlocking.
func (a *Adapter) setStateLocked(st State, detail string, mutate func(*Status)) (s Status, changed bool) {
	prev := a.status
	next := prev
	next.State, next.Detail = st, detail
	if st != StateBanned {
		next.BannedUntil = time.Time{}
	}
	if mutate != nil {
		mutate(&next)
	}
	if next.State == prev.State && next.Detail == prev.Detail && next.BannedUntil.Equal(prev.BannedUntil) && next.Attempt == prev.Attempt {
		return next, false
	}
	if next.State != prev.State {
		next.Since = a.clock.Now()
	}
	a.status = next
	if st == StateConnected && prev.State != StateConnected {
		close(a.ready)
		a.notReady = make(chan struct{})
	} else if st != StateConnected && prev.State == StateConnected {
		a.ready = make(chan struct{})
		close(a.notReady)
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
	if next.State == prev.State {
		return next, true
	}
	ev := a.log.Info()
	if st == StateBanned || st == StateLoggedOut || st == StateOutdated {
		ev = a.log.Warn()
	}
	ev.Str("event", "whatsapp_state").Str("state", string(st)).Str("previous", string(prev.State)).
		Str("detail", detail).Int("attempt", next.Attempt)
	if !next.BannedUntil.IsZero() {
		ev.Time("banned_until", next.BannedUntil)
	}
	ev.Msg("whatsapp account state changed")
	return next, true
}

// persist tells OnStatus and records the state in the store.
func (a *Adapter) persist(s Status) {
	if a.cfg.OnStatus != nil {
		a.cfg.OnStatus(s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.cfg.Store.SaveState(ctx, wastore.AccountState{
		State: string(s.State), Detail: s.Detail, BannedUntil: s.BannedUntil, LastConnected: s.LastConnected, UpdatedAt: s.Since,
		LastSeenPhone: s.LastSeenPhone,
	})
	if err != nil {
		a.log.Warn().Err(err).Msg("could not record the account state")
	}
}

func (a *Adapter) setState(st State, detail string, mutate func(*Status)) {
	a.mu.Lock()
	s, changed := a.setStateLocked(st, detail, mutate)
	a.mu.Unlock()
	if changed {
		a.persist(s)
	}
}

// errPaused is the retryable error Send returns while the account cannot send.
func pausedError(s Status, now time.Time) error {
	var code, msg string
	retry := 30 * time.Second
	switch s.State {
	case StateLoggedOut, StateUnlinked:
		code, msg, retry = "whatsapp_logged_out", "the WhatsApp account is not linked: run `switchboard whatsapp link`", 5*time.Minute
	case StateBanned:
		code, msg = "whatsapp_banned", "the WhatsApp account is temporarily banned"
		if d := s.BannedUntil.Sub(now); d > 0 {
			retry = d
		}
	case StateOutdated:
		code, msg, retry = "whatsapp_client_outdated", "WhatsApp rejected this client version: upgrade Switchboard", 15*time.Minute
	default:
		code, msg = "whatsapp_disconnected", "the WhatsApp account is not connected"
	}
	return &adapters.SendError{Code: code, RetryAfter: retry, Err: errors.New(msg)}
}
