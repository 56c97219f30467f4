package store

import (
	"context"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Tags keeps the tags automations put on contacts, per tenant and keyed by the contact's blind
// index (the identifier itself is not stored with them).
type Tags interface {
	// UpdateTags adds and removes tags of subject in one transaction; adding a tag it has, or
	// removing one it has not, changes nothing.
	UpdateTags(ctx context.Context, tenant string, subject gateway.Address, add, remove []string) error
	// Tags returns the subject's tags, sorted; none is an empty list.
	Tags(ctx context.Context, tenant string, subject gateway.Address) ([]string, error)
}

// AutomationState is what the automation engine keeps in the store, shared by every replica.
type AutomationState interface {
	// LastFired is the occurrence a schedule rule last fired; ok=false when it never did.
	LastFired(ctx context.Context, tenant, rule string) (at time.Time, ok bool, err error)
	// SetFired records an occurrence; an older one never replaces a newer one.
	SetFired(ctx context.Context, tenant, rule string, at time.Time) error
	// ActionDone reports whether the action id was marked done.
	ActionDone(ctx context.Context, tenant, actionID string) (bool, error)
	// MarkActionDone records that the action id is done.
	MarkActionDone(ctx context.Context, tenant, actionID string, at time.Time) error
	// LastOutbound is the newest outbound message of the tenant to peer on the channel and
	// account, with its metadata (no content); ENotFound when there is none.
	LastOutbound(ctx context.Context, tenant string, ch gateway.Channel, account string, peer gateway.Address) (*gateway.Message, error)
}
