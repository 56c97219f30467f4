package api

import (
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/switchboard-gateway/switchboard/gateway"
)

type injectRequest struct {
	From string `json:"from"`
	Text string `json:"text"`
}

type injectedResponse struct {
	ChannelMessageID string `json:"channel_message_id"`
	Status           string `json:"status"` // received
}

// sandboxInbound is POST /v1/sandbox/{channel}/{account}/inbound {"from","text"} (dev mode): the
// sandbox account of the caller's tenant receives text from the person `from`, as if they had
// written it. Registered only when Deps.Sandbox is set.
func (s *Server) sandboxInbound(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	ch := gateway.Channel(r.PathValue("channel"))
	if !ch.Valid() {
		return gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q: use whatsapp or teams", ch)
	}
	account := r.PathValue("account")
	if !s.deps.Directory.HasAccount(key.Tenant, ch, account) {
		return gateway.FieldErrorf(gateway.EUnknownAccount, "account", "no %s account named %q for this tenant", ch, account)
	}
	var req injectRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.From) == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "from", "the sender is required")
	}
	from, err := gateway.ParseAddress(ch, req.From)
	if err != nil {
		return renameField(err, "from")
	}
	if req.Text == "" {
		return gateway.FieldErrorf(gateway.EMissingField, "text", "the message text is required")
	}
	if n := utf8.RuneCountInString(req.Text); n > MaxTextLen {
		return gateway.FieldErrorf(gateway.EInvalidField, "text", "is %d characters long; the limit is %d", n, MaxTextLen)
	}
	id, err := s.deps.Sandbox.Inject(r.Context(), key.Tenant, ch, account, from.String(), req.Text)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, injectedResponse{ChannelMessageID: id, Status: string(gateway.StatusReceived)})
}

// renameField returns err with its field renamed: ParseAddress speaks of "to".
func renameField(err error, field string) error {
	var ge *gateway.Error
	if !errors.As(err, &ge) {
		return err
	}
	c := *ge
	c.Field = field
	return &c
}
