package teams

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// Notifications is the http.Handler for Graph change notifications and lifecycle events of every
// Teams account of the process. Mount it at NotificationPath and LifecyclePath (POST). Adapters
// with a public URL register their subscriptions with it while they run.
//
// A validation request (?validationToken=…) is answered at once with the token as text/plain.
// A notification whose subscription is unknown or whose clientState does not match (compared in
// constant time) is refused with 403 and nothing is published. Otherwise each new message is
// fetched by id and handed to the account's sink; 202 is sent only after the sink accepted them
// all (durably published), 503 when that failed or took longer than the deadline, so Graph
// delivers again.
type Notifications struct {
	log zerolog.Logger
	// Deadline bounds the work for one request: Graph expects an answer within 3 s.
	Deadline time.Duration

	mu    sync.RWMutex
	bySub map[string]*Adapter
}

// NewNotifications returns an empty handler.
func NewNotifications(log zerolog.Logger) *Notifications {
	return &Notifications{log: log.With().Str("channel", "teams").Logger(), Deadline: 2500 * time.Millisecond, bySub: map[string]*Adapter{}}
}

func (n *Notifications) remove(a *Adapter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, x := range n.bySub {
		if x == a {
			delete(n.bySub, id)
		}
	}
}

func (n *Notifications) bind(subID string, a *Adapter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.bySub[subID] = a
}

func (n *Notifications) unbind(subID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.bySub, subID)
}

func (n *Notifications) adapter(subID string) *Adapter {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.bySub[subID]
}

// changeNotification is one item of Graph's changeNotificationCollection.
type changeNotification struct {
	SubscriptionID string `json:"subscriptionId"`
	ClientState    string `json:"clientState"`
	ChangeType     string `json:"changeType"`
	Resource       string `json:"resource"`
	LifecycleEvent string `json:"lifecycleEvent"`
	ResourceData   *struct {
		ID string `json:"id"`
	} `json:"resourceData"`
}

const maxNotificationBody = 1 << 20

func (n *Notifications) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if q := r.URL.Query(); q.Has("validationToken") {
		tok := q.Get("validationToken")
		if len(tok) > 4096 {
			http.Error(w, "validation token too long", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, tok)
		return
	}
	var body struct {
		Value []changeNotification `json:"value"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxNotificationBody))
	if err := dec.Decode(&body); err != nil {
		http.Error(w, "invalid notification body", http.StatusBadRequest)
		return
	}
	// Authenticate every item before acting on any.
	owners := make([]*Adapter, len(body.Value))
	for i, cn := range body.Value {
		a := n.adapter(cn.SubscriptionID)
		if a == nil || !a.clientStateMatches(cn.ClientState) {
			n.log.Warn().Str("event", "teams_notification_refused").Msg("teams: notification with an unknown subscription or a wrong clientState refused")
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		owners[i] = a
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.Deadline)
	defer cancel()
	lifecycle := strings.HasSuffix(r.URL.Path, LifecyclePath)
	for i, cn := range body.Value {
		a := owners[i]
		if lifecycle || cn.LifecycleEvent != "" {
			a.lifecycle(cn.SubscriptionID, cn.LifecycleEvent)
			continue
		}
		if cn.ChangeType != "created" {
			continue
		}
		if err := a.notified(ctx, cn); err != nil {
			n.log.Warn().Err(err).Str("tenant", a.cfg.Tenant).Str("account", a.cfg.Account).Msg("teams: notification not processed; Graph will deliver it again")
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusAccepted)
}

// clientStateMatches compares in constant time.
func (a *Adapter) clientStateMatches(got string) bool {
	a.runMu.Lock()
	want := a.clientState
	a.runMu.Unlock()
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// notified fetches the message a notification names and hands it to the sink.
func (a *Adapter) notified(ctx context.Context, cn changeNotification) error {
	src, msgID, parent, err := parseResource(cn.Resource)
	if err != nil {
		return err
	}
	if !a.knowsSource(src) {
		// A subscription of ours cannot name another resource: ignore rather than fetch.
		a.log.Warn().Msg("teams: notification for a resource that is not configured ignored")
		return nil
	}
	a.runMu.Lock()
	sink := a.sink
	a.runMu.Unlock()
	if sink == nil {
		return errors.New("teams: adapter is not running")
	}
	if a.recent.has(src.address().String() + "|" + msgID) {
		return nil
	}
	msg, err := a.fetchMessage(ctx, src, msgID, parent)
	if err != nil {
		var ae abs.ApiErrorable
		if errors.As(err, &ae) && ae.GetStatusCode() == http.StatusNotFound {
			return nil // deleted since: nothing to deliver
		}
		return err
	}
	ev, ok := a.inboundEvent(msg, src)
	if !ok {
		return nil
	}
	return a.deliver(ctx, sink, ev)
}

func (a *Adapter) knowsSource(s source) bool {
	for _, x := range a.sources() {
		if x == s {
			return true
		}
	}
	return false
}

func (a *Adapter) fetchMessage(ctx context.Context, src source, msgID, parent string) (models.ChatMessageable, error) {
	if src.isChannel() {
		msgs := a.g.teams.ByTeamId(src.team).Channels().ByChannelId(src.channel).Messages()
		if parent != "" {
			return msgs.ByChatMessageId(parent).Replies().ByChatMessageId1(msgID).Get(ctx, nil)
		}
		return msgs.ByChatMessageId(msgID).Get(ctx, nil)
	}
	return a.g.chats.ByChatId(src.chat).Messages().ByChatMessageId(msgID).Get(ctx, nil)
}

// parseResource reads a notification's resource, such as chats('19:…')/messages('1616…') or
// teams('…')/channels('…')/messages('…')[/replies('…')].
func parseResource(res string) (src source, msgID, parent string, err error) {
	res = strings.TrimPrefix(res, "/")
	var segs [][2]string
	for res != "" {
		open := strings.Index(res, "('")
		if open < 0 {
			return source{}, "", "", errors.New("teams: unexpected notification resource")
		}
		close := strings.Index(res[open:], "')")
		if close < 0 {
			return source{}, "", "", errors.New("teams: unexpected notification resource")
		}
		name, raw := res[:open], res[open+2:open+close]
		v, err := url.PathUnescape(raw)
		if err != nil {
			return source{}, "", "", errors.New("teams: unexpected notification resource")
		}
		segs = append(segs, [2]string{strings.ToLower(name), v})
		res = strings.TrimPrefix(res[open+close+2:], "/")
	}
	switch {
	case len(segs) == 2 && segs[0][0] == "chats" && segs[1][0] == "messages":
		return source{chat: segs[0][1]}, segs[1][1], "", nil
	case len(segs) == 3 && segs[0][0] == "teams" && segs[1][0] == "channels" && segs[2][0] == "messages":
		return source{team: segs[0][1], channel: segs[1][1]}, segs[2][1], "", nil
	case len(segs) == 4 && segs[0][0] == "teams" && segs[1][0] == "channels" && segs[2][0] == "messages" && segs[3][0] == "replies":
		return source{team: segs[0][1], channel: segs[1][1]}, segs[3][1], segs[2][1], nil
	}
	return source{}, "", "", errors.New("teams: unexpected notification resource")
}

// lifecycle queues a lifecycle event for the subscription loop; it never blocks the request.
func (a *Adapter) lifecycle(subID, event string) {
	select {
	case a.kick <- subID + "|" + event:
	default:
		a.log.Warn().Str("lifecycle_event", event).Msg("teams: lifecycle event dropped: queue full (the renewal loop catches up)")
	}
}

// subRecord is one Graph subscription, stored encrypted in the credential store.
type subRecord struct {
	ID       string    `json:"id"`
	Source   string    `json:"source"` // source key
	Resource string    `json:"resource"`
	Expires  time.Time `json:"expires"`
}

// Subscription describes one live subscription, for `switchboard teams subscriptions`.
type Subscription struct {
	ID       string
	Resource string
	Expires  time.Time
}

// Subscriptions lists the account's stored subscriptions.
func (a *Adapter) Subscriptions(ctx context.Context) ([]Subscription, error) {
	recs, err := a.loadSubs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Subscription, 0, len(recs))
	for _, r := range recs {
		out = append(out, Subscription{ID: r.ID, Resource: r.Resource, Expires: r.Expires})
	}
	return out, nil
}

func (a *Adapter) loadSubs(ctx context.Context) (map[string]*subRecord, error) {
	recs := map[string]*subRecord{}
	b, err := a.store.Get(ctx, a.key(blobSubs))
	if gateway.ErrorCode(err) == gateway.ENotFound {
		return recs, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, err
	}
	return recs, nil
}

func (a *Adapter) saveSubs(ctx context.Context, recs map[string]*subRecord) error {
	b, err := json.Marshal(recs)
	if err != nil {
		return err
	}
	return a.store.Put(ctx, a.key(blobSubs), b)
}

// ensureClientState loads (or creates and stores) the secret Graph echoes in notifications.
func (a *Adapter) ensureClientState(ctx context.Context) error {
	cs := a.cfg.ClientState
	if cs == "" {
		b, err := a.store.Get(ctx, a.key(blobClientState))
		switch {
		case err == nil:
			cs = string(b)
		case gateway.ErrorCode(err) == gateway.ENotFound:
			raw := make([]byte, 32)
			if _, err := rand.Read(raw); err != nil {
				return err
			}
			cs = hex.EncodeToString(raw) // Graph allows up to 128 characters
			if err := a.store.Put(ctx, a.key(blobClientState), []byte(cs)); err != nil {
				return err
			}
		default:
			return err
		}
	}
	a.runMu.Lock()
	a.clientState = cs
	a.runMu.Unlock()
	return nil
}

// runSubscriptions keeps one subscription per source alive: created when missing, renewed when
// less than RenewBefore is left, recreated when Graph removed it; lifecycle events are acted on
// (reauthorizationRequired → renew, subscriptionRemoved → recreate, missed → catch-up poll).
func (a *Adapter) runSubscriptions(ctx context.Context, sink adapters.Sink) error {
	var recs map[string]*subRecord
	var err error
	retry := a.cfg.PollInterval
	for {
		if err = a.ensureClientState(ctx); err == nil {
			recs, err = a.loadSubs(ctx)
		}
		if err == nil {
			break
		}
		a.log.Warn().Err(err).Msg("teams: cannot load subscriptions")
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.Clock.After(retry):
		}
	}
	for _, r := range recs {
		a.hub.bind(r.ID, a)
	}
	// Catch up with what was written while this process was not listening.
	var keys []string
	for _, src := range a.sources() {
		if recs[src.key()] != nil {
			keys = append(keys, src.key())
		}
	}
	if err := a.pollSources(ctx, sink, keys...); err != nil && ctx.Err() == nil {
		a.log.Warn().Err(err).Msg("teams: catch-up poll failed")
	}
	for {
		wait, err := a.syncSubscriptions(ctx, sink, recs)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			a.log.Warn().Err(err).Msg("teams: subscription upkeep failed")
			wait = min(wait, retry)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.Clock.After(wait):
		case ev := <-a.kick:
			a.onLifecycle(ctx, sink, recs, ev)
		}
	}
}

// syncSubscriptions creates and renews what is due, and returns how long until the next renewal.
func (a *Adapter) syncSubscriptions(ctx context.Context, sink adapters.Sink, recs map[string]*subRecord) (time.Duration, error) {
	var errs []error
	for _, src := range a.sources() {
		r := recs[src.key()]
		now := a.cfg.Clock.Now()
		switch {
		case r == nil || !now.Before(r.Expires):
			if r != nil {
				a.hub.unbind(r.ID)
				delete(recs, src.key())
			}
			if err := a.createSubscription(ctx, sink, recs, src); err != nil {
				errs = append(errs, err)
			}
		case r.Expires.Sub(now) <= a.cfg.RenewBefore:
			if err := a.renewSubscription(ctx, sink, recs, src, r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	wait := a.cfg.SubscriptionLifetime
	now := a.cfg.Clock.Now()
	for _, r := range recs {
		if d := r.Expires.Sub(now) - a.cfg.RenewBefore; d < wait {
			wait = d
		}
	}
	if wait < time.Second {
		wait = time.Second
	}
	return wait, errors.Join(errs...)
}

func (a *Adapter) createSubscription(ctx context.Context, sink adapters.Sink, recs map[string]*subRecord, src source) error {
	a.runMu.Lock()
	cs := a.clientState
	a.runMu.Unlock()
	exp := a.cfg.Clock.Now().Add(a.cfg.SubscriptionLifetime).UTC()
	s := models.NewSubscription()
	s.SetChangeType(ptr("created"))
	s.SetNotificationUrl(ptr(a.cfg.PublicURL + NotificationPath))
	s.SetLifecycleNotificationUrl(ptr(a.cfg.PublicURL + LifecyclePath))
	s.SetResource(ptr(src.resource()))
	s.SetExpirationDateTime(&exp)
	s.SetClientState(&cs)
	res, err := a.g.subs.Post(ctx, s, nil)
	if err != nil {
		return err
	}
	if res == nil || res.GetId() == nil || *res.GetId() == "" {
		return errors.New("teams: graph created a subscription without an id")
	}
	r := &subRecord{ID: *res.GetId(), Source: src.key(), Resource: src.resource(), Expires: exp}
	if e := res.GetExpirationDateTime(); e != nil {
		r.Expires = e.UTC()
	}
	recs[src.key()] = r
	a.hub.bind(r.ID, a)
	if err := a.saveSubs(ctx, recs); err != nil {
		return err
	}
	a.log.Info().Str("event", "teams_subscription").Str("action", "created").Time("expires", r.Expires).Msg("teams: subscribed to change notifications")
	// Catch up with what happened while there was no subscription (and set the first mark).
	return a.pollSources(ctx, sink, src.key())
}

func (a *Adapter) renewSubscription(ctx context.Context, sink adapters.Sink, recs map[string]*subRecord, src source, r *subRecord) error {
	exp := a.cfg.Clock.Now().Add(a.cfg.SubscriptionLifetime).UTC()
	patch := models.NewSubscription()
	patch.SetExpirationDateTime(&exp)
	res, err := a.g.subs.BySubscriptionId(r.ID).Patch(ctx, patch, nil)
	if err != nil {
		var ae abs.ApiErrorable
		if errors.As(err, &ae) && ae.GetStatusCode() == http.StatusNotFound {
			a.hub.unbind(r.ID)
			delete(recs, src.key())
			return a.createSubscription(ctx, sink, recs, src)
		}
		return err
	}
	r.Expires = exp
	if res != nil && res.GetExpirationDateTime() != nil {
		r.Expires = res.GetExpirationDateTime().UTC()
	}
	if err := a.saveSubs(ctx, recs); err != nil {
		return err
	}
	a.log.Info().Str("event", "teams_subscription").Str("action", "renewed").Time("expires", r.Expires).Msg("teams: subscription renewed")
	return nil
}

func (a *Adapter) onLifecycle(ctx context.Context, sink adapters.Sink, recs map[string]*subRecord, ev string) {
	subID, event, _ := strings.Cut(ev, "|")
	var src *source
	var rec *subRecord
	for _, s := range a.sources() {
		if r := recs[s.key()]; r != nil && r.ID == subID {
			s := s
			src, rec = &s, r
		}
	}
	if src == nil {
		return
	}
	a.log.Info().Str("event", "teams_subscription").Str("lifecycle_event", event).Msg("teams: lifecycle event")
	var err error
	switch event {
	case "reauthorizationRequired":
		err = a.renewSubscription(ctx, sink, recs, *src, rec)
	case "subscriptionRemoved":
		a.hub.unbind(rec.ID)
		delete(recs, src.key())
		err = a.createSubscription(ctx, sink, recs, *src)
	case "missed":
		err = a.pollSources(ctx, sink, src.key())
	}
	if err != nil {
		a.log.Warn().Err(err).Str("lifecycle_event", event).Msg("teams: lifecycle event not handled; retried at the next renewal")
	}
}

// pollSources polls the named sources once (a catch-up after a gap in notifications).
func (a *Adapter) pollSources(ctx context.Context, sink adapters.Sink, keys ...string) error {
	st, err := a.loadPollState(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, src := range a.sources() {
		for _, k := range keys {
			if src.key() == k {
				if err := a.pollSource(ctx, sink, st, src); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func ptr[T any](v T) *T { return &v }
