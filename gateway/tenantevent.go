package gateway

import (
	"encoding/json"
	"time"
)

// Tenant event types beside message.status and message.inbound: on the EVENTS stream, pushed to
// webhooks and served by GET /v1/events.
const (
	EventConsentChanged  = "consent.changed"
	EventAccountState    = "account.state"
	EventWebhookDisabled = "webhook.disabled"
)

// TenantEvent is one event of a tenant that is not about a message. Data never holds a full
// phone number or Teams id: a subject appears masked, with its short blind index.
type TenantEvent struct {
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	Tenant string          `json:"tenant"`
	At     time.Time       `json:"at"`
	Data   json.RawMessage `json:"data"`
}

// ConsentChangedData is the data of consent.changed.
type ConsentChangedData struct {
	Channel          Channel `json:"channel"`
	Masked           string  `json:"masked"`            // +49******5678
	Subject          string  `json:"subject,omitempty"` // short blind index (s_…), as in the logs
	Category         string  `json:"category,omitempty"`
	State            string  `json:"state"`
	Source           string  `json:"source"`
	InboundMessageID string  `json:"inbound_message_id,omitempty"`
}

// AccountStateData is the data of account.state.
type AccountStateData struct {
	Channel Channel    `json:"channel"`
	Account string     `json:"account"`
	State   string     `json:"state"` // ready or paused
	Reason  string     `json:"reason,omitempty"`
	Until   *time.Time `json:"until,omitempty"`
}

// WebhookDisabledData is the data of webhook.disabled.
type WebhookDisabledData struct {
	Webhook string `json:"webhook"`
	Reason  string `json:"reason"`
}
