package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
)

// MediaLoader reads uploaded media files (store.MediaFiles implements it).
type MediaLoader interface {
	MediaData(ctx context.Context, tenant, id string) (gateway.MediaFile, []byte, error)
}

// Store is the part of store.Messages that a Runner needs.
type Store interface {
	Message(ctx context.Context, tenant, id string, withContent bool) (*gateway.Message, error)
	ClaimChannelMessageID(ctx context.Context, tenant, id, proposed string) (string, error)
	MessageIDByChannelID(ctx context.Context, tenant string, channel gateway.Channel, account, channelMessageID string) (string, error)
}

// RunnerConfig binds one adapter account to the bus.
type RunnerConfig struct {
	Tenant  string          // required: the tenant the account belongs to
	Channel gateway.Channel // required
	Account string          // required
	Adapter Adapter         // required

	Store  Store             // required
	Media  MediaLoader       // uploaded media files; nil: messages naming one fail at the adapter
	Bus    pipeline.Consumer // required (*bus.Bus)
	Sealer pipeline.Sealer   // required (*crypt.Keyring): seals inbound messages, indexes participants
	Stages []pipeline.Stage  // pre-dispatch policy, checked again right before each send

	// Durable is the consumer name on DISPATCH; default dispatch-<channel>-<account>.
	Durable string
	// Concurrency bounds the sends in flight; default 32.
	Concurrency int
	// MaxDeliver is the number of attempts before a message ends failed and becomes a dead letter;
	// default 8.
	MaxDeliver int
	// BackOff between attempts (the bus's default when empty).
	BackOff []time.Duration
	// AckWait bounds one attempt (a Send included); default the bus's (30s).
	AckWait time.Duration
	// ConfirmAcks waits for the server to confirm each ack. Off (the default), acks are sent
	// without waiting: much faster, and an ack lost in a crash only means one more delivery, which
	// the handler shrugs off (it is idempotent).
	ConfirmAcks bool
	// Lease, when set, lets the runner run the account only while this process holds the
	// account's lease, so one replica at a time connects it (*bus.Leases).
	Lease Leaser
	// OnState, when set, is told when a gated account becomes able to send (ready) or stops being
	// able to (paused, with why and until when if known): the account.state event.
	OnState func(ctx context.Context, ready bool, reason string, until time.Time)

	Log   zerolog.Logger
	Clock func() time.Time
}

// Runner feeds an Adapter the dispatches of its account and carries what the adapter reports back
// to the bus. It is the adapter's Sink.
type Runner struct {
	cfg RunnerConfig

	mu       sync.Mutex
	inflight map[string]chan struct{} // channel ids being sent: their receipts wait for the sent event
	holding  atomic.Bool              // the account's lease is held (with a Lease)
	sent     recentIDs                // channel id → message id of recent sends: receipts resolve without a store read
}

var _ Sink = (*Runner)(nil)

// NewRunner returns a Runner.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	switch {
	case cfg.Tenant == "" || cfg.Channel == "" || cfg.Account == "":
		return nil, errors.New("adapters: runner needs a tenant, channel and account")
	case cfg.Adapter == nil || cfg.Store == nil || cfg.Bus == nil || cfg.Sealer == nil:
		return nil, errors.New("adapters: runner needs an adapter, a store, a bus and a sealer")
	}
	if cfg.Durable == "" {
		cfg.Durable = "dispatch-" + string(cfg.Channel) + "-" + cfg.Tenant + "-" + cfg.Account
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 8
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	cfg.Log = cfg.Log.With().Str("channel", string(cfg.Channel)).Str("account", cfg.Account).Logger()
	return &Runner{cfg: cfg, inflight: map[string]chan struct{}{}, sent: newRecentIDs(recentSends)}, nil
}

// track marks a send of cid in flight until the returned function is called. A receipt for cid
// that arrives meanwhile (a fast channel) waits, so that `sent` is on the bus before `delivered`.
func (r *Runner) track(cid string) (done func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cid == "" || r.inflight[cid] != nil {
		return func() {}
	}
	ch := make(chan struct{})
	r.inflight[cid] = ch
	return func() {
		r.mu.Lock()
		delete(r.inflight, cid)
		r.mu.Unlock()
		close(ch)
	}
}

// awaitSend waits (a bounded time) for the send of cid in flight, if any.
func (r *Runner) awaitSend(ctx context.Context, cid string) error {
	r.mu.Lock()
	ch := r.inflight[cid]
	r.mu.Unlock()
	if ch == nil {
		return nil
	}
	t := time.NewTimer(receiptWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		// Order is best effort: the recorder copes with a receipt before sent.
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// recentSends is how many channel ids a runner remembers: receipts mostly arrive within
// minutes of the send, and older ones fall back to the store.
const recentSends = 1 << 16

// recentIDs is a bounded map that forgets its oldest entries first. Not safe for concurrent use.
type recentIDs struct {
	ids   map[string]string
	order []string // ring of keys, oldest at next
	next  int
}

func newRecentIDs(n int) recentIDs {
	return recentIDs{ids: make(map[string]string, n), order: make([]string, n)}
}

func (r *recentIDs) put(k, v string) {
	if k == "" {
		return
	}
	if _, ok := r.ids[k]; ok {
		r.ids[k] = v
		return
	}
	delete(r.ids, r.order[r.next])
	r.order[r.next] = k
	r.next = (r.next + 1) % len(r.order)
	r.ids[k] = v
}

func (r *recentIDs) get(k string) (string, bool) {
	v, ok := r.ids[k]
	return v, ok
}

// receiptWait bounds how long a receipt waits for the sent event of its message.
const receiptWait = 10 * time.Second

// Subject is the dispatch subject the runner consumes.
func (r *Runner) Subject() string {
	return bus.DispatchSubject(string(r.cfg.Channel), r.cfg.Tenant, r.cfg.Account)
}

// run runs the adapter (its Run, with the runner as its sink) and consumes the account's dispatch
// subject until ctx is done (only while the account is ready, when the adapter is a Gate). Then
// it stops taking dispatches, lets the sends in flight finish (their receipts still flow), stops
// the adapter, and returns nil. If the adapter or the consumer stops on its own, run stops the
// other and returns an error. Run (lease.go) calls it while the account's lease is held.
func (r *Runner) run(ctx context.Context) error {
	// The adapter outlives ctx until the consumer has drained.
	actx, acancel := context.WithCancel(context.WithoutCancel(ctx))
	defer acancel()
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	adapterDone, consumerDone := make(chan error, 1), make(chan error, 1)
	go func() { adapterDone <- r.cfg.Adapter.Run(actx, r) }()
	go func() { consumerDone <- r.consume(cctx) }()
	var cerr, aerr error
	var stopped string
	select {
	case cerr = <-consumerDone:
		stopped = "dispatch consumer"
		acancel()
		aerr = <-adapterDone
	case aerr = <-adapterDone:
		stopped = "adapter"
		ccancel()
		cerr = <-consumerDone
	}
	if ctx.Err() != nil {
		return errors.Join(cerr, aerr)
	}
	err := errors.Join(cerr, aerr)
	if err == nil {
		err = errors.New("stopped")
	}
	return fmt.Errorf("adapters: %s/%s: %s stopped: %w", r.cfg.Channel, r.cfg.Account, stopped, err)
}

// Handle sends one dispatch. It is exported for tests and for callers with their own consumer.
//
// A failure that a retry may fix returns an error (the bus naks it with backoff); on the last
// allowed attempt the message ends failed instead, and the bus keeps the dispatch as a dead letter.
func (r *Runner) Handle(ctx context.Context, msg *bus.Msg) error {
	return r.handleDispatch(ctx, msg, nil)
}

// handleDispatch is Handle; run, when not nil, ends the wait for a paused account (see Gate).
func (r *Runner) handleDispatch(ctx context.Context, msg *bus.Msg, run context.Context) error {
	var d gateway.Dispatch
	if err := json.Unmarshal(msg.Data, &d); err != nil || d.MessageID == "" || d.Tenant == "" {
		return bus.Terminal(fmt.Errorf("adapters: bad dispatch on %s: %v", msg.Subject, err))
	}
	if d.Tenant != r.cfg.Tenant {
		return bus.Terminal(gateway.Errorf(gateway.EUnknownAccount,
			"dispatch of tenant %s reached the runner of tenant %s on %s", d.Tenant, r.cfg.Tenant, msg.Subject))
	}
	err := r.handleGated(ctx, msg, d, run)
	if err == nil || bus.IsTerminal(err) || msg.NumDelivered < uint64(r.cfg.MaxDeliver) {
		if err != nil {
			if after, ok := pipeline.RetryAfter(err); ok {
				r.cfg.Log.Debug().Err(err).Str("msg_id", d.MessageID).Dur("retry_after", after).Msg("send deferred")
			}
		}
		return err
	}
	// The last attempt failed: the message ends failed. The attempt's context may have run out,
	// so the event gets its own.
	code := codeOf(err)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ev := gateway.StatusEvent{
		MessageID: d.MessageID, Tenant: d.Tenant, Channel: d.Channel, Account: d.Account,
		Status: gateway.StatusFailed, At: r.cfg.Clock().UTC(),
		Error: &gateway.ErrorDetail{Code: code, Message: fmt.Sprintf("gave up after %d attempts: %s", msg.NumDelivered, errorText(err))},
	}
	r.cfg.Log.Warn().Err(err).Str("msg_id", d.MessageID).Str("error_code", code).Uint64("attempts", msg.NumDelivered).Msg("send failed, giving up")
	if perr := pipeline.PublishStatus(pctx, r.cfg.Bus, ev); perr != nil {
		return errors.Join(err, perr)
	}
	return bus.Terminal(err)
}

// codeOf is the status error code for a failure: the SendError's code, or the gateway code.
func codeOf(err error) string {
	var se *SendError
	if errors.As(err, &se) && se.Code != "" {
		return se.Code
	}
	if code := gateway.ErrorCode(err); code != gateway.EInternal {
		return code
	}
	return gateway.EChannelError
}

func (r *Runner) handle(ctx context.Context, msg *bus.Msg, d gateway.Dispatch) error {
	m, err := r.cfg.Store.Message(ctx, d.Tenant, d.MessageID, true)
	if pipeline.IsGone(err) {
		r.cfg.Log.Debug().Str("msg_id", d.MessageID).Msg("dispatch of a message that is gone (erased?), dropping")
		return nil
	}
	if err != nil {
		return fmt.Errorf("adapters: load %s: %w", d.MessageID, err)
	}
	if m.Status != gateway.StatusAccepted && m.Status != gateway.StatusQueued {
		// Sent already (a redelivery after a crash, or a replay), or finished.
		return nil
	}
	if err := pipeline.RunStages(ctx, r.cfg.Stages, m); err != nil {
		ge, rejected := pipeline.Rejection(err)
		if !rejected {
			return err
		}
		return r.publish(ctx, m, gateway.StatusRejected, r.cfg.Clock(), "", &gateway.ErrorDetail{Code: ge.Code, Message: ge.Message})
	}

	// The channel message id is stored before the first attempt, so every retry (after a crash
	// too) sends under the same id and the channel drops what it already has.
	cid := m.ChannelMessageID
	if cid == "" {
		if proposed := r.cfg.Adapter.NewChannelMessageID(); proposed != "" {
			if cid, err = r.cfg.Store.ClaimChannelMessageID(ctx, m.Tenant, m.ID, proposed); err != nil {
				return fmt.Errorf("adapters: claim channel message id of %s: %w", m.ID, err)
			}
		}
	}
	defer r.track(cid)()
	at := r.cfg.Clock()
	media, err := r.uploadedMedia(ctx, m)
	if err != nil {
		return err
	}
	got, err := r.cfg.Adapter.Send(ctx, Outbound{
		MessageID:        m.ID,
		ChannelMessageID: cid,
		To:               m.Peer,
		Content:          m.Content,
		MediaData:        media,
		Attempt:          int(msg.NumDelivered),
	})
	if err == nil {
		if got == "" {
			got = cid
		}
		if cid == "" && got != "" {
			// The channel chose the id: store it so its receipts find the message.
			if _, err := r.cfg.Store.ClaimChannelMessageID(ctx, m.Tenant, m.ID, got); err != nil {
				r.cfg.Log.Warn().Err(err).Str("msg_id", m.ID).Msg("could not store the channel message id; receipts may not resolve")
			}
		}
		r.mu.Lock()
		r.sent.put(got, m.ID)
		r.mu.Unlock()
		return r.publishSent(ctx, m, at, got)
	}
	se := AsSendError(err)
	if se.Permanent {
		code := codeOf(se)
		r.cfg.Log.Warn().Err(err).Str("msg_id", m.ID).Str("error_code", code).Msg("send failed permanently")
		return r.publish(ctx, m, gateway.StatusFailed, r.cfg.Clock(), cid, &gateway.ErrorDetail{Code: code, Message: errorText(se)})
	}
	if se.RetryAfter > 0 {
		return pipeline.RetryLater(se.RetryAfter, se)
	}
	return se
}

// errorText is the message of a status event's error: the adapter's error text, which must hold
// no content and no full identifier.
func errorText(err error) string {
	var se *SendError
	if errors.As(err, &se) {
		err = se.Err
	}
	var s string
	if err != nil {
		s = err.Error()
	}
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "")
	}
	return s
}

// publish publishes a status event about m.
func (r *Runner) publish(ctx context.Context, m *gateway.Message, s gateway.Status, at time.Time, cid string, e *gateway.ErrorDetail) error {
	return pipeline.PublishStatus(ctx, r.cfg.Bus, gateway.StatusEvent{
		MessageID: m.ID, Tenant: m.Tenant, Channel: m.Channel, Account: m.Account,
		Status: s, At: at.UTC(), ChannelMessageID: cid, Error: e,
	})
}

// uploadedMedia loads the bytes of the uploaded file a message names, nil when it names none or
// the file is gone (the adapter then fails the message: nothing can bring the file back).
func (r *Runner) uploadedMedia(ctx context.Context, m *gateway.Message) ([]byte, error) {
	if m.Content.Media == nil || m.Content.Media.ID == "" || r.cfg.Media == nil {
		return nil, nil
	}
	_, data, err := r.cfg.Media.MediaData(ctx, m.Tenant, m.Content.Media.ID)
	if gateway.ErrorCode(err) == gateway.ENotFound {
		r.cfg.Log.Warn().Str("msg_id", m.ID).Msg("the message's uploaded media file is gone (expired or deleted)")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("adapters: load media of %s: %w", m.ID, err)
	}
	return data, nil
}

// publishSent reports a successful send; for a group, with the number of members it went to.
func (r *Runner) publishSent(ctx context.Context, m *gateway.Message, at time.Time, cid string) error {
	ev := gateway.StatusEvent{
		MessageID: m.ID, Tenant: m.Tenant, Channel: m.Channel, Account: m.Account,
		Status: gateway.StatusSent, At: at.UTC(), ChannelMessageID: cid,
	}
	if gs, ok := r.cfg.Adapter.(GroupSizer); ok && m.Peer.Kind == gateway.KindGroup {
		n, err := gs.GroupSize(ctx, m.Peer)
		if err != nil {
			// The message was sent: without the count its first member's receipt moves it.
			r.cfg.Log.Warn().Err(err).Str("msg_id", m.ID).Msg("group size unknown; the status follows the first member's receipt")
		}
		ev.Recipients = n
	}
	return pipeline.PublishStatus(ctx, r.cfg.Bus, ev)
}

// Status turns a receipt into a status event on STATUS. It returns nil for a receipt about a
// message Switchboard did not send (sent from the phone, say, or erased since).
func (r *Runner) Status(ctx context.Context, rc Receipt) error {
	if rc.ChannelMessageID == "" || !rc.Status.Valid() {
		r.cfg.Log.Warn().Str("status", string(rc.Status)).Msg("receipt without a channel message id or with an unknown status, dropped")
		return nil
	}
	if err := r.awaitSend(ctx, rc.ChannelMessageID); err != nil {
		return err
	}
	r.mu.Lock()
	id, ok := r.sent.get(rc.ChannelMessageID)
	r.mu.Unlock()
	var err error
	if !ok {
		id, err = r.cfg.Store.MessageIDByChannelID(ctx, r.cfg.Tenant, r.cfg.Channel, r.cfg.Account, rc.ChannelMessageID)
	}
	if pipeline.IsGone(err) {
		r.cfg.Log.Debug().Str("channel_message_id", rc.ChannelMessageID).Str("status", string(rc.Status)).Msg("receipt for an unknown message")
		return nil
	}
	if err != nil {
		return fmt.Errorf("adapters: resolve receipt: %w", err)
	}
	var participant string
	if rc.Participant != "" {
		if participant, err = r.cfg.Sealer.BlindIndex(ctx, r.cfg.Tenant, rc.Participant); err != nil {
			return fmt.Errorf("adapters: index receipt participant: %w", err)
		}
	}
	at := rc.At
	if at.IsZero() {
		at = r.cfg.Clock()
	}
	return pipeline.PublishStatus(ctx, r.cfg.Bus, gateway.StatusEvent{
		MessageID: id, Tenant: r.cfg.Tenant, Channel: r.cfg.Channel, Account: r.cfg.Account,
		Status: rc.Status, At: at.UTC(), ChannelMessageID: rc.ChannelMessageID,
		Participant: participant, Error: rc.Error,
	})
}

// Inbound seals an inbound message and publishes it on INBOUND (Nats-Msg-Id
// channel:account:channel message id). It returns once the bus has it.
func (r *Runner) Inbound(ctx context.Context, ev gateway.InboundEvent) error {
	ev.Tenant, ev.Channel, ev.Account = r.cfg.Tenant, r.cfg.Channel, r.cfg.Account
	if ev.At.IsZero() {
		ev.At = r.cfg.Clock()
	}
	_, err := pipeline.PublishInbound(ctx, r.cfg.Bus, r.cfg.Sealer, ev)
	return err
}
