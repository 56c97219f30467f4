package whatsapp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// Permanent error codes of WhatsApp sends.
const (
	ENotOnWhatsApp      = "not_on_whatsapp"
	EUnsupportedContent = "unsupported_content"
	EMediaTooLarge      = "media_too_large"
	EMediaType          = "media_type_not_allowed"
	EMediaFetch         = "media_fetch_failed"
	// EReachoutLocked is the retry code of a first contact held back by WhatsApp's reach-out
	// time lock; the message waits and is sent when the lock ends.
	EReachoutLocked = "whatsapp_reachout_locked"
)

// Content.Extra keys the adapter understands.
const (
	// ExtraReaction sends a reaction (an emoji; "" removes one) to the message named by ReplyTo.
	ExtraReaction = "reaction"
	// ExtraReplyFromMe says the message named by ReplyTo was sent by this account (for replies and
	// reactions); by default it is taken to be the recipient's.
	ExtraReplyFromMe = "reply_from_me"
	// ExtraReplyParticipant is the JID of the quoted message's author in a group.
	ExtraReplyParticipant = "reply_participant"
	// ExtraReplyText is the quoted message's text, shown in the reply's preview.
	ExtraReplyText = "reply_text"
)

// generateMessageID mirrors whatsmeow's Client.GenerateMessageID for when no client exists yet.
func generateMessageID(now time.Time, own types.JID) string {
	data := make([]byte, 8, 8+20+16)
	binary.BigEndian.PutUint64(data, uint64(now.Unix()))
	if !own.IsEmpty() {
		data = append(data, own.User...)
		data = append(data, "@c.us"...)
	}
	r := make([]byte, 16)
	_, _ = rand.Read(r)
	data = append(data, r...)
	h := sha256.Sum256(data)
	return whatsmeow.WebMessageIDPrefix + strings.ToUpper(hex.EncodeToString(h[:9]))
}

// recipientJID turns a gateway address into a WhatsApp JID.
func recipientJID(to gateway.Address) (types.JID, error) {
	switch to.Kind {
	case gateway.KindPhone:
		digits := strings.TrimPrefix(to.Value, "+")
		if digits == "" || strings.Trim(digits, "0123456789") != "" {
			return types.JID{}, adapters.Permanent(gateway.EInvalidRecipient, fmt.Errorf("%s is not a phone number", to.Masked()))
		}
		return types.NewJID(digits, types.DefaultUserServer), nil
	case gateway.KindGroup:
		j, err := types.ParseJID(to.Value)
		if err != nil || j.Server != types.GroupServer {
			return types.JID{}, adapters.Permanent(gateway.EInvalidRecipient, fmt.Errorf("%s is not a group JID", to.Masked()))
		}
		return j, nil
	}
	return types.JID{}, adapters.Permanent(gateway.EInvalidRecipient, fmt.Errorf("a %s address cannot be reached on WhatsApp", to.Kind))
}

// Send delivers one message with the pre-generated id. It waits (ctx-aware) for the account's
// pacing; while the account cannot send it returns a retryable error with a RetryAfter.
func (a *Adapter) Send(ctx context.Context, m adapters.Outbound) (string, error) {
	to, err := recipientJID(m.To)
	if err != nil {
		return "", err
	}
	cli, st := a.current()
	if !st.CanSend() || cli == nil {
		return "", pausedError(st, a.clock.Now())
	}
	id := m.ChannelMessageID
	if id == "" {
		id = string(cli.GenerateMessageID())
	}

	firstContact := false
	if to.Server == types.DefaultUserServer {
		firstContact = !a.knownPeer(ctx, to)
		if until, locked := a.pace.reachoutLocked(); firstContact && locked {
			return "", reachoutError(until.Sub(a.clock.Now()))
		}
		if firstContact {
			if to, err = a.checkOnWhatsApp(ctx, cli, to); err != nil {
				return "", err
			}
		}
	}
	msg, err := a.buildMessage(ctx, cli, to, m.Content, m.MediaData)
	if err != nil {
		return "", err
	}
	if err := a.pace.wait(ctx, firstContact); err != nil {
		return "", adapters.AsSendError(gateway.WrapError(gateway.ETimeout, err, "waiting for the account's send pacing"))
	}
	// The account may have been logged out or banned while the message waited for its slot.
	cli, st = a.current()
	if !st.CanSend() || cli == nil {
		return "", pausedError(st, a.clock.Now())
	}
	resp, err := cli.SendMessage(ctx, to, msg, whatsmeow.SendRequestExtra{ID: types.MessageID(id)})
	if isReachoutLock(err) {
		until := a.pace.lockReachout()
		a.log.Warn().Time("until", until).Msg("WhatsApp put the account under its reach-out time lock: messages to numbers that never wrote wait, replies continue")
		return "", reachoutError(until.Sub(a.clock.Now()))
	}
	if err != nil {
		return "", a.classify(err)
	}
	if firstContact {
		a.pace.reachoutOpen()
	}
	if resp.ID != "" {
		id = string(resp.ID)
	}
	return id, nil
}

// isReachoutLock reports whether WhatsApp refused a send with error 463, its reach-out time lock
// on messages to people who did not write first.
func isReachoutLock(err error) bool {
	return errors.Is(err, whatsmeow.ErrServerReturnedError) && strings.HasSuffix(err.Error(), " 463")
}

// reachoutError asks the runner to try the message again when the reach-out lock ends.
func reachoutError(wait time.Duration) error {
	return &adapters.SendError{Code: EReachoutLocked, RetryAfter: max(wait, time.Second),
		Err: errors.New("WhatsApp's reach-out time lock holds messages to numbers that never wrote to this account")}
}

func (a *Adapter) current() (LinkClient, Status) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.client, a.status
}

// knownPeer reports whether the number wrote to the account before (in this process, or as
// recorded in the device's contacts, where whatsmeow keeps the push names of senders).
func (a *Adapter) knownPeer(ctx context.Context, to types.JID) bool {
	if _, ok := a.known.Load(to.User); ok {
		return true
	}
	a.mu.Lock()
	dev := a.device
	a.mu.Unlock()
	if dev == nil || dev.Contacts == nil {
		return false
	}
	ci, err := dev.Contacts.GetContact(ctx, to)
	if err == nil && ci.Found && (ci.PushName != "" || ci.FullName != "") {
		a.known.Store(to.User, struct{}{})
		return true
	}
	return false
}

// checkOnWhatsApp confirms a first-contact number is on WhatsApp and returns its canonical JID.
func (a *Adapter) checkOnWhatsApp(ctx context.Context, cli Client, to types.JID) (types.JID, error) {
	if j, ok := a.onWA.Load(to.User); ok {
		return j.(types.JID), nil
	}
	resp, err := cli.IsOnWhatsApp(ctx, []string{"+" + to.User})
	if err != nil {
		return to, a.classify(err)
	}
	for _, r := range resp {
		if r.IsIn {
			j := r.JID
			if j.IsEmpty() {
				j = to
			}
			a.onWA.Store(to.User, j)
			return j, nil
		}
	}
	return to, adapters.Permanent(ENotOnWhatsApp, fmt.Errorf("%s is not on WhatsApp", gateway.MaskIdentifier("+"+to.User)))
}

// classify maps a whatsmeow error to a retryable or permanent send error.
func (a *Adapter) classify(err error) error {
	var se *adapters.SendError
	var disc *whatsmeow.DisconnectedError
	var nerr net.Error
	switch {
	case errors.As(err, &se):
		return err
	case errors.Is(err, whatsmeow.ErrRecipientADJID), errors.Is(err, whatsmeow.ErrUnknownServer),
		errors.Is(err, whatsmeow.ErrBroadcastListUnsupported), errors.Is(err, whatsmeow.ErrInvalidInlineBotID):
		return adapters.Permanent(gateway.EInvalidRecipient, err)
	case errors.Is(err, whatsmeow.ErrNotInGroup), errors.Is(err, whatsmeow.ErrGroupNotFound):
		return adapters.Permanent(gateway.EInvalidRecipient, err)
	case errors.Is(err, whatsmeow.ErrNotLoggedIn):
		return &adapters.SendError{Code: "whatsapp_logged_out", RetryAfter: 5 * time.Minute, Err: err}
	case errors.Is(err, whatsmeow.ErrNotConnected), errors.As(err, &disc), errors.Is(err, whatsmeow.ErrIQTimedOut),
		errors.Is(err, whatsmeow.ErrMessageTimedOut), errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr):
		return &adapters.SendError{Code: "whatsapp_disconnected", RetryAfter: 10 * time.Second, Err: err}
	case errors.Is(err, whatsmeow.ErrServerReturnedError):
		return &adapters.SendError{Code: gateway.EChannelError, RetryAfter: time.Minute, Err: err}
	}
	return adapters.AsSendError(err)
}

// buildMessage turns content into a WhatsApp message: text, a reply, a reaction or media.
func (a *Adapter) buildMessage(ctx context.Context, cli Client, to types.JID, c gateway.Content, mediaData []byte) (*waE2E.Message, error) {
	if c.Template != nil {
		return nil, adapters.Permanent(EUnsupportedContent, errors.New("templates are a WhatsApp Business API feature; a linked device sends text and media"))
	}
	if emoji, ok := c.Extra[ExtraReaction]; ok {
		if c.ReplyTo == "" {
			return nil, adapters.Permanent(EUnsupportedContent, errors.New("a reaction needs reply_to: the message it reacts to"))
		}
		return &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{
			Key:               a.messageKey(to, c),
			Text:              proto.String(emoji),
			SenderTimestampMS: proto.Int64(a.clock.Now().UnixMilli()),
		}}, nil
	}
	var ci *waE2E.ContextInfo
	if c.ReplyTo != "" {
		key := a.messageKey(to, c)
		ci = &waE2E.ContextInfo{StanzaID: key.ID, Participant: key.Participant}
		if q := c.Extra[ExtraReplyText]; q != "" {
			ci.QuotedMessage = &waE2E.Message{Conversation: proto.String(q)}
		}
		if key.Participant == nil {
			// The quoted message's author: the peer in a 1:1 chat unless it was ours.
			if key.GetFromMe() {
				ci.Participant = proto.String(a.ownJID().ToNonAD().String())
			} else {
				ci.Participant = proto.String(to.String())
			}
		}
	}
	if c.Media != nil {
		return a.mediaMessage(ctx, cli, c, mediaData, ci)
	}
	if c.Text == "" {
		return nil, adapters.Permanent(EUnsupportedContent, errors.New("the message has no text and no media"))
	}
	if ci == nil {
		return &waE2E.Message{Conversation: proto.String(c.Text)}, nil
	}
	return &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String(c.Text), ContextInfo: ci}}, nil
}

func (a *Adapter) messageKey(chat types.JID, c gateway.Content) *waCommon.MessageKey {
	fromMe := c.Extra[ExtraReplyFromMe] == "true"
	key := &waCommon.MessageKey{
		RemoteJID: proto.String(chat.String()),
		FromMe:    proto.Bool(fromMe),
		ID:        proto.String(c.ReplyTo),
	}
	if p := c.Extra[ExtraReplyParticipant]; p != "" {
		key.Participant = proto.String(p)
	} else if chat.Server == types.GroupServer && fromMe {
		key.Participant = proto.String(a.ownJID().ToNonAD().String())
	}
	return key
}

// MediaLimits bound media fetched by URL.
type MediaLimits struct {
	MaxBytes int64 // default 16 MiB (WhatsApp's limit for images, audio and video)
	// MaxDocumentBytes is the limit for documents; default 100 MiB.
	MaxDocumentBytes int64
	// AllowedTypes lists MIME types or type/* families; default image/*, video/*, audio/*,
	// application/pdf and common office documents.
	AllowedTypes []string
	// AllowPrivateAddresses lets media URLs point at loopback and private networks (tests, on-premise
	// media servers). Off by default: a URL must not make the gateway fetch from its own network.
	AllowPrivateAddresses bool
}

func (l MediaLimits) withDefaults() MediaLimits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 16 << 20
	}
	if l.MaxDocumentBytes <= 0 {
		l.MaxDocumentBytes = 100 << 20
	}
	if len(l.AllowedTypes) == 0 {
		l.AllowedTypes = gateway.DefaultMediaTypes()
	}
	return l
}

func (l MediaLimits) allowed(mimeType string) bool {
	return gateway.MediaTypeAllowed(l.AllowedTypes, mimeType)
}

func mediaKind(mimeType string) whatsmeow.MediaType {
	switch {
	case strings.HasPrefix(mimeType, "image/"):
		return whatsmeow.MediaImage
	case strings.HasPrefix(mimeType, "video/"):
		return whatsmeow.MediaVideo
	case strings.HasPrefix(mimeType, "audio/"):
		return whatsmeow.MediaAudio
	}
	return whatsmeow.MediaDocument
}

// fetchMedia downloads a media URL within the limits and returns its bytes and MIME type.
func (a *Adapter) fetchMedia(ctx context.Context, m *gateway.Media) ([]byte, string, error) {
	u, err := url.Parse(m.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, "", adapters.Permanent(EMediaFetch, errors.New("media.url must be an http(s) URL"))
	}
	client := a.cfg.HTTPClient
	if !a.cfg.Media.AllowPrivateAddresses {
		client = publicOnly(client)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL, nil)
	if err != nil {
		return nil, "", adapters.Permanent(EMediaFetch, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, errPrivateAddress) {
			return nil, "", adapters.Permanent(EMediaFetch, err)
		}
		return nil, "", &adapters.SendError{Code: EMediaFetch, RetryAfter: 30 * time.Second, Err: err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return nil, "", &adapters.SendError{Code: EMediaFetch, RetryAfter: 30 * time.Second, Err: fmt.Errorf("media server answered %s", resp.Status)}
	case resp.StatusCode != http.StatusOK:
		return nil, "", adapters.Permanent(EMediaFetch, fmt.Errorf("media server answered %s", resp.Status))
	}
	limit := a.cfg.Media.MaxDocumentBytes
	if a.cfg.Media.MaxBytes > limit {
		limit = a.cfg.Media.MaxBytes
	}
	if resp.ContentLength > limit {
		return nil, "", adapters.Permanent(EMediaTooLarge, fmt.Errorf("media is %d bytes, the limit is %d", resp.ContentLength, limit))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", &adapters.SendError{Code: EMediaFetch, RetryAfter: 30 * time.Second, Err: err}
	}
	mimeType := m.MIMEType
	if mimeType == "" {
		mimeType, _, _ = mime.ParseMediaType(resp.Header.Get("Content-Type"))
	}
	return a.checkMedia(data, mimeType)
}

// checkMedia applies the account's type and size limits to media bytes, fetched or uploaded,
// sniffing the type when none was given.
func (a *Adapter) checkMedia(data []byte, mimeType string) ([]byte, string, error) {
	limit := max(a.cfg.Media.MaxDocumentBytes, a.cfg.Media.MaxBytes)
	if int64(len(data)) > limit {
		return nil, "", adapters.Permanent(EMediaTooLarge, fmt.Errorf("media is over the limit of %d bytes", limit))
	}
	if mimeType == "" || mimeType == "application/octet-stream" {
		mimeType, _, _ = mime.ParseMediaType(http.DetectContentType(data))
	}
	if !a.cfg.Media.allowed(mimeType) {
		return nil, "", adapters.Permanent(EMediaType, fmt.Errorf("media type %q is not allowed", mimeType))
	}
	if mediaKind(mimeType) != whatsmeow.MediaDocument && int64(len(data)) > a.cfg.Media.MaxBytes {
		return nil, "", adapters.Permanent(EMediaTooLarge, fmt.Errorf("%s media is %d bytes, the limit is %d", mimeType, len(data), a.cfg.Media.MaxBytes))
	}
	return data, mimeType, nil
}

func (a *Adapter) mediaMessage(ctx context.Context, cli Client, c gateway.Content, uploaded []byte, ci *waE2E.ContextInfo) (*waE2E.Message, error) {
	var data []byte
	var mimeType string
	var err error
	switch {
	case c.Media.ID != "" && uploaded == nil:
		return nil, adapters.Permanent(EMediaFetch, errors.New("the uploaded media file is gone (expired or deleted)"))
	case c.Media.ID != "":
		data, mimeType, err = a.checkMedia(uploaded, c.Media.MIMEType)
	default:
		data, mimeType, err = a.fetchMedia(ctx, c.Media)
	}
	if err != nil {
		return nil, err
	}
	kind := mediaKind(mimeType)
	up, err := cli.Upload(ctx, data, kind)
	if err != nil {
		return nil, a.classify(err)
	}
	caption := c.Media.Caption
	if caption == "" {
		caption = c.Text
	}
	var capPtr *string
	if caption != "" {
		capPtr = proto.String(caption)
	}
	switch kind {
	case whatsmeow.MediaImage:
		return &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
			Caption: capPtr, Mimetype: proto.String(mimeType), URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath),
			MediaKey: up.MediaKey, FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			ContextInfo: ci,
		}}, nil
	case whatsmeow.MediaVideo:
		return &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
			Caption: capPtr, Mimetype: proto.String(mimeType), URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath),
			MediaKey: up.MediaKey, FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			ContextInfo: ci,
		}}, nil
	case whatsmeow.MediaAudio:
		return &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
			Mimetype: proto.String(mimeType), URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath),
			MediaKey: up.MediaKey, FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
			ContextInfo: ci,
		}}, nil
	}
	name := c.Media.Filename
	if name == "" && c.Media.URL != "" {
		if u, err := url.Parse(c.Media.URL); err == nil {
			name = path.Base(u.Path)
		}
	}
	if name == "" || name == "." || name == "/" {
		name = "document"
	}
	return &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
		Caption: capPtr, Mimetype: proto.String(mimeType), FileName: proto.String(name), Title: proto.String(name),
		URL: proto.String(up.URL), DirectPath: proto.String(up.DirectPath),
		MediaKey: up.MediaKey, FileEncSHA256: up.FileEncSHA256, FileSHA256: up.FileSHA256, FileLength: proto.Uint64(up.FileLength),
		ContextInfo: ci,
	}}, nil
}

var errPrivateAddress = errors.New("media URLs must not point at loopback, private or link-local addresses")

// publicOnly returns a copy of c whose dialer refuses loopback, private and link-local addresses
// (checked after DNS resolution, so a name cannot smuggle one in).
func publicOnly(c *http.Client) *http.Client {
	cc := *c
	d := &net.Dialer{Timeout: 10 * time.Second}
	cc.Transport = &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, err
			}
			for _, ip := range ips {
				if ip.IP.IsLoopback() || ip.IP.IsPrivate() || ip.IP.IsLinkLocalUnicast() || ip.IP.IsUnspecified() || ip.IP.IsLinkLocalMulticast() {
					return nil, errPrivateAddress
				}
			}
			return d.DialContext(ctx, network, net.JoinHostPort(ips[0].IP.String(), port))
		},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	return &cc
}
