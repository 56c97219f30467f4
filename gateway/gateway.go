// Package gateway holds Switchboard's domain: messages, addresses, channels, statuses, events and
// error codes. It imports nothing of ours; every other package speaks these types.
package gateway

import "time"

// Dispatch is the payload on sb.send.<tenant> and sb.dispatch.<channel>.<tenant>.<account>. It is a
// reference only: the content stays encrypted in the store, so no plaintext crosses the bus.
type Dispatch struct {
	MessageID string  `json:"message_id"`
	Tenant    string  `json:"tenant"`
	Channel   Channel `json:"channel"`
	Account   string  `json:"account"`
	Hops      int     `json:"hops,omitempty"`
}

// InboundEvent is what an adapter receives from its channel: a message some person wrote.
// The runner fills in Tenant and Account and seals it before it reaches the bus.
type InboundEvent struct {
	ID               string    `json:"id"` // our id (msg_…), set by the runner
	Tenant           string    `json:"tenant"`
	Channel          Channel   `json:"channel"`
	Account          string    `json:"account"`
	ChannelMessageID string    `json:"channel_message_id"`
	From             Address   `json:"from"`
	FromName         string    `json:"from_name,omitempty"`
	Chat             string    `json:"chat,omitempty"` // group, chat or channel it was posted in; "" for a 1:1 message
	Content          Content   `json:"content"`
	At               time.Time `json:"at"`
}

// APIKey is an integrator's credential. Only its hash is stored; the secret is shown once.
type APIKey struct {
	ID        string // key_…, safe to log and to name as an actor
	Tenant    string
	Name      string
	Prefix    string // the first characters of the secret, to recognise it in a list
	CreatedAt time.Time
	Admin     bool // may erase its whole tenant (`keys create --admin`)
}
