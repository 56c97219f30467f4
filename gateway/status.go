package gateway

import "time"

// Status is where a message stands. Statuses only move forward (see Advances).
type Status string

const (
	StatusAccepted  Status = "accepted"
	StatusQueued    Status = "queued"
	StatusSent      Status = "sent"
	StatusDelivered Status = "delivered"
	StatusRead      Status = "read"
	StatusPlayed    Status = "played"
	StatusRejected  Status = "rejected" // refused by policy before reaching the channel
	StatusFailed    Status = "failed"   // the channel refused it, or retries ran out

	// Inbound messages carry this status: they were received, and nothing more happens to them.
	StatusReceived Status = "received"
)

// rank orders statuses. A terminal failure outranks everything before it, but a message that
// was already delivered cannot become failed: a late error is history only.
var rank = map[Status]int{
	StatusAccepted:  1,
	StatusQueued:    2,
	StatusSent:      3,
	StatusDelivered: 4,
	StatusRead:      5,
	StatusPlayed:    6,
	StatusRejected:  7,
	StatusFailed:    7,
	StatusReceived:  1,
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool { _, ok := rank[s]; return ok }

// Final reports whether no further status change is expected: read, played, rejected, failed.
func (s Status) Final() bool {
	switch s {
	case StatusRead, StatusPlayed, StatusRejected, StatusFailed, StatusReceived:
		return true
	}
	return false
}

// Advances reports whether moving from cur to next changes the current status. Events that do not
// advance are still kept in the history (a delivered receipt that arrives after read, say).
func Advances(cur, next Status) bool {
	if cur == next || !next.Valid() {
		return false
	}
	if cur == "" {
		return true
	}
	if cur == StatusRejected || cur == StatusFailed {
		return false
	}
	if next == StatusRejected || next == StatusFailed {
		// A failure after the channel confirmed delivery does not undo the delivery.
		return rank[cur] < rank[StatusDelivered]
	}
	return rank[next] > rank[cur]
}

// StatusEvent is one status change of one message: what adapters and the pipeline publish on
// sb.status.<tenant>, what the store keeps as history, and what the delivery log prints.
type StatusEvent struct {
	MessageID        string    `json:"message_id"`
	Tenant           string    `json:"tenant"`
	Channel          Channel   `json:"channel"`
	Account          string    `json:"account"`
	Status           Status    `json:"status"`
	Previous         Status    `json:"previous,omitempty"` // filled in by the recorder
	At               time.Time `json:"at"`
	ChannelMessageID string    `json:"channel_message_id,omitempty"`
	Participant      string    `json:"participant,omitempty"` // group receipts: blind index of the member
	// Recipients, on the sent event of a group message, is how many members it went to: the
	// message then reaches delivered or read only when every one of them has (the least advanced
	// participant), each member's receipt kept in the history.
	Recipients int          `json:"recipients,omitempty"`
	Error      *ErrorDetail `json:"error,omitempty"`
}

// ErrorDetail is the error part of a status event or an API error body.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

// EventID is the idempotency key of a status event: a retried publish of the same change is
// dropped by the bus, and the store keeps one history row for it.
func (e StatusEvent) EventID() string {
	id := e.MessageID + ":" + string(e.Status)
	if e.Participant != "" {
		id += ":" + e.Participant
	}
	return id
}
