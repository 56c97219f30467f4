// Package adapters defines what a channel adapter is and runs adapters against the bus.
// Adapters know nothing of NATS or the store: the Runner feeds them messages and carries what
// they report back to the bus.
package adapters

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Adapter is one account on one channel: a WhatsApp number, a Teams service account, or the
// sandbox standing in for either.
type Adapter interface {
	// NewChannelMessageID returns the channel message id to use for a new send, or "" when the
	// channel assigns ids itself. The runner stores it before the first attempt, so a retry after a
	// crash reuses it and the channel can drop the duplicate.
	NewChannelMessageID() string

	// Send delivers one message. It returns the channel's message id. Errors are retried unless
	// they are Permanent; RetryAfter asks for a specific delay.
	Send(ctx context.Context, m Outbound) (channelMessageID string, err error)

	// Run receives from the channel until ctx is done, reporting receipts and inbound messages to
	// sink. It returns nil when ctx is cancelled.
	Run(ctx context.Context, sink Sink) error
}

// GroupSizer is implemented by adapters that send to groups. GroupSize is how many members other
// than the account itself a message to the group reaches, so that the message's status can be
// the least advanced across them; 0 when unknown.
type GroupSizer interface {
	GroupSize(ctx context.Context, group gateway.Address) (int, error)
}

// Outbound is one message to send, decrypted, with the id the channel should use.
type Outbound struct {
	MessageID        string
	ChannelMessageID string // from NewChannelMessageID, "" when the channel assigns it
	To               gateway.Address
	Content          gateway.Content
	// MediaData holds the bytes of an uploaded file (Content.Media.ID), loaded by the runner;
	// Content.Media.MIMEType and Filename describe it.
	MediaData []byte
	Attempt   int // 1 on the first try
}

// Sink takes what an adapter hears from its channel. Both calls return only once the report is
// durable (published to the bus), so an adapter may acknowledge to its channel after a nil error
// and must not when an error comes back. A receipt for a message whose Send has not returned yet
// waits (briefly) for it, so that `sent` reaches the bus before `delivered`: call the sink from the
// adapter's receiving goroutine, never from inside Send.
type Sink interface {
	Status(ctx context.Context, r Receipt) error
	Inbound(ctx context.Context, m gateway.InboundEvent) error
}

// Receipt is a status report from the channel about a message we sent.
type Receipt struct {
	ChannelMessageID string
	Status           gateway.Status
	At               time.Time
	Participant      string // group member the receipt is from (raw id; the runner indexes it)
	Error            *gateway.ErrorDetail
}

// AccountState is what an adapter with a connection of its own (WhatsApp on whatsmeow) reports
// about it for GET /v1/accounts and /readyz. A zero time is unknown.
type AccountState struct {
	State         string // a word of GET /v1/accounts: connected, unlinked, logged_out, banned_until …
	Detail        string // why, for people: never content or full identifiers
	Since         time.Time
	BannedUntil   time.Time
	LastConnected time.Time
	// LastSeenPhone is when the phone the account is linked to was last active: WhatsApp unlinks
	// a companion device whose phone stays offline for about 14 days.
	LastSeenPhone time.Time
}

// SendError classifies a failed send.
type SendError struct {
	Code       string        // stable error code for a permanent failure (not_on_whatsapp, teams_forbidden …)
	Permanent  bool          // no retry will help: the message ends failed
	RetryAfter time.Duration // the channel asked us to wait this long (429 Retry-After)
	Err        error
}

func (e *SendError) Error() string {
	kind := "retryable"
	if e.Permanent {
		kind = "permanent"
	}
	return fmt.Sprintf("%s send error %s: %v", kind, e.Code, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// Permanent marks err as a failure that retrying will not fix.
func Permanent(code string, err error) error {
	return &SendError{Code: code, Permanent: true, Err: err}
}

// RetryAfter marks err as retryable after at least d.
func RetryAfter(d time.Duration, err error) error {
	return &SendError{Code: gateway.EChannelError, RetryAfter: d, Err: err}
}

// AsSendError returns err's *SendError, or a retryable one wrapping err.
func AsSendError(err error) *SendError {
	var se *SendError
	if errors.As(err, &se) {
		return se
	}
	return &SendError{Code: gateway.EChannelError, Err: err}
}
