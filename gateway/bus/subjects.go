package bus

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Stream names (DESIGN.md §3.7).
const (
	StreamSend       = "SEND"
	StreamDispatch   = "DISPATCH"
	StreamStatus     = "STATUS"
	StreamInbound    = "INBOUND"
	StreamDeadLetter = "DEADLETTER"
	StreamEvents     = "EVENTS"
)

// Subject prefixes. Every stream owns "<prefix>.>".
const (
	prefixSend     = "sb.send"
	prefixDispatch = "sb.dispatch"
	prefixStatus   = "sb.status"
	prefixInbound  = "sb.inbound"
	prefixDead     = "sb.dead"
	prefixEvents   = "sb.event"
)

// maxTokenLen bounds one subject token (a tenant, channel, account or consumer name).
const maxTokenLen = 128

// streamLayout says which stream a subject prefix belongs to and how many tokens follow it.
type streamLayout struct {
	stream string
	prefix string
	tokens int      // tokens after the prefix
	names  []string // what each token is, for error messages
}

// SendSubject is where accepted messages of a tenant wait for the pipeline: sb.send.<tenant>.
func SendSubject(tenant string) string { return prefixSend + "." + tenant }

// DispatchSubject is the work queue of one channel account of a tenant:
// sb.dispatch.<channel>.<tenant>.<account>. The tenant is in it because account names are only
// unique within a tenant.
func DispatchSubject(channel, tenant, account string) string {
	return prefixDispatch + "." + channel + "." + tenant + "." + account
}

// StatusSubject carries a tenant's status events: sb.status.<tenant>.
func StatusSubject(tenant string) string { return prefixStatus + "." + tenant }

// InboundSubject carries a tenant's inbound messages on one channel: sb.inbound.<tenant>.<channel>.
func InboundSubject(tenant, channel string) string {
	return prefixInbound + "." + tenant + "." + channel
}

// EventSubject carries a tenant's events of one kind (consent, account, webhook):
// sb.event.<tenant>.<kind>.
func EventSubject(tenant, kind string) string { return prefixEvents + "." + tenant + "." + kind }

// DeadLetterSubject is where a consumer's dead letters go: sb.dead.<stream>.<consumer>.
func DeadLetterSubject(stream, consumer string) string {
	return prefixDead + "." + stream + "." + consumer
}

// ValidateToken checks that s can be one subject token (a tenant id, channel, account or durable
// consumer name): not empty, at most 128 bytes, valid UTF-8, and free of '.', '*', '>', spaces
// and control characters. The error is a gateway EInvalidField error naming field. The subject
// helpers above do not validate (they return plain strings); Publish rejects a subject built from a
// bad token, and configuration should call ValidateToken up front to name the culprit.
func ValidateToken(field, s string) error {
	switch {
	case s == "":
		return gateway.FieldErrorf(gateway.EMissingField, field, "must not be empty")
	case len(s) > maxTokenLen:
		return gateway.FieldErrorf(gateway.EInvalidField, field, "longer than %d bytes", maxTokenLen)
	case !utf8.ValidString(s):
		return gateway.FieldErrorf(gateway.EInvalidField, field, "not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r == '.' || r == '*' || r == '>':
			return gateway.FieldErrorf(gateway.EInvalidField, field, "must not contain %q (it is used in NATS subjects)", r)
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return gateway.FieldErrorf(gateway.EInvalidField, field, "must not contain spaces or control characters")
		}
	}
	return nil
}

// layoutFor returns the layout whose prefix starts subject ("sb.send.acme" → SEND), and the rest.
func layoutFor(subject string) (streamLayout, string, bool) {
	kind, rest, ok := strings.Cut(strings.TrimPrefix(subject, "sb."), ".")
	if !ok || !strings.HasPrefix(subject, "sb.") {
		return streamLayout{}, "", false
	}
	var l streamLayout
	switch "sb." + kind {
	case prefixSend:
		l = streamLayout{StreamSend, prefixSend, 1, []string{"tenant"}}
	case prefixDispatch:
		l = streamLayout{StreamDispatch, prefixDispatch, 3, []string{"channel", "tenant", "account"}}
	case prefixStatus:
		l = streamLayout{StreamStatus, prefixStatus, 1, []string{"tenant"}}
	case prefixInbound:
		l = streamLayout{StreamInbound, prefixInbound, 2, []string{"tenant", "channel"}}
	case prefixDead:
		l = streamLayout{StreamDeadLetter, prefixDead, 2, []string{"stream", "consumer"}}
	case prefixEvents:
		l = streamLayout{StreamEvents, prefixEvents, 2, []string{"tenant", "kind"}}
	default:
		return streamLayout{}, "", false
	}
	return l, rest, true
}

// StreamFor names the stream that stores subject (or the subjects a filter such as "sb.status.>"
// matches), or "" when no Switchboard stream does.
func StreamFor(subject string) string {
	l, _, ok := layoutFor(subject)
	if !ok {
		return ""
	}
	return l.stream
}

// validatePublishSubject checks a concrete subject against its stream's layout: the right number
// of tokens, each one valid.
func validatePublishSubject(subject string) error {
	l, rest, ok := layoutFor(subject)
	if !ok {
		return gateway.FieldErrorf(gateway.EInvalidField, "subject",
			"%q is not a Switchboard subject (sb.send., sb.dispatch., sb.status., sb.inbound., sb.dead.)", subject)
	}
	toks := strings.Split(rest, ".")
	if len(toks) != l.tokens {
		return gateway.FieldErrorf(gateway.EInvalidField, "subject",
			"%q: expected %s.<%s>; a %s must be a single token without '.'",
			subject, l.prefix, strings.Join(l.names, ">.<"), strings.Join(l.names, " or "))
	}
	for i, t := range toks {
		if err := ValidateToken(l.names[i], t); err != nil {
			return gateway.WrapError(gateway.EInvalidField, err, "subject %q", subject)
		}
	}
	return nil
}

// validateFilter checks a consumer filter: a Switchboard subject whose tokens are valid or
// wildcards ('*' for one token, '>' as the last token).
func validateFilter(filter string) error {
	l, rest, ok := layoutFor(filter)
	if !ok {
		return gateway.FieldErrorf(gateway.EInvalidField, "filter_subject", "%q is not a Switchboard subject", filter)
	}
	toks := strings.Split(rest, ".")
	for i, t := range toks {
		if t == "*" || (t == ">" && i == len(toks)-1) {
			continue
		}
		name := "token"
		if i < len(l.names) {
			name = l.names[i]
		}
		if err := ValidateToken(name, t); err != nil {
			return gateway.WrapError(gateway.EInvalidField, err, "filter subject %q", filter)
		}
	}
	return nil
}
