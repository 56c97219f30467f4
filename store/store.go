// Package store holds the storage interfaces of Switchboard. The implementation over
// database/sql (SQLite and PostgreSQL) lives in store/sql; the keyring that encrypts what it
// stores lives in store/crypt. Implementations encrypt content and identifiers themselves, so
// callers hand over and get back plaintext domain types.
package store

import (
	"context"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Tenants keeps tenants and their API keys (hashes only).
type Tenants interface {
	EnsureTenant(ctx context.Context, tenant string) error
	// CreateAPIKey stores the hash of secret (sbk_…) under a new key id and returns the key.
	CreateAPIKey(ctx context.Context, tenant, name, secret string) (gateway.APIKey, error)
	// APIKeyBySecret finds the key whose hash matches secret; ENotFound otherwise.
	APIKeyBySecret(ctx context.Context, secret string) (gateway.APIKey, error)
}

// NewMessage is an outbound message to store at accept, with the hash of the request that
// created it so a replay of its Idempotency-Key can be compared.
type NewMessage struct {
	Message     *gateway.Message
	RequestHash string
}

// Messages keeps messages (content and peer encrypted, peer blind-indexed) and their history.
type Messages interface {
	// CreateMessage stores an accepted outbound message and its first history event. Writes are
	// group-committed. When the tenant already has a message with the same idempotency key, it
	// stores nothing and returns the existing message, its request hash and created=false.
	CreateMessage(ctx context.Context, nm NewMessage) (existing *gateway.Message, existingHash string, created bool, err error)

	// Message returns one message of the tenant; content is decrypted only when withContent.
	Message(ctx context.Context, tenant, id string, withContent bool) (*gateway.Message, error)
	// ListMessages returns the tenant's messages, newest first, without content.
	ListMessages(ctx context.Context, tenant string, f MessageFilter) (msgs []*gateway.Message, nextCursor string, err error)
	// History returns the status events of a message, oldest first.
	History(ctx context.Context, tenant, id string) ([]gateway.StatusEvent, error)

	// ClaimChannelMessageID sets the message's channel message id if it has none and returns the
	// stored one, so a retried send reuses the id of the first attempt.
	ClaimChannelMessageID(ctx context.Context, tenant, id, proposed string) (string, error)
	// MessageIDByChannelID resolves a receipt's channel message id to our message id.
	MessageIDByChannelID(ctx context.Context, tenant string, channel gateway.Channel, account, channelMessageID string) (string, error)

	// ApplyStatus records a batch of status events in one transaction: each is kept in the history
	// (once per EventID) and moves the current status only when gateway.Advances says so.
	ApplyStatus(ctx context.Context, events []gateway.StatusEvent) ([]Applied, error)

	// CreateInbound stores a received message; created=false when the same channel message id was
	// already stored (a redelivery).
	CreateInbound(ctx context.Context, m *gateway.Message) (created bool, err error)

	// Unfinished returns messages still at accepted (never routed), oldest first, after the
	// given id, so a restart can publish them again.
	Unfinished(ctx context.Context, afterID string, limit int) ([]gateway.Dispatch, error)
}

// Applied tells the status recorder what one event did, with what the delivery log needs.
type Applied struct {
	Event     gateway.StatusEvent // with Previous filled in
	Advanced  bool                // the current status moved
	Duplicate bool                // the same event was already in the history
	Missing   bool                // no such message (erased, or another tenant's)
	Masked    string              // the peer, masked for logs
	Subject   string              // short blind index for logs (s_…)
	CreatedAt time.Time           // when the message was accepted, for latency
}

// MessageFilter narrows ListMessages.
type MessageFilter struct {
	Status    gateway.Status
	Channel   gateway.Channel
	Direction gateway.Direction
	Since     time.Time
	Cursor    string // opaque, from the previous page
	Limit     int    // 1..500; 0 means 50
}
