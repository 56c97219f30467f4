package teams

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/microsoftgraph/msgraph-sdk-go/chats"
	"github.com/microsoftgraph/msgraph-sdk-go/models"
	msteams "github.com/microsoftgraph/msgraph-sdk-go/teams"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// source is one chat or channel the account receives from.
type source struct {
	chat          string
	team, channel string
}

func (s source) isChannel() bool { return s.team != "" }

// key names the source in the (encrypted) poll state and subscriptions.
func (s source) key() string {
	if s.isChannel() {
		return "channel:" + s.team + "/" + s.channel
	}
	return "chat:" + s.chat
}

// address is the source as a Switchboard address, the InboundEvent's Chat.
func (s source) address() gateway.Address {
	if s.isChannel() {
		return gateway.Address{Channel: gateway.Teams, Kind: gateway.KindTeamsChannel, Value: s.team + "/" + s.channel}
	}
	return gateway.Address{Channel: gateway.Teams, Kind: gateway.KindTeamsChat, Value: s.chat}
}

// resource is the Graph resource of the source's messages, for subscriptions.
func (s source) resource() string {
	if s.isChannel() {
		return "/teams/" + s.team + "/channels/" + s.channel + "/messages"
	}
	return "/chats/" + s.chat + "/messages"
}

func (a *Adapter) sources() []source {
	var out []source
	for _, c := range a.cfg.Chats {
		out = append(out, source{chat: c})
	}
	for _, c := range a.cfg.Channels {
		team, channel, _ := strings.Cut(c, "/")
		out = append(out, source{team: team, channel: channel})
	}
	return out
}

// Run receives until ctx is done: through change notifications when a public URL is configured,
// by polling otherwise.
func (a *Adapter) Run(ctx context.Context, sink adapters.Sink) error {
	a.runMu.Lock()
	if a.sink != nil {
		a.runMu.Unlock()
		return errors.New("teams: adapter is already running")
	}
	a.sink = sink
	a.runMu.Unlock()
	defer func() {
		a.runMu.Lock()
		a.sink = nil
		a.runMu.Unlock()
	}()
	if a.cfg.PublicURL != "" {
		defer a.hub.remove(a)
		return a.runSubscriptions(ctx, sink)
	}
	return a.runPolling(ctx, sink)
}

// runPolling polls every source each PollInterval, backing off (doubling up to MaxPollInterval)
// while polls fail.
func (a *Adapter) runPolling(ctx context.Context, sink adapters.Sink) error {
	if len(a.sources()) == 0 {
		<-ctx.Done()
		return nil
	}
	var delay time.Duration
	for {
		if delay > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-a.cfg.Clock.After(delay):
			}
		}
		err := a.PollOnce(ctx, sink)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			delay = min(max(delay*2, a.cfg.PollInterval*2), a.cfg.MaxPollInterval)
			a.log.Warn().Err(err).Dur("retry_in", delay).Msg("teams: poll failed")
			continue
		}
		delay = a.cfg.PollInterval
	}
}

// pollMark is a source's high-water mark: the creation time of the newest message handed on,
// and the ids handed on with exactly that time (Graph times are in milliseconds; two messages
// can share one).
type pollMark struct {
	At  time.Time `json:"at"`
	IDs []string  `json:"ids,omitempty"`
}

func (m *pollMark) seen(at time.Time, id string) bool {
	return at.Before(m.At) || (at.Equal(m.At) && slices.Contains(m.IDs, id))
}

func (m *pollMark) advance(at time.Time, id string) {
	if at.After(m.At) {
		m.At, m.IDs = at, []string{id}
	} else if at.Equal(m.At) && !slices.Contains(m.IDs, id) {
		m.IDs = append(m.IDs, id)
	}
}

func (a *Adapter) loadPollState(ctx context.Context) (map[string]*pollMark, error) {
	st := map[string]*pollMark{}
	b, err := a.store.Get(ctx, a.key(blobPollState))
	if gateway.ErrorCode(err) == gateway.ENotFound {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return st, nil
}

func (a *Adapter) savePollState(ctx context.Context, st map[string]*pollMark) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return a.store.Put(ctx, a.key(blobPollState), b)
}

// PollOnce polls every configured source once. Messages newer than the source's high-water mark
// go to the sink oldest first; the mark is stored after each one, so a restart neither misses
// nor repeats a message. The first poll of a source only sets its mark: history is not replayed.
func (a *Adapter) PollOnce(ctx context.Context, sink adapters.Sink) error {
	st, err := a.loadPollState(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, src := range a.sources() {
		if err := a.pollSource(ctx, sink, st, src); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

const (
	pollPageSize = 50 // Graph's maximum $top for chat messages
	pollMaxPages = 20
)

func (a *Adapter) pollSource(ctx context.Context, sink adapters.Sink, st map[string]*pollMark, src source) error {
	mark := st[src.key()]
	var fresh []models.ChatMessageable
	next := ""
	for page := 0; page < pollMaxPages; page++ {
		msgs, nextLink, err := a.listMessages(ctx, src, next)
		if err != nil {
			return err
		}
		if mark == nil {
			// First poll: start after the newest message there is.
			m := &pollMark{}
			for _, msg := range msgs {
				m.advance(created(msg), id(msg))
			}
			st[src.key()] = m
			return a.savePollState(ctx, st)
		}
		anyNew := false
		for _, msg := range msgs {
			if mark.seen(created(msg), id(msg)) {
				continue
			}
			anyNew = true
			fresh = append(fresh, msg)
		}
		if !anyNew || nextLink == "" {
			break
		}
		next = nextLink
	}
	sort.SliceStable(fresh, func(i, j int) bool {
		ci, cj := created(fresh[i]), created(fresh[j])
		if !ci.Equal(cj) {
			return ci.Before(cj)
		}
		return id(fresh[i]) < id(fresh[j])
	})
	for _, msg := range fresh {
		if ev, ok := a.inboundEvent(msg, src); ok {
			if err := a.deliver(ctx, sink, ev); err != nil {
				return err
			}
		}
		mark.advance(created(msg), id(msg))
		if err := a.savePollState(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

func (a *Adapter) listMessages(ctx context.Context, src source, next string) ([]models.ChatMessageable, string, error) {
	top := int32(pollPageSize)
	var res models.ChatMessageCollectionResponseable
	var err error
	if src.isChannel() {
		b := a.g.teams.ByTeamId(src.team).Channels().ByChannelId(src.channel).Messages()
		if next != "" {
			res, err = b.WithUrl(next).Get(ctx, nil)
		} else {
			res, err = b.Get(ctx, &msteams.ItemChannelsItemMessagesRequestBuilderGetRequestConfiguration{
				QueryParameters: &msteams.ItemChannelsItemMessagesRequestBuilderGetQueryParameters{Top: &top},
			})
		}
	} else {
		b := a.g.chats.ByChatId(src.chat).Messages()
		if next != "" {
			res, err = b.WithUrl(next).Get(ctx, nil)
		} else {
			res, err = b.Get(ctx, &chats.ItemMessagesRequestBuilderGetRequestConfiguration{
				QueryParameters: &chats.ItemMessagesRequestBuilderGetQueryParameters{Top: &top, Orderby: []string{"createdDateTime desc"}},
			})
		}
	}
	if err != nil {
		return nil, "", err
	}
	if res == nil {
		return nil, "", nil
	}
	nl := ""
	if p := res.GetOdataNextLink(); p != nil {
		nl = *p
	}
	return res.GetValue(), nl, nil
}

// deliver hands an inbound event to the sink once per Graph id, as far as this process knows:
// a notification delivered twice, or a notification and a catch-up poll, give one event. Across
// restarts the runner's Nats-Msg-Id (the Graph id) drops the duplicate.
func (a *Adapter) deliver(ctx context.Context, sink adapters.Sink, ev gateway.InboundEvent) error {
	k := ev.Chat + "|" + ev.ChannelMessageID
	if a.recent.has(k) {
		return nil
	}
	if err := sink.Inbound(ctx, ev); err != nil {
		return err
	}
	a.recent.add(k)
	return nil
}

// inboundEvent turns a Graph message into an inbound event; ok=false for what is not a person's
// message: system events, deleted messages, bots, and the service account's own posts.
func (a *Adapter) inboundEvent(msg models.ChatMessageable, src source) (gateway.InboundEvent, bool) {
	if msg == nil || id(msg) == "" {
		return gateway.InboundEvent{}, false
	}
	if t := msg.GetMessageType(); t != nil && *t != models.MESSAGE_CHATMESSAGETYPE {
		return gateway.InboundEvent{}, false
	}
	if msg.GetDeletedDateTime() != nil {
		return gateway.InboundEvent{}, false
	}
	from := msg.GetFrom()
	if from == nil || from.GetUser() == nil || from.GetUser().GetId() == nil || *from.GetUser().GetId() == "" {
		return gateway.InboundEvent{}, false
	}
	user := *from.GetUser().GetId()
	if user == a.serviceUserID() {
		return gateway.InboundEvent{}, false
	}
	name := ""
	if n := from.GetUser().GetDisplayName(); n != nil {
		name = *n
	}
	text := ""
	if b := msg.GetBody(); b != nil && b.GetContent() != nil {
		text = *b.GetContent()
		if ct := b.GetContentType(); ct == nil || *ct == models.HTML_BODYTYPE {
			text = htmlToText(text)
		}
	}
	content := gateway.Content{Text: text}
	if r := msg.GetReplyToId(); r != nil {
		content.ReplyTo = *r
	}
	return gateway.InboundEvent{
		Tenant:           a.cfg.Tenant,
		Channel:          gateway.Teams,
		Account:          a.cfg.Account,
		ChannelMessageID: inboundID(src.address(), id(msg)),
		From:             gateway.Address{Channel: gateway.Teams, Kind: gateway.KindTeamsUser, Value: user},
		FromName:         name,
		Chat:             src.address().String(),
		Content:          content,
		At:               created(msg),
	}, true
}

// inboundID qualifies a Graph message id with its conversation: Graph ids are millisecond
// timestamps, unique within one chat or channel only, and the gateway dedupes inbound messages by
// (account, channel message id), so two chats writing in the same millisecond must not collide.
func inboundID(conversation gateway.Address, graphID string) string {
	return conversation.String() + "|" + graphID
}

// graphID is the Graph message id in an id that inboundID may have qualified.
func graphID(id string) string { return id[strings.LastIndexByte(id, '|')+1:] }

func id(m models.ChatMessageable) string {
	if p := m.GetId(); p != nil {
		return *p
	}
	return ""
}

func created(m models.ChatMessageable) time.Time {
	if p := m.GetCreatedDateTime(); p != nil {
		return p.UTC()
	}
	return time.Time{}
}
