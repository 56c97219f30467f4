package store

import (
	"context"
	"time"
)

// Webhook is a webhook endpoint created through the API (config endpoints live in the config
// file). Its secrets are stored sealed with the tenant key; the store hands them back in the clear.
type Webhook struct {
	ID           string
	Tenant       string
	URL          string
	Events       []string // empty: every event type
	AllowPrivate bool
	Secrets      []WebhookSecret // newest first; one, or two while rotating
	CreatedAt    time.Time
	DisabledAt   time.Time // zero while enabled
	// DisabledReason says why it was disabled ("persistent_failure"); never a URL or payload.
	DisabledReason string
}

// WebhookSecret is one whsec_ signing secret. ExpiresAt is zero for the current secret, and the
// end of the overlap for the one a rotation replaced.
type WebhookSecret struct {
	Value     string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Active returns the secrets that still sign at now.
func (w Webhook) Active(now time.Time) []WebhookSecret {
	var out []WebhookSecret
	for _, s := range w.Secrets {
		if s.ExpiresAt.IsZero() || now.Before(s.ExpiresAt) {
			out = append(out, s)
		}
	}
	return out
}

// WebhookAttempt is one line of a webhook's delivery log: one HTTP attempt. It holds ids,
// numbers and an error class, never content or addresses.
type WebhookAttempt struct {
	Seq        int64
	Tenant     string
	Webhook    string
	Event      string // event type: message.status …
	EventID    string // the webhook-id header: evt_status_42
	MessageID  string // the message the event is about, if any
	Attempt    int
	StatusCode int // 0 when no answer came
	LatencyMS  int64
	Error      string // error class: "" on success, http_5xx, timeout, connection, forbidden_target …
	At         time.Time
}

// Webhooks keeps the API-created webhook endpoints and the delivery log of every endpoint.
type Webhooks interface {
	// CreateWebhook stores a new endpoint; EConflict when the tenant has one with that id.
	CreateWebhook(ctx context.Context, w Webhook) error
	// Webhook returns one endpoint of the tenant; ENotFound for an unknown id or another tenant's.
	Webhook(ctx context.Context, tenant, id string) (Webhook, error)
	// ListWebhooks returns the tenant's endpoints oldest first; every tenant's when tenant is "".
	ListWebhooks(ctx context.Context, tenant string) ([]Webhook, error)
	// DeleteWebhook removes an endpoint and its delivery log; ENotFound when there is none.
	DeleteWebhook(ctx context.Context, tenant, id string) error
	// RotateWebhookSecret makes secret the current one; the current one expires at oldExpires and
	// any older one is dropped, so at most two are active.
	RotateWebhookSecret(ctx context.Context, tenant, id, secret string, now, oldExpires time.Time) (Webhook, error)
	// SetWebhookDisabled disables (at non-zero) or enables (zero at) an endpoint.
	SetWebhookDisabled(ctx context.Context, tenant, id string, at time.Time, reason string) error

	// RecordWebhookAttempt appends one attempt to the delivery log.
	RecordWebhookAttempt(ctx context.Context, a WebhookAttempt) error
	// WebhookAttempts returns an endpoint's attempts newest first, a page at a time.
	WebhookAttempts(ctx context.Context, tenant, webhook, cursor string, limit int) (attempts []WebhookAttempt, nextCursor string, err error)
	// PurgeWebhookAttempts deletes up to limit attempts made before `before`; call until 0.
	PurgeWebhookAttempts(ctx context.Context, before time.Time, limit int) (int64, error)
}
