package teams

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoftgraph/msgraph-sdk-go/models"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// Error codes of failed Teams sends.
const (
	ECodeForbidden  = "teams_forbidden"   // 403: no permission, not a member, or app-only posting
	ECodeNotFound   = "teams_not_found"   // 404: no such chat, channel, message or user
	ECodeBadRequest = "teams_bad_request" // 400: Graph refused the request as malformed
)

// Send posts one message: teams:chat:<id> to the chat, teams:channel:<team>/<channel> to the
// channel (as a reply in the thread of Content.ReplyTo when set), teams:user:<aad-id> to the 1:1
// chat with that user, created on first use and remembered. It returns the Graph message id.
func (a *Adapter) Send(ctx context.Context, m adapters.Outbound) (string, error) {
	body, err := renderBody(m.Content)
	if err != nil {
		return "", err
	}
	to := m.To
	if to.Kind == gateway.KindTeamsUser {
		chatID, err := a.userChat(ctx, to.Value)
		if err != nil {
			return "", a.sendError(err)
		}
		to = gateway.Address{Channel: gateway.Teams, Kind: gateway.KindTeamsChat, Value: chatID}
	}
	if err := a.pacer.wait(ctx); err != nil {
		return "", err
	}
	var msg models.ChatMessageable
	switch to.Kind {
	case gateway.KindTeamsChat:
		msg, err = a.g.chats.ByChatId(to.Value).Messages().Post(ctx, body, nil)
	case gateway.KindTeamsChannel:
		team, channel, _ := strings.Cut(to.Value, "/")
		msgs := a.g.teams.ByTeamId(team).Channels().ByChannelId(channel).Messages()
		if reply := m.Content.ReplyTo; reply != "" {
			if strings.HasPrefix(reply, "msg_") {
				return "", adapters.Permanent(gateway.EInvalidField, errors.New("reply_to must be the Teams message id of the thread's first message"))
			}
			msg, err = msgs.ByChatMessageId(graphID(reply)).Replies().Post(ctx, body, nil)
		} else {
			msg, err = msgs.Post(ctx, body, nil)
		}
	default:
		return "", adapters.Permanent(gateway.EInvalidRecipient, errors.New("not a Teams address"))
	}
	if err != nil {
		return "", a.sendError(err)
	}
	if msg == nil || msg.GetId() == nil || *msg.GetId() == "" {
		return "", adapters.AsSendError(errors.New("graph answered without a message id"))
	}
	return *msg.GetId(), nil
}

// Channel specifics a message may carry in Content.Extra.
const (
	// ExtraAdaptiveCard is an Adaptive Card (a JSON object), attached after the text.
	ExtraAdaptiveCard = gateway.ExtraTeamsAdaptiveCard
	// ExtraMentions is a JSON array [{"id":"<aad-object-id>","name":"Ann"}]: each person is
	// @-mentioned, in order, before the text.
	ExtraMentions = gateway.ExtraTeamsMentions
)

// mention is one entry of ExtraMentions.
type mention struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// renderBody turns content into a Graph HTML body. Text is HTML-escaped, so nothing in it can
// become markup; line breaks become <br>. A media reference becomes a link; mentions and an
// Adaptive Card come from Content.Extra.
func renderBody(c gateway.Content) (models.ChatMessageable, error) {
	msg := models.NewChatMessage()
	var b strings.Builder
	if raw := c.Extra[ExtraMentions]; raw != "" {
		var ms []mention
		if err := json.Unmarshal([]byte(raw), &ms); err != nil || len(ms) == 0 || len(ms) > 20 {
			return nil, adapters.Permanent(gateway.EInvalidField, errors.New(ExtraMentions+` must be a JSON array of 1 to 20 {"id","name"}`))
		}
		var entities []models.ChatMessageMentionable
		for i, m := range ms {
			if m.ID == "" || m.Name == "" || strings.ContainsAny(m.ID, "/?#") {
				return nil, adapters.Permanent(gateway.EInvalidField, errors.New(ExtraMentions+": every mention needs an AAD id and a name"))
			}
			fmt.Fprintf(&b, `<at id="%d">%s</at> `, i, escapeText(m.Name))
			user := models.NewTeamworkUserIdentity()
			user.SetId(ptr(m.ID))
			user.SetDisplayName(ptr(m.Name))
			user.SetUserIdentityType(ptr(models.AADUSER_TEAMWORKUSERIDENTITYTYPE))
			who := models.NewChatMessageMentionedIdentitySet()
			who.SetUser(user)
			e := models.NewChatMessageMention()
			e.SetId(ptr(int32(i)))
			e.SetMentionText(ptr(m.Name))
			e.SetMentioned(who)
			entities = append(entities, e)
		}
		msg.SetMentions(entities)
	}
	b.WriteString(escapeText(c.Text))
	if c.Media != nil {
		u, err := url.Parse(c.Media.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, adapters.Permanent(gateway.EInvalidField, errors.New("media url must be an http(s) URL"))
		}
		label := c.Media.Caption
		if label == "" {
			label = c.Media.Filename
		}
		if label == "" {
			label = c.Media.URL
		}
		if b.Len() > 0 {
			b.WriteString("<br>")
		}
		b.WriteString(`<a href="` + html.EscapeString(u.String()) + `">` + escapeText(label) + `</a>`)
	}
	if card := strings.TrimSpace(c.Extra[ExtraAdaptiveCard]); card != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(card), &obj); err != nil {
			return nil, adapters.Permanent(gateway.EInvalidField, errors.New(ExtraAdaptiveCard+" must be an Adaptive Card JSON object"))
		}
		id, err := attachmentID()
		if err != nil {
			return nil, err
		}
		b.WriteString(`<attachment id="` + id + `"></attachment>`)
		att := models.NewChatMessageAttachment()
		att.SetId(&id)
		att.SetContentType(ptr("application/vnd.microsoft.card.adaptive"))
		att.SetContent(&card)
		msg.SetAttachments([]models.ChatMessageAttachmentable{att})
	}
	if c.Text == "" && c.Media == nil && c.Extra[ExtraAdaptiveCard] == "" {
		if c.Template != nil {
			return nil, adapters.Permanent(gateway.EInvalidField, errors.New("Teams has no message templates: send text"))
		}
		return nil, adapters.Permanent(gateway.EMissingField, errors.New("nothing to send: text is empty"))
	}
	ib := models.NewItemBody()
	ib.SetContentType(ptr(models.HTML_BODYTYPE))
	ib.SetContent(ptr(b.String()))
	msg.SetBody(ib)
	return msg, nil
}

// attachmentID is a random UUID, as Teams expects for attachment ids.
func attachmentID() (string, error) {
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	r[6], r[8] = r[6]&0x0f|0x40, r[8]&0x3f|0x80
	h := hex.EncodeToString(r[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

func escapeText(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(html.EscapeString(s), "\n", "<br>")
}

// sendError classifies a Graph failure for the runner: 429/503/504 → retry after Retry-After
// (the pacer holds every later send of the account too), 403/404/400 → permanent, the rest →
// retry with the runner's backoff.
func (a *Adapter) sendError(err error) error {
	var re *ReauthRequiredError
	if errors.As(err, &re) {
		return &adapters.SendError{Code: ECodeReauthRequired, RetryAfter: time.Minute, Err: err}
	}
	var ae abs.ApiErrorable
	if !errors.As(err, &ae) {
		return adapters.AsSendError(err)
	}
	switch code := ae.GetStatusCode(); {
	case code == 429 || code == 503 || code == 504:
		d := retryAfter(ae.GetResponseHeaders(), a.cfg.Clock.Now())
		a.pacer.hold(d)
		return adapters.RetryAfter(d, err)
	case code == 403:
		return adapters.Permanent(ECodeForbidden, err)
	case code == 404:
		return adapters.Permanent(ECodeNotFound, err)
	case code == 400:
		return adapters.Permanent(ECodeBadRequest, err)
	default:
		return adapters.AsSendError(err)
	}
}

// retryAfter reads Retry-After (seconds or an HTTP date); 0 when absent.
func retryAfter(h *abs.ResponseHeaders, now time.Time) time.Duration {
	if h == nil {
		return 0
	}
	for _, v := range h.Get("Retry-After") {
		v = strings.TrimSpace(v)
		if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
			return time.Duration(s * float64(time.Second))
		}
		if t, err := time.Parse(time.RFC1123, v); err == nil {
			if d := t.Sub(now); d > 0 {
				return d
			}
			return 0
		}
	}
	return 0
}

// userChat finds or creates the 1:1 chat with an AAD user. Graph answers a POST /chats for an
// existing one-on-one chat with that chat, so "find or create" is one call; its id is kept in
// memory and, encrypted, in the credential store, so the chat is created once.
func (a *Adapter) userChat(ctx context.Context, userID string) (string, error) {
	a.chatMu.Lock()
	defer a.chatMu.Unlock()
	if a.userChats == nil {
		m := map[string]string{}
		b, err := a.store.Get(ctx, a.key(blobUserChats))
		switch {
		case err == nil:
			if err := json.Unmarshal(b, &m); err != nil {
				return "", err
			}
		case gateway.ErrorCode(err) != gateway.ENotFound:
			return "", err
		}
		a.userChats = m
	}
	if id, ok := a.userChats[userID]; ok {
		return id, nil
	}
	self := a.serviceUserID()
	if self == "" {
		// The login tells us who we are; try a token first.
		if _, err := a.auth.Token(ctx); err != nil {
			return "", err
		}
		if self = a.serviceUserID(); self == "" {
			return "", adapters.Permanent(gateway.EInvalidField, errors.New("the service account's AAD id is unknown: set service_user_id"))
		}
	}
	if err := a.pacer.wait(ctx); err != nil {
		return "", err
	}
	chat := models.NewChat()
	ct := models.ONEONONE_CHATTYPE
	chat.SetChatType(&ct)
	chat.SetMembers([]models.ConversationMemberable{a.member(self), a.member(userID)})
	created, err := a.g.chats.Post(ctx, chat, nil)
	if err != nil {
		return "", err
	}
	if created == nil || created.GetId() == nil || *created.GetId() == "" {
		return "", errors.New("graph created a chat without an id")
	}
	id := *created.GetId()
	a.userChats[userID] = id
	b, err := json.Marshal(a.userChats)
	if err != nil {
		return "", err
	}
	if err := a.store.Put(ctx, a.key(blobUserChats), b); err != nil {
		// The chat exists; Graph returns it again next time. Keep it in memory and go on.
		a.log.Warn().Err(err).Msg("teams: could not store the 1:1 chat cache")
	}
	return id, nil
}

func (a *Adapter) member(userID string) models.ConversationMemberable {
	m := models.NewAadUserConversationMember()
	m.SetRoles([]string{"owner"})
	m.SetAdditionalData(map[string]any{
		"user@odata.bind": a.g.root + "/users('" + url.PathEscape(userID) + "')",
	})
	return m
}

// pacer keeps one account's posts at least interval apart, and holds them all after a 429.
type pacer struct {
	clock    Clock
	interval time.Duration

	mu   sync.Mutex
	next time.Time
}

func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := p.clock.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.interval)
	p.mu.Unlock()
	d := at.Sub(now)
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.clock.After(d):
		return nil
	}
}

// hold delays every later post until d from now.
func (p *pacer) hold(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.clock.Now().Add(d); t.After(p.next) {
		p.next = t
	}
}
