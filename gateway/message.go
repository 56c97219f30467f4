package gateway

import (
	"crypto/rand"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// Direction tells outbound sends from inbound messages.
type Direction string

const (
	Outbound Direction = "out"
	Inbound  Direction = "in"
)

// Name is the direction as the API and the export write it: outbound or inbound.
func (d Direction) Name() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// Message is one message, outbound or inbound, with its content in the clear. It exists in this
// form only in memory: the store keeps content and recipient encrypted (DESIGN.md §3.6).
type Message struct {
	ID        string
	Tenant    string
	Direction Direction
	Channel   Channel
	Account   string
	// Peer is the other party: the recipient of an outbound message, the sender of an inbound one.
	Peer    Address
	Content Content
	// Metadata is the integrator's own key/value data; stored encrypted, returned as given.
	Metadata map[string]string

	Status           Status
	ErrorCode        string
	ErrorMessage     string
	ChannelMessageID string
	IdempotencyKey   string
	Hops             int // how many automations forwarded this message, to stop loops
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// Content is what a message says. Every field of it is encrypted at rest.
type Content struct {
	Text     string            `json:"text,omitempty"`
	Media    *Media            `json:"media,omitempty"`
	Template *Template         `json:"template,omitempty"`
	ReplyTo  string            `json:"reply_to,omitempty"` // our message id or a channel message id
	Extra    map[string]string `json:"extra,omitempty"`    // channel specifics (sender name, chat title …)
}

// Content.Extra keys for Teams specifics: a JSON array of people to @-mention
// ([{"id":"<aad-object-id>","name":"Ann"}]) and an Adaptive Card (a JSON object).
const (
	ExtraTeamsMentions     = "teams.mentions"
	ExtraTeamsAdaptiveCard = "teams.adaptive_card"
)

// Media is a reference to an attachment: a URL the adapter fetches, or the id of a file uploaded
// with POST /v1/media (exactly one of them).
type Media struct {
	URL      string `json:"url,omitempty"`
	ID       string `json:"id,omitempty"` // med_…: an uploaded MediaFile of the same tenant
	MIMEType string `json:"mime_type,omitempty"`
	Filename string `json:"filename,omitempty"`
	Caption  string `json:"caption,omitempty"`
}

// Template is a named, pre-approved message with parameters.
type Template struct {
	Name     string            `json:"name"`
	Language string            `json:"language,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
}

// NewMessageID returns a new, time-ordered message id such as msg_01J9Z….
func NewMessageID() string { return NewID("msg") }

// NewID returns a new time-ordered id with the given prefix.
func NewID(prefix string) string {
	return prefix + "_" + strings.ToLower(ulid.MustNew(ulid.Now(), rand.Reader).String())
}
