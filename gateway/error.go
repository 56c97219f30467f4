package gateway

import (
	"errors"
	"fmt"
)

// Error codes are stable: integrators match on them, and gateway/api maps each one to an HTTP
// status in one place. Add codes; never rename one.
const (
	// Request shape.
	EInvalidJSON  = "invalid_json"
	EUnknownField = "unknown_field"
	EInvalidField = "invalid_field"
	EMissingField = "missing_field"
	EBodyTooLarge = "body_too_large"

	// Addressing.
	EInvalidRecipient = "invalid_recipient"
	EUnknownChannel   = "unknown_channel"
	EUnknownAccount   = "unknown_account"

	// Auth and lookup.
	EUnauthorized = "unauthorized"
	EForbidden    = "forbidden"
	ENotFound     = "not_found"
	EConflict     = "conflict"

	// Idempotency (Stripe semantics).
	EIdempotencyConflict = "idempotency_conflict"

	// Policy rejections: also used as the error code of a rejected status event.
	ERecipientOptedOut = "recipient_opted_out"
	EConsentRequired   = "consent_required"
	EOutsideWindow     = "outside_window"
	ESubjectErased     = "subject_erased"
	ESubjectRestricted = "subject_restricted"

	// Load and availability.
	ERateLimited = "rate_limited"
	EUnavailable = "unavailable"
	ETimeout     = "timeout"

	// Channel failures (status failed).
	EChannelError = "channel_error"

	EInternal = "internal"
)

// Error is the one error type that crosses package boundaries with a stable code. Field names the
// offending input (a JSON field, a config path) when there is one.
type Error struct {
	Code    string
	Field   string
	Message string
	Err     error // the cause, for logs; never shown to API clients
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns an *Error about one input field.
func FieldErrorf(code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// WrapError attaches a code and message to a cause.
func WrapError(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal for any other error,
// and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the client-safe message of err: an *Error's message, or a generic text for
// internal errors, whose details belong in logs only.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorField returns the field of the first *Error in err's chain, or "".
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}
