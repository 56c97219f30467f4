package store

import (
	"context"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// ConsentState is where a subject stands on one channel (and category): opted in, opted out,
// or neither (never asked, or an opt-in that was withdrawn).
type ConsentState string

const (
	ConsentOptedIn  ConsentState = "opted_in"
	ConsentOptedOut ConsentState = "opted_out"
	ConsentNone     ConsentState = "none"
)

// Valid reports whether s is a known state.
func (s ConsentState) Valid() bool {
	return s == ConsentOptedIn || s == ConsentOptedOut || s == ConsentNone
}

// ConsentSource says where a piece of consent evidence came from.
type ConsentSource string

const (
	SourceAPI        ConsentSource = "api"
	SourceKeyword    ConsentSource = "keyword"
	SourceImport     ConsentSource = "import"
	SourceAutomation ConsentSource = "automation"
	SourceAdmin      ConsentSource = "admin"
	// SourceErasure marks the suppression entry an erasure keeps of an opt-out. No caller can
	// give it (not Valid); any later change replaces it.
	SourceErasure ConsentSource = "erasure"
)

// Valid reports whether s is a known source.
func (s ConsentSource) Valid() bool {
	switch s {
	case SourceAPI, SourceKeyword, SourceImport, SourceAutomation, SourceAdmin:
		return true
	}
	return false
}

// Consent categories. "" is the plain, channel-wide entry: a plain opt-out covers every category.
const (
	CategoryMarketing = "marketing"
	CategoryUtility   = "utility"
)

// ValidCategory reports whether c is "" (all), marketing or utility.
func ValidCategory(c string) bool { return c == "" || c == CategoryMarketing || c == CategoryUtility }

// ConsentChange is one piece of evidence to record: it is appended to the subject's history and,
// unless a newer entry exists for the same category, becomes the current state.
type ConsentChange struct {
	Tenant           string
	Channel          gateway.Channel
	Subject          gateway.Address // normalised; stored only encrypted and as its blind index
	Category         string
	State            ConsentState
	Source           ConsentSource
	Actor            string // API key id, or channel account for keywords
	At               time.Time
	InboundMessageID string // the inbound message that carried a keyword; a second record of it is a no-op
	Note             string // stored encrypted
}

// ConsentEvidence is one history entry.
type ConsentEvidence struct {
	ID               string
	Category         string
	State            ConsentState
	Source           ConsentSource
	Actor            string
	At               time.Time
	InboundMessageID string
	Note             string
}

// ConsentEntry is the current state of one category ("" = the plain entry).
type ConsentEntry struct {
	Category  string
	State     ConsentState
	Source    ConsentSource
	UpdatedAt time.Time
}

// Consent is everything recorded about one subject on one channel.
type Consent struct {
	Subject       string // blind index
	Current       []ConsentEntry
	History       []ConsentEvidence // oldest first
	LastInboundAt time.Time         // zero when the subject never wrote
}

// ConsentCheck is what the consent stage needs to decide about one message.
type ConsentCheck struct {
	Subject       string    // blind index of the recipient
	OptedOut      bool      // a plain opt-out, or an opt-out of the message's category
	OptedIn       bool      // a plain opt-in, or an opt-in of the message's category
	LastInboundAt time.Time // zero when the subject never wrote
	Bypass        bool      // the message is the one opt-out confirmation granted for this subject
	Erased        bool      // the subject was erased: only its suppression entry is left, so log nothing tying to it
	Restricted    bool      // processing is restricted for the subject (GDPR art. 18): nothing is sent to them
}

// Consents keeps the consent registry (DESIGN.md §3.5): current state, append-only evidence, the
// reply window, and the one-time bypass of the opt-out confirmation.
type Consents interface {
	// RecordConsent appends one piece of evidence. recorded=false when the change names an inbound
	// message whose evidence is already stored (a redelivery): nothing is written.
	RecordConsent(ctx context.Context, c ConsentChange) (recorded bool, err error)
	// ImportConsent records every change in one transaction: all of them or none.
	ImportConsent(ctx context.Context, cs []ConsentChange) error
	// Consent returns the subject's current state and history (empty when nothing is recorded).
	Consent(ctx context.Context, tenant string, channel gateway.Channel, subject gateway.Address) (Consent, error)
	// CheckConsent answers for one outbound message to subject.
	CheckConsent(ctx context.Context, tenant string, channel gateway.Channel, subject gateway.Address, category, messageID string) (ConsentCheck, error)
	// TouchInbound records that subject wrote at `at` (the reply window); an older time never
	// replaces a newer one.
	TouchInbound(ctx context.Context, tenant string, channel gateway.Channel, subject gateway.Address, at time.Time) error
	// GrantOptOutBypass lets the one message messageID (the opt-out confirmation, whose id only
	// the keyword handler creates) pass the opt-out of subject that inboundMessageID recorded.
	GrantOptOutBypass(ctx context.Context, tenant string, subject gateway.Address, messageID, inboundMessageID string) error
}

// IdempotencyFinder finds a tenant's message by its idempotency key, so a replay is answered
// before any policy runs. ENotFound when there is none.
type IdempotencyFinder interface {
	MessageByIdempotencyKey(ctx context.Context, tenant, key string) (msg *gateway.Message, requestHash string, err error)
}
