package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Account states of GET /v1/accounts. WhatsApp accounts on whatsmeow report their connection;
// accounts without a connection of their own (sandbox, Teams) report ready.
const (
	AccountReady        = "ready"
	AccountUnlinked     = "unlinked"
	AccountConnected    = "connected"
	AccountDisconnected = "disconnected"
	AccountLoggedOut    = "logged_out"
	AccountBanned       = "banned_until"
)

// Account is one configured account of a tenant and where its connection stands. It carries no
// identifier of the linked number or user: only names, states and times.
type Account struct {
	Channel       gateway.Channel `json:"channel"`
	Account       string          `json:"account"`
	Driver        string          `json:"driver"`
	State         string          `json:"state"`
	Detail        string          `json:"detail,omitempty"`
	Since         *time.Time      `json:"since,omitempty"`
	BannedUntil   *time.Time      `json:"banned_until,omitempty"`
	LastConnected *time.Time      `json:"last_connected,omitempty"`
	// LastSeenPhone is when the linked phone was last active (WhatsApp unlinks a companion device
	// whose phone stays offline for about 14 days).
	LastSeenPhone *time.Time `json:"last_seen_phone,omitempty"`
	// Linkable says POST /v1/accounts/{channel}/{account}/link works for this account.
	Linkable bool `json:"linkable"`
}

// Accounts lists a tenant's configured accounts with their state, in configuration order.
type Accounts interface {
	Accounts(ctx context.Context, tenant string) ([]Account, error)
}

// Link event types of POST /v1/accounts/whatsapp/{account}/link. The stream ends after one of
// success, timeout or error.
const (
	LinkEventQR          = "qr"
	LinkEventPairingCode = "pairing_code"
	LinkEventNotice      = "notice"
	LinkEventSuccess     = "success"
	LinkEventTimeout     = "timeout"
	LinkEventError       = "error"
)

// LinkEvent is one step of a link on its way to the client.
type LinkEvent struct {
	Type    string        // LinkEventQR, LinkEventPairingCode or LinkEventNotice
	Code    string        // the QR payload or the pairing code
	Expires time.Duration // how long a QR code is shown before the next one
	Message string        // what to tell the person
}

// Linker links a new device to a WhatsApp account of a tenant: QR codes (or, with phone, a
// pairing code) go to emit as they come. It returns the linked number, masked, or an error with a
// stable code; a link that fails or whose ctx ends leaves no half-made device. emit is called on
// Link's goroutine or on one Link waits for, never after Link returns.
type Linker interface {
	Link(ctx context.Context, tenant, account, phone string, emit func(LinkEvent)) (maskedPhone string, err error)
}

// codeLinkInProgress answers a second link of an account while one is running.
const codeLinkInProgress = "link_in_progress"

type accountsJSON struct {
	Accounts []Account `json:"accounts"`
}

// listAccounts is GET /v1/accounts.
func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	accts, err := s.deps.Accounts.Accounts(r.Context(), key.Tenant)
	if err != nil {
		return err
	}
	if accts == nil {
		accts = []Account{}
	}
	return writeJSON(w, http.StatusOK, accountsJSON{Accounts: accts})
}

type linkRequest struct {
	Phone string `json:"phone"`
}

// linkAccount is POST /v1/accounts/{channel}/{account}/link: it links a WhatsApp account and
// streams the steps as Server-Sent Events (qr, pairing_code, notice), ending with success, timeout
// or error. Errors found before the first step (unknown account, a link already running, an
// account already linked) are ordinary JSON error answers. A client that goes away cancels the
// link.
func (s *Server) linkAccount(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	ch := gateway.Channel(r.PathValue("channel"))
	if !ch.Valid() {
		return gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q: use whatsapp", ch)
	}
	if ch != gateway.WhatsApp {
		return gateway.FieldErrorf(gateway.EInvalidField, "channel", "only whatsapp accounts are linked here; %s accounts sign in with `switchboard %s login`", ch, ch)
	}
	account := r.PathValue("account")
	if !s.deps.Directory.HasAccount(key.Tenant, ch, account) {
		return gateway.Errorf(gateway.ENotFound, "no whatsapp account named %q for this tenant", account)
	}
	var req linkRequest
	if r.ContentLength != 0 {
		// A streaming route has no handler deadline: bound the body read as every other route does.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(s.cfg.Timeout))
		if err := s.decodeJSON(w, r, &req); err != nil {
			return err
		}
		_ = rc.SetReadDeadline(time.Time{})
	}
	if req.Phone != "" {
		e164, err := gateway.NormalizePhone(req.Phone)
		if err != nil {
			return gateway.FieldErrorf(gateway.EInvalidRecipient, "phone", "%s: give the account's number in E.164, e.g. +4915112345678", gateway.ErrorMessage(err))
		}
		req.Phone = e164
	}
	lockKey := key.Tenant + "\x00" + account
	if _, running := s.links.LoadOrStore(lockKey, struct{}{}); running {
		return gateway.Errorf(codeLinkInProgress, "a link of whatsapp account %q is already in progress: finish or cancel it first", account)
	}
	defer s.links.Delete(lockKey)
	return s.streamLink(w, r, key.Tenant, account, req.Phone)
}

// streamLink runs the link on its own goroutine and writes its steps as they come, with a
// heartbeat comment while nothing happens (a pairing code waits minutes for the person).
func (s *Server) streamLink(w http.ResponseWriter, r *http.Request, tenant, account, phone string) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	steps := make(chan LinkEvent)
	type result struct {
		phone string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		p, err := s.deps.Linker.Link(ctx, tenant, account, phone, func(ev LinkEvent) {
			select {
			case steps <- ev:
			case <-ctx.Done():
			}
		})
		done <- result{p, err}
	}()

	rc := http.NewResponseController(w)
	started := false
	write := func(event string, data any) error {
		if !started {
			started = true
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-store")
			h.Set("X-Accel-Buffering", "no")
			w.WriteHeader(http.StatusOK)
		}
		b, err := json.Marshal(data)
		if err != nil {
			return err
		}
		if event == "" {
			_, err = fmt.Fprint(w, ": heartbeat\n\n")
		} else {
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		}
		if err == nil {
			err = rc.Flush()
		}
		return err
	}
	tick := time.NewTicker(s.heartbeat())
	defer tick.Stop()
	for {
		var werr error
		select {
		case ev := <-steps:
			werr = write(ev.Type, linkStepJSON(ev))
		case <-tick.C:
			if started {
				werr = write("", nil)
			}
		case res := <-done:
			if res.err == nil {
				_ = write(LinkEventSuccess, map[string]string{"phone": res.phone, "message": "linked"})
				return nil
			}
			if !started {
				return res.err // nothing streamed yet: an ordinary error answer with its status
			}
			code := gateway.ErrorCode(res.err)
			msg := gateway.ErrorMessage(res.err)
			if code == gateway.EInternal {
				s.log.Error().Err(res.err).Str("tenant", tenant).Str("account", account).Msg("link failed")
				msg = "internal error"
			}
			event := LinkEventError
			if code == gateway.ETimeout {
				event = LinkEventTimeout
			}
			_ = write(event, errorDetail{Code: code, Message: msg, Field: gateway.ErrorField(res.err)})
			return nil
		}
		if werr != nil { // the client went away: cancel the link and wait for it to clean up
			cancel()
			<-done
			return nil
		}
	}
}

func linkStepJSON(ev LinkEvent) map[string]any {
	out := map[string]any{}
	switch ev.Type {
	case LinkEventQR:
		out["qr"] = ev.Code
		if ev.Expires > 0 {
			out["expires_in"] = int(ev.Expires / time.Second)
		}
	case LinkEventPairingCode:
		out["pairing_code"] = ev.Code
	}
	if ev.Message != "" {
		out["message"] = ev.Message
	}
	return out
}

// heartbeat is how often an idle event stream gets a comment line.
func (s *Server) heartbeat() time.Duration {
	if s.cfg.Heartbeat > 0 {
		return s.cfg.Heartbeat
	}
	return DefaultHeartbeat
}
