// Package sandbox is a loopback channel: an Adapter for any channel and account that behaves like a
// small, reliable network with simulated people on the other end. It takes sends, reports
// sent → delivered → read receipts after configurable delays, fails scripted recipients, answers
// scripted replies, and injects inbound messages on demand (dev mode, tests).
//
// Like WhatsApp, it drops a resend of a channel message id it already took, so a retry after a
// crash never reaches the person twice; and it remembers (in its ledger file) which receipts it
// still owes, so a restart loses none. The ledger holds ids and masked identifiers only.
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// Reply scripts a simulated person: when a sent text contains Match (any case; "" matches every
// text), the recipient answers Text after reading it.
type Reply struct {
	Match string `json:"match" yaml:"match"`
	Text  string `json:"text" yaml:"text"`
}

// Config configures one sandbox account.
type Config struct {
	Channel gateway.Channel // required: the channel this account stands in for
	Account string          // required
	Dir     string          // required: where the ledger lives (the data dir)

	// DeliveredAfter is the delay from a send to its delivered receipt, ReadAfter from delivered to
	// read. Zero means at once; a negative ReadAfter means the person never reads.
	DeliveredAfter time.Duration
	ReadAfter      time.Duration

	// Fail lists recipients (as integrators write them) whose sends fail permanently with FailCode
	// (default invalid_recipient).
	Fail     []string
	FailCode string

	Replies []Reply

	// LinkStep is how long each step of a simulated link (Link) shows; default 2s.
	LinkStep time.Duration

	// Clock and AfterFunc replace time.Now and time.AfterFunc in tests. AfterFunc must run f on
	// its own goroutine (never inside the call) and return a stop function like (*time.Timer).Stop.
	Clock     func() time.Time
	AfterFunc func(d time.Duration, f func()) (stop func() bool)

	Log zerolog.Logger
}

// Stats counts what the sandbox network saw, including what its ledger remembers from before a
// restart.
type Stats struct {
	Sent       int // distinct channel message ids taken
	Duplicates int // resends of a known channel id, dropped
	Failed     int // scripted permanent failures
	Delivered  int // delivered receipts reported
	Read       int // read receipts reported
	Inbound    int // inbound messages reported (injected and replies)
}

// entry is one message on the network.
type entry struct {
	cid, msgID string
	state      gateway.Status  // sent, delivered or read: what the sink has acknowledged
	scheduled  bool            // a task for the next receipt is pending
	reply      *Reply          // the scripted answer, in memory only (the ledger holds no content)
	to         gateway.Address // for the reply; in memory only
	backoff    time.Duration
}

// task is one pending timer.
type task struct{ stop func() bool }

// Adapter is a sandbox account. It implements adapters.Adapter.
type Adapter struct {
	cfg  Config
	fail map[string]bool
	path string

	mu      sync.Mutex
	file    *os.File
	entries map[string]*entry // by channel id
	order   []*entry          // in send order, to replay pending receipts oldest first
	stats   Stats
	running bool
	started chan struct{} // closed when Run first starts: Inject waits for it during start-up
	ctx     context.Context
	sink    adapters.Sink
	tasks   map[*task]struct{}
	wg      sync.WaitGroup
}

var _ adapters.Adapter = (*Adapter)(nil)

// New opens (or creates) the account's ledger and loads what the network remembers.
func New(cfg Config) (*Adapter, error) {
	if cfg.Channel == "" || cfg.Account == "" || cfg.Dir == "" {
		return nil, errors.New("sandbox: channel, account and dir are required")
	}
	if cfg.FailCode == "" {
		cfg.FailCode = gateway.EInvalidRecipient
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.LinkStep <= 0 {
		cfg.LinkStep = 2 * time.Second
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	a := &Adapter{
		cfg:     cfg,
		fail:    map[string]bool{},
		path:    LedgerPath(cfg.Dir, cfg.Channel, cfg.Account),
		entries: map[string]*entry{},
		tasks:   map[*task]struct{}{},
		started: make(chan struct{}),
	}
	for _, f := range cfg.Fail {
		a.fail[normalize(cfg.Channel, f)] = true
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	l, torn, err := loadLedger(a.path)
	if err != nil {
		return nil, err
	}
	for _, cid := range l.Order {
		e := &entry{cid: cid, msgID: l.Sent[cid], state: gateway.StatusSent}
		if l.Read[cid] {
			e.state = gateway.StatusRead
		} else if l.Delivered[cid] {
			e.state = gateway.StatusDelivered
		}
		a.entries[cid] = e
		a.order = append(a.order, e)
	}
	a.stats = Stats{Sent: len(l.Sent), Duplicates: l.Duplicates, Failed: l.Failed, Delivered: len(l.Delivered), Read: len(l.Read), Inbound: l.Inbound}
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sandbox: open ledger: %w", err)
	}
	if torn {
		// End the torn line so the next one starts clean (loading skips the torn one).
		if _, err := f.Write([]byte("\n")); err != nil {
			f.Close()
			return nil, fmt.Errorf("sandbox: repair ledger: %w", err)
		}
	}
	a.file = f
	return a, nil
}

// normalize returns the canonical form of an address for comparisons, or s as given.
func normalize(ch gateway.Channel, s string) string {
	if addr, err := gateway.ParseAddress(ch, s); err == nil {
		return addr.String()
	}
	return strings.TrimSpace(s)
}

// Close closes the ledger. Call it after Run has returned.
func (a *Adapter) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.file == nil {
		return nil
	}
	err := a.file.Close()
	a.file = nil
	return err
}

// Stats returns the counters.
func (a *Adapter) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// NewChannelMessageID returns a random id in the style of a WhatsApp message id.
func (a *Adapter) NewChannelMessageID() string { return newID("SB") }

func newID(prefix string) string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return prefix + strings.ToUpper(hex.EncodeToString(b))
}

// writeLocked appends one ledger line; a.mu must be held.
func (a *Adapter) writeLocked(fields ...string) error {
	if a.file == nil {
		return errors.New("sandbox: ledger closed")
	}
	_, err := a.file.WriteString(strings.Join(fields, " ") + "\n")
	return err
}

// Send puts one message on the simulated network.
func (a *Adapter) Send(ctx context.Context, m adapters.Outbound) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	to := m.To.String()
	masked := gateway.MaskIdentifier(to)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail[to] {
		a.stats.Failed++
		if err := a.writeLocked("failed", m.MessageID, masked); err != nil {
			return "", err
		}
		return "", adapters.Permanent(a.cfg.FailCode, fmt.Errorf("sandbox: recipient %s is scripted to fail", masked))
	}
	cid := m.ChannelMessageID
	if cid == "" {
		cid = a.NewChannelMessageID()
	}
	if _, ok := a.entries[cid]; ok {
		// The network has this id already: drop the resend, as WhatsApp does, and answer as if
		// the send succeeded (the first one did).
		a.stats.Duplicates++
		if err := a.writeLocked("dup", cid, m.MessageID); err != nil {
			return "", err
		}
		a.cfg.Log.Debug().Str("msg_id", m.MessageID).Str("channel_message_id", cid).Msg("sandbox: duplicate send dropped")
		return cid, nil
	}
	if err := a.writeLocked("sent", cid, m.MessageID, masked); err != nil {
		return "", err
	}
	e := &entry{cid: cid, msgID: m.MessageID, state: gateway.StatusSent, to: m.To, reply: a.replyFor(m.Content)}
	a.entries[cid] = e
	a.order = append(a.order, e)
	a.stats.Sent++
	a.scheduleNextLocked(e)
	return cid, nil
}

// replyFor returns the first reply whose Match the content contains.
func (a *Adapter) replyFor(c gateway.Content) *Reply {
	text := c.Text
	if c.Media != nil && c.Media.Caption != "" {
		text += "\n" + c.Media.Caption
	}
	text = strings.ToLower(text)
	for i := range a.cfg.Replies {
		r := &a.cfg.Replies[i]
		if strings.Contains(text, strings.ToLower(r.Match)) {
			return r
		}
	}
	return nil
}

// Run reports receipts and replies through sink until ctx is done. At start it reschedules every
// receipt the ledger says is still owed. It returns nil when ctx is cancelled, after every timer
// is stopped and every sink call in flight has returned.
func (a *Adapter) Run(ctx context.Context, sink adapters.Sink) error {
	a.mu.Lock()
	if a.running {
		a.mu.Unlock()
		return errors.New("sandbox: already running")
	}
	a.running, a.ctx, a.sink = true, ctx, sink
	select {
	case <-a.started:
	default:
		close(a.started)
	}
	for _, e := range a.order {
		a.scheduleNextLocked(e)
	}
	a.mu.Unlock()

	<-ctx.Done()

	a.mu.Lock()
	a.running = false
	for t := range a.tasks {
		if t.stop != nil && t.stop() {
			delete(a.tasks, t)
			a.wg.Done()
		}
	}
	a.mu.Unlock()
	a.wg.Wait()
	a.mu.Lock()
	for _, e := range a.order {
		e.scheduled = false
	}
	a.sink = nil
	a.mu.Unlock()
	return nil
}

// scheduleNextLocked schedules e's next receipt (or reply) if it owes one; a.mu must be held.
// Without a running sink nothing is scheduled: Run does it at start.
func (a *Adapter) scheduleNextLocked(e *entry) {
	if !a.running || e.scheduled {
		return
	}
	var d time.Duration
	switch e.state {
	case gateway.StatusSent:
		d = a.cfg.DeliveredAfter
	case gateway.StatusDelivered:
		if a.cfg.ReadAfter < 0 {
			return
		}
		d = a.cfg.ReadAfter
	case gateway.StatusRead:
		if e.reply == nil {
			return
		}
	default:
		return
	}
	if e.backoff > 0 {
		d = e.backoff
	}
	e.scheduled = true
	a.afterLocked(d, func(ctx context.Context) { a.step(ctx, e) })
}

// afterLocked runs f(ctx) after d on its own goroutine, tracked so that Run can stop it; a.mu
// must be held (it is released around the AfterFunc call, which may be a test's fake).
func (a *Adapter) afterLocked(d time.Duration, f func(ctx context.Context)) {
	t := &task{}
	a.tasks[t] = struct{}{}
	a.wg.Add(1)
	a.mu.Unlock()
	stop := a.cfg.AfterFunc(d, func() {
		defer a.wg.Done()
		a.mu.Lock()
		_, live := a.tasks[t]
		delete(a.tasks, t)
		ctx := a.ctx
		a.mu.Unlock()
		if !live || ctx.Err() != nil {
			return
		}
		f(ctx)
	})
	a.mu.Lock()
	if _, live := a.tasks[t]; live {
		if a.running {
			t.stop = stop
		} else if stop() {
			delete(a.tasks, t)
			a.wg.Done()
		}
	}
}

// step reports e's next receipt (or its reply) and schedules the one after.
func (a *Adapter) step(ctx context.Context, e *entry) {
	a.mu.Lock()
	state, sink := e.state, a.sink
	a.mu.Unlock()
	var (
		next gateway.Status
		err  error
	)
	switch state {
	case gateway.StatusSent:
		next = gateway.StatusDelivered
	case gateway.StatusDelivered:
		next = gateway.StatusRead
	case gateway.StatusRead:
		next = "replied"
	}
	if next == "replied" {
		_, err = a.inbound(ctx, sink, e.to, e.reply.Text, e.cid+"R")
	} else {
		err = sink.Status(ctx, adapters.Receipt{ChannelMessageID: e.cid, Status: next, At: a.cfg.Clock()})
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	e.scheduled = false
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		e.backoff = min(max(2*e.backoff, 50*time.Millisecond), 5*time.Second)
		a.cfg.Log.Warn().Err(err).Str("msg_id", e.msgID).Str("status", string(next)).Dur("retry_in", e.backoff).
			Msg("sandbox: sink refused a report, retrying")
		a.scheduleNextLocked(e)
		return
	}
	e.backoff = 0
	switch next {
	case "replied":
		e.reply = nil
		return
	case gateway.StatusDelivered:
		a.stats.Delivered++
	case gateway.StatusRead:
		a.stats.Read++
	}
	e.state = next
	if err := a.writeLocked(string(next), e.cid); err != nil {
		a.cfg.Log.Error().Err(err).Str("msg_id", e.msgID).Msg("sandbox: ledger write failed")
	}
	a.scheduleNextLocked(e)
}

// Inject reports an inbound message from `from` (as an integrator writes it: +E164 or a teams:
// address) saying text, as if that person had just written it. It returns the channel message id
// once the sink has taken the message (published it). Before the adapter has first started (the
// gateway is starting) it waits for Run, up to ctx; once stopped it fails with unavailable.
func (a *Adapter) Inject(ctx context.Context, from, text string) (string, error) {
	addr, err := gateway.ParseAddress(a.cfg.Channel, from)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(text) == "" {
		return "", gateway.FieldErrorf(gateway.EMissingField, "text", "an inbound message needs a text")
	}
	select {
	case <-a.started:
	case <-ctx.Done():
		return "", gateway.WrapError(gateway.EUnavailable, ctx.Err(), "sandbox account %s/%s has not started", a.cfg.Channel, a.cfg.Account)
	}
	a.mu.Lock()
	sink := a.sink
	running := a.running
	a.mu.Unlock()
	if !running || sink == nil {
		return "", gateway.Errorf(gateway.EUnavailable, "sandbox account %s/%s is not running", a.cfg.Channel, a.cfg.Account)
	}
	return a.inbound(ctx, sink, addr, text, a.NewChannelMessageID())
}

func (a *Adapter) inbound(ctx context.Context, sink adapters.Sink, from gateway.Address, text, cid string) (string, error) {
	ev := gateway.InboundEvent{
		Channel:          a.cfg.Channel,
		Account:          a.cfg.Account,
		ChannelMessageID: cid,
		From:             from,
		Content:          gateway.Content{Text: text},
		At:               a.cfg.Clock(),
	}
	if err := sink.Inbound(ctx, ev); err != nil {
		return "", err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stats.Inbound++
	if err := a.writeLocked("inbound", cid, from.Masked()); err != nil {
		a.cfg.Log.Error().Err(err).Msg("sandbox: ledger write failed")
	}
	return cid, nil
}
