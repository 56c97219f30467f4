package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Hooks runs the automations a hook call starts (pipeline/automation.Engine implements it). id is
// the event id: the same id acts once. gateway.ENotFound when no automation of the tenant
// listens to name.
type Hooks interface {
	HandleHook(ctx context.Context, tenant, name, id string, body map[string]any, at time.Time) error
}

// hookAccepted is the answer to POST /v1/hooks/{name}.
type hookAccepted struct {
	EventID string `json:"event_id"`
	Hook    string `json:"hook"`
}

// callHook serves POST /v1/hooks/{name}: the JSON object in the body starts the tenant's rules
// with when: {hook: {name: …}}. Their actions are taken before the answer, so a 202 means they
// were accepted; an error means the caller should call again with the same Idempotency-Key.
func (s *Server) callHook(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	idemKey, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	var body map[string]any
	if err := s.decodeJSON(w, r, &body); err != nil {
		return err
	}
	if body == nil {
		return gateway.Errorf(gateway.EInvalidJSON, "expected a JSON object, got null")
	}
	id := gateway.NewID("hook")
	if idemKey != "" {
		// Derived, so a repeated call is the same event and its actions are not taken twice.
		sum := sha256.Sum256([]byte(key.Tenant + "\x00" + name + "\x00" + idemKey))
		id = "hook_" + hex.EncodeToString(sum[:13])
	}
	if err := s.deps.Hooks.HandleHook(r.Context(), key.Tenant, name, id, body, s.now().UTC()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, hookAccepted{EventID: id, Hook: name})
}
