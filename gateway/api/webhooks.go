package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// WebhookRegistry manages a tenant's webhook endpoints (pipeline/delivery.Registry, wired by
// gateway/server). Another tenant's endpoint is gateway.ENotFound.
type WebhookRegistry interface {
	CreateWebhook(ctx context.Context, tenant string, w NewWebhook) (WebhookInfo, error)
	ListWebhooks(ctx context.Context, tenant string) ([]WebhookInfo, error)
	GetWebhook(ctx context.Context, tenant, id string) (WebhookInfo, error)
	DeleteWebhook(ctx context.Context, tenant, id string) error
	RotateWebhookSecret(ctx context.Context, tenant, id string) (WebhookInfo, error)
	EnableWebhook(ctx context.Context, tenant, id string) (WebhookInfo, error)
	WebhookDeliveries(ctx context.Context, tenant, id, cursor string) ([]store.WebhookAttempt, string, error)
	TestWebhook(ctx context.Context, tenant, id string) (WebhookTest, error)
	// ReplayWebhook starts re-delivering the endpoint's events since a time, in the background.
	ReplayWebhook(ctx context.Context, tenant, id string, since time.Time) error
}

// NewWebhook is the body of POST /v1/webhooks.
type NewWebhook struct {
	URL          string
	Events       []string
	AllowPrivate bool
}

// WebhookInfo is an endpoint. Secret is set only in the answer that created it (creation,
// rotation); Configured endpoints come from the config file and cannot be changed here.
type WebhookInfo struct {
	store.Webhook
	Configured bool
	Secret     string
}

// WebhookTest is an endpoint's answer to a test event.
type WebhookTest struct {
	StatusCode int
	Latency    time.Duration
	Error      string
	Detail     string
}

func (s *Server) webhookRoutes() {
	s.handle("POST /v1/webhooks", 0, s.createWebhook)
	s.handle("GET /v1/webhooks", 0, s.listWebhooks)
	s.handle("GET /v1/webhooks/{id}", 0, s.webhookAnswer(s.deps.Webhooks.GetWebhook))
	s.handle("DELETE /v1/webhooks/{id}", 0, s.deleteWebhook)
	s.handle("POST /v1/webhooks/{id}/secrets", 0, s.webhookAnswer(s.deps.Webhooks.RotateWebhookSecret))
	s.handle("POST /v1/webhooks/{id}/enable", 0, s.webhookAnswer(s.deps.Webhooks.EnableWebhook))
	s.handle("POST /v1/webhooks/{id}/test", 0, s.testWebhook)
	s.handle("GET /v1/webhooks/{id}/deliveries", 0, s.webhookDeliveries, "cursor")
	s.handle("POST /v1/webhooks/{id}/replay", 0, s.replayWebhook, "since")
}

type webhookRequest struct {
	URL          string   `json:"url"`
	Events       []string `json:"events"`
	AllowPrivate bool     `json:"allow_private,omitempty"`
}

type webhookSecretJSON struct {
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

type webhookJSON struct {
	ID             string              `json:"id"`
	URL            string              `json:"url"`
	Events         []string            `json:"events"`
	AllowPrivate   bool                `json:"allow_private"`
	Status         string              `json:"status"` // enabled or disabled
	Source         string              `json:"source"` // api or config
	CreatedAt      *time.Time          `json:"created_at,omitempty"`
	DisabledAt     *time.Time          `json:"disabled_at,omitempty"`
	DisabledReason string              `json:"disabled_reason,omitempty"`
	Secrets        []webhookSecretJSON `json:"secrets,omitempty"` // when they were made and expire, never their value
	Secret         string              `json:"secret,omitempty"`  // the new secret, in the answer that made it only
}

func toWebhookJSON(w WebhookInfo) webhookJSON {
	out := webhookJSON{ID: w.ID, URL: w.URL, Events: w.Events, AllowPrivate: w.AllowPrivate, Status: "enabled", Source: "api",
		DisabledReason: w.DisabledReason, Secret: w.Secret}
	if out.Events == nil {
		out.Events = []string{}
	}
	if w.Configured {
		out.Source = "config"
	}
	if !w.CreatedAt.IsZero() {
		out.CreatedAt = &w.CreatedAt
	}
	if !w.DisabledAt.IsZero() {
		out.Status = "disabled"
		out.DisabledAt = &w.DisabledAt
	}
	for _, sec := range w.Secrets {
		sj := webhookSecretJSON{CreatedAt: sec.CreatedAt}
		if !sec.ExpiresAt.IsZero() {
			sj.ExpiresAt = &sec.ExpiresAt
		}
		out.Secrets = append(out.Secrets, sj)
	}
	return out
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	var req webhookRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.URL == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "url", "url is required: the https endpoint to post events to")
	}
	wh, err := s.deps.Webhooks.CreateWebhook(r.Context(), key.Tenant, NewWebhook(req))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/webhooks/"+wh.ID)
	return writeJSON(w, http.StatusCreated, toWebhookJSON(wh))
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	ws, err := s.deps.Webhooks.ListWebhooks(r.Context(), key.Tenant)
	if err != nil {
		return err
	}
	out := struct {
		Webhooks []webhookJSON `json:"webhooks"`
	}{Webhooks: []webhookJSON{}}
	for _, wh := range ws {
		out.Webhooks = append(out.Webhooks, toWebhookJSON(wh))
	}
	return writeJSON(w, http.StatusOK, out)
}

// webhookAnswer is a route that does one thing to the endpoint {id} and answers with it.
func (s *Server) webhookAnswer(do func(ctx context.Context, tenant, id string) (WebhookInfo, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
		wh, err := do(r.Context(), key.Tenant, r.PathValue("id"))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, toWebhookJSON(wh))
	}
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	if err := s.deps.Webhooks.DeleteWebhook(r.Context(), key.Tenant, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) testWebhook(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	res, err := s.deps.Webhooks.TestWebhook(r.Context(), key.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		OK         bool   `json:"ok"`
		StatusCode int    `json:"status_code"`
		LatencyMS  int64  `json:"latency_ms"`
		Error      string `json:"error,omitempty"`
		Detail     string `json:"detail,omitempty"`
	}{res.Error == "", res.StatusCode, res.Latency.Milliseconds(), res.Error, res.Detail})
}

type deliveryJSON struct {
	ID         string    `json:"id"`
	Event      string    `json:"event"`
	EventID    string    `json:"event_id"`
	MessageID  string    `json:"message_id"`
	Attempt    int       `json:"attempt"`
	StatusCode int       `json:"status_code"`
	LatencyMS  int64     `json:"latency_ms"`
	Error      string    `json:"error"`
	At         time.Time `json:"at"`
}

func (s *Server) webhookDeliveries(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	q := r.URL.Query()
	log, next, err := s.deps.Webhooks.WebhookDeliveries(r.Context(), key.Tenant, r.PathValue("id"), q.Get("cursor"))
	if err != nil {
		return err
	}
	out := struct {
		Deliveries []deliveryJSON `json:"deliveries"`
		NextCursor *string        `json:"next_cursor"` // null on the last page
	}{Deliveries: []deliveryJSON{}}
	for _, a := range log {
		out.Deliveries = append(out.Deliveries, deliveryJSON{ID: strconv.FormatInt(a.Seq, 10), Event: a.Event, EventID: a.EventID,
			MessageID: a.MessageID, Attempt: a.Attempt, StatusCode: a.StatusCode, LatencyMS: a.LatencyMS, Error: a.Error, At: a.At})
	}
	if next != "" {
		out.NextCursor = &next
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) replayWebhook(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	q := r.URL.Query()
	if q.Get("since") == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "since", "since is required: an RFC 3339 time, e.g. 2026-11-22T09:00:00Z")
	}
	since, err := time.Parse(time.RFC3339, q.Get("since"))
	if err != nil {
		return gateway.FieldErrorf(gateway.EInvalidField, "since", "since must be an RFC 3339 time, e.g. 2026-11-22T09:00:00Z")
	}
	if err := s.deps.Webhooks.ReplayWebhook(r.Context(), key.Tenant, r.PathValue("id"), since); err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, struct {
		Replaying bool      `json:"replaying"`
		Since     time.Time `json:"since"`
	}{true, since.UTC()})
}
