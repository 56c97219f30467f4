package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// Limits on a send. They are part of the API contract: change them only upward.
const (
	MaxTextLen            = 4096 // characters (runes) of text
	MaxCaptionLen         = 1024
	MaxURLLen             = 2048
	MaxFilenameLen        = 255
	MaxTemplateNameLen    = 512
	MaxTemplateParams     = 64
	MaxTemplateParamLen   = 1024
	MaxTemplateParamName  = 64
	MaxTemplateLanguage   = 32
	MaxReplyToLen         = 256
	MaxMentions           = 20
	MaxMentionName        = 256
	MaxMetadataKeys       = 16
	MaxMetadataKeyLen     = 40
	MaxMetadataValueLen   = 500
	MaxIdempotencyKeyLen  = 255
	maxMessageIDLen       = 64
	idempotencyKeyHeader  = "Idempotency-Key"
	idempotentReplayedHdr = "Idempotent-Replayed"
)

// sendRequest is the body of POST /v1/messages. Its own types, not the domain's, so the wire
// format does not move when gateway's json tags do.
type sendRequest struct {
	Channel  string            `json:"channel,omitempty"`
	To       string            `json:"to,omitempty"`
	From     string            `json:"from,omitempty"`
	Text     string            `json:"text,omitempty"`
	Media    *mediaJSON        `json:"media,omitempty"`
	Template *templateJSON     `json:"template,omitempty"`
	ReplyTo  string            `json:"reply_to,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Teams    *teamsJSON        `json:"teams,omitempty"`
}

// teamsJSON holds Teams specifics: people to @-mention before the text, and an Adaptive Card.
type teamsJSON struct {
	Mentions     []mentionJSON   `json:"mentions,omitempty"`
	AdaptiveCard json.RawMessage `json:"adaptive_card,omitempty"`
}

type mentionJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type mediaJSON struct {
	URL      string `json:"url,omitempty"`
	ID       string `json:"id,omitempty"`
	MIMEType string `json:"mime_type,omitempty"`
	Filename string `json:"filename,omitempty"`
	Caption  string `json:"caption,omitempty"`
}

type templateJSON struct {
	Name     string            `json:"name,omitempty"`
	Language string            `json:"language,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
}

type acceptedResponse struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// createMessage is POST /v1/messages: validate, hand to Intake, answer 202 — or, for a repeated
// Idempotency-Key, the original answer (same hash) or 409 (another request).
func (s *Server) createMessage(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	idemKey, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var req sendRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	msg, err := s.newMessage(key.Tenant, &req)
	if err != nil {
		return err
	}
	if err := s.attachUpload(r.Context(), msg); err != nil {
		return err
	}
	nm := store.NewMessage{Message: msg}
	if idemKey != "" {
		msg.IdempotencyKey = idemKey
		if nm.RequestHash, err = requestHash(http.MethodPost, "/v1/messages", &req); err != nil {
			return err
		}
	}

	got, existingHash, created, err := s.deps.Intake.Accept(r.Context(), nm)
	if err != nil {
		return err
	}
	id := msg.ID
	if got != nil && got.ID != "" {
		id = got.ID
	}
	h := w.Header()
	if !created {
		if got == nil || got.ID == "" {
			return gateway.Errorf(gateway.EInternal, "intake reported an existing message but returned none")
		}
		if idemKey == "" || existingHash != nm.RequestHash {
			return gateway.FieldErrorf(gateway.EIdempotencyConflict, idempotencyKeyHeader,
				"this Idempotency-Key was already used with a different request; use a new key for a new request")
		}
		h.Set(idempotentReplayedHdr, "true")
	}
	h.Set("Location", "/v1/messages/"+id)
	return writeJSON(w, http.StatusAccepted, acceptedResponse{ID: id, Status: string(gateway.StatusAccepted)})
}

// idempotencyKey validates the Idempotency-Key header: absent is fine; present, it is 1 to 255
// printable ASCII characters.
func idempotencyKey(r *http.Request) (string, error) {
	vs := r.Header.Values(idempotencyKeyHeader)
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs) > 1 {
		return "", gateway.FieldErrorf(gateway.EInvalidField, idempotencyKeyHeader, "send one Idempotency-Key header, not %d", len(vs))
	}
	k := vs[0]
	switch {
	case strings.TrimSpace(k) == "":
		return "", gateway.FieldErrorf(gateway.EInvalidField, idempotencyKeyHeader, "must not be empty")
	case len(k) > MaxIdempotencyKeyLen:
		return "", gateway.FieldErrorf(gateway.EInvalidField, idempotencyKeyHeader, "must be at most %d characters", MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", gateway.FieldErrorf(gateway.EInvalidField, idempotencyKeyHeader, "must be printable ASCII")
		}
	}
	return k, nil
}

// requestHash identifies a request for idempotency: SHA-256 over the method, the path and the
// canonical JSON of the decoded body (fields in struct order, map keys sorted, empty fields
// left out), so the same request sent with other whitespace or key order is the same request.
func requestHash(method, path string, req *sendRequest) (string, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return "", gateway.WrapError(gateway.EInternal, err, "hashing the request")
	}
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{' '})
	h.Write([]byte(path))
	h.Write([]byte{'\n'})
	h.Write(b)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])), nil
}

// newMessage validates a send and builds the message to accept. Checks go in field order so
// the first problem reported is the first a reader of the request would see.
func (s *Server) newMessage(tenant string, req *sendRequest) (*gateway.Message, error) {
	to := strings.TrimSpace(req.To)
	if to == "" {
		return nil, gateway.FieldErrorf(gateway.EMissingField, "to", "a recipient is required")
	}
	ch := gateway.Channel(req.Channel)
	switch {
	case req.Channel == "" && strings.HasPrefix(to, "teams:"):
		ch = gateway.Teams
	case req.Channel == "":
		return nil, gateway.FieldErrorf(gateway.EMissingField, "channel", "a channel is required (whatsapp or teams); it may be left out only for teams: recipients")
	case !ch.Valid():
		return nil, gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q: use whatsapp or teams", req.Channel)
	}
	if ch == gateway.WhatsApp && strings.HasPrefix(to, "teams:") {
		return nil, gateway.FieldErrorf(gateway.EInvalidRecipient, "to", "a teams: address cannot be sent on channel whatsapp; use channel teams")
	}
	peer, err := s.addrs.parse(ch, to)
	if err != nil {
		return nil, err
	}

	account := req.From
	if account == "" {
		var ok bool
		if account, ok = s.deps.Directory.DefaultAccount(tenant, ch); !ok {
			return nil, gateway.FieldErrorf(gateway.EUnknownAccount, "from", "there is no default %s account for this tenant: name one in from", ch)
		}
	} else if !s.deps.Directory.HasAccount(tenant, ch, account) {
		return nil, gateway.FieldErrorf(gateway.EUnknownAccount, "from", "no %s account named %q for this tenant", ch, account)
	}

	content, err := validContent(req)
	if err != nil {
		return nil, err
	}
	if err := teamsExtras(ch, req.Teams, &content); err != nil {
		return nil, err
	}
	if err := validMetadata(req.Metadata); err != nil {
		return nil, err
	}

	now := s.now().UTC()
	return &gateway.Message{
		ID:        gateway.NewMessageID(),
		Tenant:    tenant,
		Direction: gateway.Outbound,
		Channel:   ch,
		Account:   account,
		Peer:      peer,
		Content:   content,
		Metadata:  req.Metadata,
		Status:    gateway.StatusAccepted,
		CreatedAt: now,
		UpdatedAt: now,
	}, nil
}

// validMediaSource checks that media names exactly one source: a URL the adapter fetches, or a
// file uploaded with POST /v1/media.
func validMediaSource(m *mediaJSON) error {
	switch {
	case m.URL == "" && m.ID == "":
		return gateway.FieldErrorf(gateway.EMissingField, "media.url", "media needs a url, or the id of a file uploaded with POST /v1/media")
	case m.URL != "" && m.ID != "":
		return gateway.FieldErrorf(gateway.EInvalidField, "media.id", "give media.url or media.id, not both")
	case m.ID != "":
		if !strings.HasPrefix(m.ID, "med_") || len(m.ID) > 64 {
			return gateway.FieldErrorf(gateway.EInvalidField, "media.id", "is not a media id (med_…, from POST /v1/media)")
		}
		return nil
	case len(m.URL) > MaxURLLen:
		return gateway.FieldErrorf(gateway.EInvalidField, "media.url", "must be at most %d characters", MaxURLLen)
	}
	if u, err := url.Parse(m.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return gateway.FieldErrorf(gateway.EInvalidField, "media.url", "must be an absolute http or https URL")
	}
	return nil
}

func validContent(req *sendRequest) (gateway.Content, error) {
	var c gateway.Content
	if req.Text == "" && req.Media == nil && req.Template == nil {
		return c, gateway.FieldErrorf(gateway.EMissingField, "text", "a message needs text, media or a template")
	}
	if n := utf8.RuneCountInString(req.Text); n > MaxTextLen {
		return c, gateway.FieldErrorf(gateway.EInvalidField, "text", "is %d characters long; the limit is %d", n, MaxTextLen)
	}
	c.Text = req.Text
	if m := req.Media; m != nil {
		if err := validMediaSource(m); err != nil {
			return c, err
		}
		if m.MIMEType != "" {
			if mt, _, err := mime.ParseMediaType(m.MIMEType); err != nil || !strings.Contains(mt, "/") {
				return c, gateway.FieldErrorf(gateway.EInvalidField, "media.mime_type", "must be a MIME type such as image/jpeg")
			}
		}
		if len(m.Filename) > MaxFilenameLen || strings.ContainsAny(m.Filename, "/\\\x00") {
			return c, gateway.FieldErrorf(gateway.EInvalidField, "media.filename", "must be a file name of at most %d characters, without path separators", MaxFilenameLen)
		}
		if n := utf8.RuneCountInString(m.Caption); n > MaxCaptionLen {
			return c, gateway.FieldErrorf(gateway.EInvalidField, "media.caption", "is %d characters long; the limit is %d", n, MaxCaptionLen)
		}
		c.Media = &gateway.Media{URL: m.URL, ID: m.ID, MIMEType: m.MIMEType, Filename: m.Filename, Caption: m.Caption}
	}
	if t := req.Template; t != nil {
		if strings.TrimSpace(t.Name) == "" {
			return c, gateway.FieldErrorf(gateway.EMissingField, "template.name", "a template needs a name")
		}
		if len(t.Name) > MaxTemplateNameLen {
			return c, gateway.FieldErrorf(gateway.EInvalidField, "template.name", "must be at most %d characters", MaxTemplateNameLen)
		}
		if len(t.Language) > MaxTemplateLanguage {
			return c, gateway.FieldErrorf(gateway.EInvalidField, "template.language", "must be a language code such as en_US")
		}
		if len(t.Params) > MaxTemplateParams {
			return c, gateway.FieldErrorf(gateway.EInvalidField, "template.params", "at most %d parameters", MaxTemplateParams)
		}
		for k, v := range t.Params {
			if k == "" || len(k) > MaxTemplateParamName || utf8.RuneCountInString(v) > MaxTemplateParamLen {
				return c, gateway.FieldErrorf(gateway.EInvalidField, "template.params", "parameter names are 1 to %d characters, values at most %d", MaxTemplateParamName, MaxTemplateParamLen)
			}
		}
		c.Template = &gateway.Template{Name: t.Name, Language: t.Language, Params: t.Params}
	}
	if len(req.ReplyTo) > MaxReplyToLen {
		return c, gateway.FieldErrorf(gateway.EInvalidField, "reply_to", "must be at most %d characters", MaxReplyToLen)
	}
	c.ReplyTo = req.ReplyTo
	return c, nil
}

// teamsExtras checks the teams object and carries it in the content for the Teams adapter.
func teamsExtras(ch gateway.Channel, t *teamsJSON, c *gateway.Content) error {
	if t == nil {
		return nil
	}
	if ch != gateway.Teams {
		return gateway.FieldErrorf(gateway.EInvalidField, "teams", "only messages on channel teams take a teams object")
	}
	if len(t.Mentions) > MaxMentions {
		return gateway.FieldErrorf(gateway.EInvalidField, "teams.mentions", "at most %d mentions", MaxMentions)
	}
	for i, m := range t.Mentions {
		if m.ID == "" || m.Name == "" || strings.ContainsAny(m.ID, "/?# ") || utf8.RuneCountInString(m.Name) > MaxMentionName {
			return gateway.FieldErrorf(gateway.EInvalidField, fmt.Sprintf("teams.mentions[%d]", i), "a mention needs the person's AAD object id and a name of at most %d characters", MaxMentionName)
		}
	}
	card := bytes.TrimSpace(t.AdaptiveCard)
	if len(card) > 0 && (card[0] != '{' || !json.Valid(card)) {
		return gateway.FieldErrorf(gateway.EInvalidField, "teams.adaptive_card", "must be an Adaptive Card JSON object")
	}
	if len(t.Mentions) == 0 && len(card) == 0 {
		return nil
	}
	if c.Extra == nil {
		c.Extra = map[string]string{}
	}
	if len(t.Mentions) > 0 {
		b, _ := json.Marshal(t.Mentions)
		c.Extra[gateway.ExtraTeamsMentions] = string(b)
	}
	if len(card) > 0 {
		c.Extra[gateway.ExtraTeamsAdaptiveCard] = string(card)
	}
	return nil
}

func validMetadata(md map[string]string) error {
	if len(md) > MaxMetadataKeys {
		return gateway.FieldErrorf(gateway.EInvalidField, "metadata", "at most %d keys, not %d", MaxMetadataKeys, len(md))
	}
	for k, v := range md {
		if k == "" || utf8.RuneCountInString(k) > MaxMetadataKeyLen {
			return gateway.FieldErrorf(gateway.EInvalidField, "metadata", "keys are 1 to %d characters", MaxMetadataKeyLen)
		}
		if utf8.RuneCountInString(v) > MaxMetadataValueLen {
			return gateway.FieldErrorf(gateway.EInvalidField, "metadata."+k, "values are at most %d characters", MaxMetadataValueLen)
		}
	}
	return nil
}

// messageJSON is a message as the API shows it. From and To read as on the wire: for an
// outbound message From is our account and To the recipient; for an inbound one the reverse.
type messageJSON struct {
	ID               string             `json:"id"`
	Direction        string             `json:"direction"` // outbound | inbound
	Channel          gateway.Channel    `json:"channel"`
	Account          string             `json:"account"`
	From             string             `json:"from"`
	To               string             `json:"to"`
	Status           gateway.Status     `json:"status"`
	Error            *errorJSON         `json:"error,omitempty"`
	ChannelMessageID string             `json:"channel_message_id,omitempty"`
	IdempotencyKey   string             `json:"idempotency_key,omitempty"`
	Metadata         map[string]string  `json:"metadata,omitempty"`
	Content          *contentJSON       `json:"content,omitempty"`
	CreatedAt        time.Time          `json:"created_at"`
	UpdatedAt        time.Time          `json:"updated_at"`
	History          *[]statusEventJSON `json:"history,omitempty"` // only on GET /v1/messages/{id}, always there
}

type errorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

type contentJSON struct {
	Text     string            `json:"text,omitempty"`
	Media    *mediaJSON        `json:"media,omitempty"`
	Template *templateJSON     `json:"template,omitempty"`
	ReplyTo  string            `json:"reply_to,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
}

type statusEventJSON struct {
	Status           gateway.Status `json:"status"`
	Previous         gateway.Status `json:"previous,omitempty"`
	At               time.Time      `json:"at"`
	ChannelMessageID string         `json:"channel_message_id,omitempty"`
	Error            *errorJSON     `json:"error,omitempty"`
}

// Direction names on the wire (gateway.Direction.Name).
const (
	directionOutbound = "outbound"
	directionInbound  = "inbound"
)

func toMessageJSON(m *gateway.Message, withContent bool) messageJSON {
	out := messageJSON{
		ID:               m.ID,
		Direction:        m.Direction.Name(),
		Channel:          m.Channel,
		Account:          m.Account,
		From:             m.Account,
		To:               m.Peer.String(),
		Status:           m.Status,
		ChannelMessageID: m.ChannelMessageID,
		IdempotencyKey:   m.IdempotencyKey,
		Metadata:         m.Metadata,
		CreatedAt:        m.CreatedAt.UTC(),
		UpdatedAt:        m.UpdatedAt.UTC(),
	}
	if m.Direction == gateway.Inbound {
		out.From, out.To = m.Peer.String(), m.Account
	}
	if m.ErrorCode != "" {
		out.Error = &errorJSON{Code: m.ErrorCode, Message: m.ErrorMessage}
	}
	if withContent {
		c := m.Content
		cj := &contentJSON{Text: c.Text, ReplyTo: c.ReplyTo, Extra: c.Extra}
		if c.Media != nil {
			cj.Media = &mediaJSON{URL: c.Media.URL, ID: c.Media.ID, MIMEType: c.Media.MIMEType, Filename: c.Media.Filename, Caption: c.Media.Caption}
		}
		if c.Template != nil {
			cj.Template = &templateJSON{Name: c.Template.Name, Language: c.Template.Language, Params: c.Template.Params}
		}
		out.Content = cj
	}
	return out
}

// getMessage is GET /v1/messages/{id}: metadata and full status history; content only with
// ?include=content. Another tenant's id is not_found, exactly like an id that never existed.
func (s *Server) getMessage(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	q := r.URL.Query()
	withContent := false
	switch inc := q.Get("include"); inc {
	case "":
	case "content":
		withContent = true
	default:
		return gateway.FieldErrorf(gateway.EInvalidField, "include", "unknown value %q: the only value is content", inc)
	}
	id := r.PathValue("id")
	notFound := gateway.Errorf(gateway.ENotFound, "no message %s", id)
	if !strings.HasPrefix(id, "msg_") || len(id) > maxMessageIDLen {
		return notFound
	}
	m, err := s.deps.Messages.Message(r.Context(), key.Tenant, id, withContent)
	if err != nil {
		if gateway.ErrorCode(err) == gateway.ENotFound {
			return notFound
		}
		return err
	}
	if m == nil || (m.Tenant != "" && m.Tenant != key.Tenant) {
		return notFound // defence in depth: the reader is tenant-scoped already
	}
	events, err := s.deps.Messages.History(r.Context(), key.Tenant, id)
	if err != nil {
		return err
	}
	hist := make([]statusEventJSON, len(events))
	for i, e := range events {
		hist[i] = statusEventJSON{Status: e.Status, Previous: e.Previous, At: e.At.UTC(), ChannelMessageID: e.ChannelMessageID}
		if e.Error != nil {
			hist[i].Error = &errorJSON{Code: e.Error.Code, Message: e.Error.Message}
		}
	}
	out := toMessageJSON(m, withContent)
	out.History = &hist
	return writeJSON(w, http.StatusOK, out)
}

type listResponse struct {
	Data       []messageJSON `json:"data"`
	NextCursor *string       `json:"next_cursor"` // null on the last page
}

// listMessages is GET /v1/messages?status=&channel=&direction=&since=&limit=&cursor=, newest
// first, without content.
func (s *Server) listMessages(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	q := r.URL.Query()
	var f store.MessageFilter
	if v := q.Get("status"); v != "" {
		if f.Status = gateway.Status(v); !f.Status.Valid() {
			return gateway.FieldErrorf(gateway.EInvalidField, "status", "unknown status %q", v)
		}
	}
	if v := q.Get("channel"); v != "" {
		if f.Channel = gateway.Channel(v); !f.Channel.Valid() {
			return gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q: use whatsapp or teams", v)
		}
	}
	switch v := q.Get("direction"); v {
	case "":
	case directionOutbound:
		f.Direction = gateway.Outbound
	case directionInbound:
		f.Direction = gateway.Inbound
	default:
		return gateway.FieldErrorf(gateway.EInvalidField, "direction", "must be outbound or inbound")
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return gateway.FieldErrorf(gateway.EInvalidField, "since", "must be an RFC 3339 time such as 2026-11-22T09:00:00Z")
		}
		f.Since = t.UTC()
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return gateway.FieldErrorf(gateway.EInvalidField, "limit", "must be a whole number from 1 to 500")
		}
		f.Limit = n
	}
	f.Cursor = q.Get("cursor")

	msgs, next, err := s.deps.Messages.ListMessages(r.Context(), key.Tenant, f)
	if err != nil {
		return err
	}
	out := listResponse{Data: make([]messageJSON, 0, len(msgs))}
	for _, m := range msgs {
		if m == nil || (m.Tenant != "" && m.Tenant != key.Tenant) {
			continue
		}
		out.Data = append(out.Data, toMessageJSON(m, false))
	}
	if next != "" {
		out.NextCursor = &next
	}
	return writeJSON(w, http.StatusOK, out)
}

// checkQuery refuses query parameters other than allowed, a malformed query string, and a
// parameter given twice unless the route takes lists: a misspelt filter must not silently return
// everything.
func checkQuery(r *http.Request, repeatable bool, allowed []string) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return gateway.Errorf(gateway.EInvalidField, "the query string is malformed")
	}
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return gateway.FieldErrorf(gateway.EUnknownField, k, "unknown query parameter %q: this route takes none", k)
			}
			return gateway.FieldErrorf(gateway.EUnknownField, k, "unknown query parameter %q (this route takes %s)", k, strings.Join(allowed, ", "))
		}
		if len(vs) > 1 && !repeatable {
			return gateway.FieldErrorf(gateway.EInvalidField, k, "give %s once", k)
		}
	}
	return nil
}
