package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// codeMethodNotAllowed answers a known path with the wrong method. It belongs in gateway's
// code list; it lives here until it moves there.
const codeMethodNotAllowed = "method_not_allowed"

// statusClientClosedRequest is what the access log records when the client went away before
// the answer (nginx's 499). Nothing is written to the connection.
const statusClientClosedRequest = 499

// HTTPStatus maps an error code to its HTTP status. It is the only place that does: every error
// body the API writes takes its status from here. Unknown codes are 500.
func HTTPStatus(code string) int {
	switch code {
	case gateway.EInvalidJSON, gateway.EUnknownField, gateway.EInvalidField, gateway.EMissingField,
		gateway.EInvalidRecipient, gateway.EUnknownChannel, gateway.EUnknownAccount:
		return http.StatusBadRequest
	case gateway.EUnauthorized:
		return http.StatusUnauthorized
	case gateway.EForbidden:
		return http.StatusForbidden
	case gateway.ENotFound:
		return http.StatusNotFound
	case codeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case gateway.EConflict, gateway.EIdempotencyConflict, codeLinkInProgress:
		return http.StatusConflict
	case gateway.EBodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case gateway.ERecipientOptedOut, gateway.EConsentRequired, gateway.EOutsideWindow,
		gateway.ESubjectErased, gateway.ESubjectRestricted:
		return http.StatusUnprocessableEntity
	case gateway.ERateLimited:
		return http.StatusTooManyRequests
	case gateway.EUnavailable:
		return http.StatusServiceUnavailable
	case gateway.ETimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// errorBody is the one shape of every error answer: {"error":{"code","message","field"}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// retryAfter rides in a *gateway.Error's cause to set the Retry-After header.
type retryAfter time.Duration

func (d retryAfter) Error() string { return "retry after " + time.Duration(d).String() }

// writeError writes err as an error body with the status of its code. Internal errors get a
// generic message; their details go to the log only. Context errors become timeout (our
// deadline) or nothing at all (the client went away).
func (s *Server) writeError(w *responseWriter, r *http.Request, err error) {
	code := gateway.ErrorCode(err)
	msg := gateway.ErrorMessage(err)
	field := gateway.ErrorField(err)
	if code == gateway.EInternal {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			code, msg, field = gateway.ETimeout, fmt.Sprintf("the request did not finish within %s", s.cfg.Timeout), ""
		case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
			// The client closed the connection: there is no one to answer.
			w.code, w.status = "client_closed", statusClientClosedRequest
			s.log.Debug().Str("route", w.route).Err(err).Msg("client closed request")
			return
		default:
			msg = "internal error"
		}
	}
	w.code = code
	status := HTTPStatus(code)
	if status >= 500 {
		ev := s.log.Error().Str("route", w.route).Str("code", code).Err(err)
		if w.tenant != "" {
			ev = ev.Str("tenant", w.tenant)
		}
		ev.Msg("request failed")
	}
	if w.wrote {
		// The answer had started; the error can only be logged.
		if status < 500 {
			s.log.Error().Str("route", w.route).Str("code", code).Err(err).Msg("error after the response started")
		}
		return
	}
	h := w.Header()
	switch status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="switchboard"`)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		var ra retryAfter
		if errors.As(err, &ra) {
			h.Set("Retry-After", strconv.Itoa(retrySeconds(time.Duration(ra))))
		} else if status == http.StatusTooManyRequests {
			h.Set("Retry-After", "1")
		}
	}
	_ = writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg, Field: field}})
}

// retrySeconds rounds d up to whole seconds, at least 1, as Retry-After wants.
func retrySeconds(d time.Duration) int {
	n := int((d + time.Second - 1) / time.Second)
	if n < 1 {
		n = 1
	}
	return n
}

func panicText(v any) string {
	if err, ok := v.(error); ok {
		return err.Error()
	}
	return fmt.Sprint(v)
}

func stack() []byte { return debug.Stack() }
