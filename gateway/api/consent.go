package api

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// ConsentRegistry records and reads consent (pipeline/consent.Registry implements it over the
// store, and logs every change).
type ConsentRegistry interface {
	Record(ctx context.Context, c store.ConsentChange) (recorded bool, err error)
	Import(ctx context.Context, cs []store.ConsentChange) error
	Get(ctx context.Context, tenant string, ch gateway.Channel, subject gateway.Address) (store.Consent, error)
}

// Limits of the consent API.
const (
	MaxConsentNoteLen = 1000
	MaxImportRows     = 10000
)

type consentRequest struct {
	State    string `json:"state"`
	Category string `json:"category,omitempty"`
	Source   string `json:"source,omitempty"`
	Note     string `json:"note,omitempty"`
}

type consentEntryJSON struct {
	Category  string    `json:"category,omitempty"`
	State     string    `json:"state"`
	Source    string    `json:"source"`
	UpdatedAt time.Time `json:"updated_at"`
}

type consentEvidenceJSON struct {
	ID               string    `json:"id"`
	Category         string    `json:"category,omitempty"`
	State            string    `json:"state"`
	Source           string    `json:"source"`
	Actor            string    `json:"actor,omitempty"`
	At               time.Time `json:"at"`
	InboundMessageID string    `json:"inbound_message_id,omitempty"`
	Note             string    `json:"note,omitempty"`
}

type consentJSON struct {
	Channel       gateway.Channel       `json:"channel"`
	Subject       string                `json:"subject"`
	State         string                `json:"state"` // the plain (all categories) entry: opted_in, opted_out or none
	Current       []consentEntryJSON    `json:"current"`
	LastInboundAt *time.Time            `json:"last_inbound_at,omitempty"`
	History       []consentEvidenceJSON `json:"history"`
}

// consentSubject parses the {channel} and {subject} of a consent path: a person, that is a
// phone number on WhatsApp or teams:user:<id> on Teams.
func consentSubject(r *http.Request) (gateway.Channel, gateway.Address, error) {
	ch := gateway.Channel(r.PathValue("channel"))
	if !ch.Valid() {
		return "", gateway.Address{}, gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q: use whatsapp or teams", ch)
	}
	a, err := parseSubject(ch, r.PathValue("subject"))
	return ch, a, err
}

func parseSubject(ch gateway.Channel, s string) (gateway.Address, error) {
	a, err := gateway.ParseAddress(ch, s)
	if err != nil {
		return a, renameField(err, "subject")
	}
	if a.Kind != gateway.KindPhone && a.Kind != gateway.KindTeamsUser {
		return a, gateway.FieldErrorf(gateway.EInvalidRecipient, "subject", "consent is kept per person: a phone number (+E164) on whatsapp, teams:user:<id> on teams")
	}
	return a, nil
}

func (s *Server) consentView(ctx context.Context, tenant string, ch gateway.Channel, subject gateway.Address) (consentJSON, error) {
	c, err := s.deps.Consent.Get(ctx, tenant, ch, subject)
	if err != nil {
		return consentJSON{}, err
	}
	out := consentJSON{Channel: ch, Subject: subject.String(), State: string(store.ConsentNone),
		Current: []consentEntryJSON{}, History: []consentEvidenceJSON{}}
	for _, e := range c.Current {
		if e.Category == "" {
			out.State = string(e.State)
		}
		out.Current = append(out.Current, consentEntryJSON{Category: e.Category, State: string(e.State), Source: string(e.Source), UpdatedAt: e.UpdatedAt.UTC()})
	}
	for _, e := range c.History {
		out.History = append(out.History, consentEvidenceJSON{ID: e.ID, Category: e.Category, State: string(e.State), Source: string(e.Source),
			Actor: e.Actor, At: e.At.UTC(), InboundMessageID: e.InboundMessageID, Note: e.Note})
	}
	if !c.LastInboundAt.IsZero() {
		t := c.LastInboundAt.UTC()
		out.LastInboundAt = &t
	}
	return out, nil
}

// putConsent is PUT /v1/consent/{channel}/{subject} {state, category?, source?, note?}: record an
// opt-in or opt-out with its evidence (actor: the API key). Answers the subject's consent.
func (s *Server) putConsent(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	ch, subject, err := consentSubject(r)
	if err != nil {
		return err
	}
	var req consentRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	state := store.ConsentState(req.State)
	switch {
	case req.State == "":
		return gateway.FieldErrorf(gateway.EMissingField, "state", "a state is required: opted_in or opted_out")
	case state != store.ConsentOptedIn && state != store.ConsentOptedOut:
		return gateway.FieldErrorf(gateway.EInvalidField, "state", "unknown state %q: use opted_in or opted_out (DELETE withdraws an opt-in)", req.State)
	case !store.ValidCategory(req.Category):
		return gateway.FieldErrorf(gateway.EInvalidField, "category", "unknown category %q: use marketing or utility, or leave it out for all", req.Category)
	case utf8.RuneCountInString(req.Note) > MaxConsentNoteLen:
		return gateway.FieldErrorf(gateway.EInvalidField, "note", "must be at most %d characters", MaxConsentNoteLen)
	}
	source, err := apiSource(req.Source)
	if err != nil {
		return err
	}
	if err := s.audit(r, key, AuditConsentChanged, subject, strings.TrimSpace(string(ch)+" "+req.State+" "+req.Category)); err != nil {
		return err
	}
	if _, err := s.deps.Consent.Record(r.Context(), store.ConsentChange{
		Tenant: key.Tenant, Channel: ch, Subject: subject, Category: req.Category, State: state,
		Source: source, Actor: key.ID, At: s.now(), Note: req.Note,
	}); err != nil {
		return err
	}
	out, err := s.consentView(r.Context(), key.Tenant, ch, subject)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// apiSource validates the source an integrator names: keyword evidence is the gateway's own.
func apiSource(s string) (store.ConsentSource, error) {
	src := store.ConsentSource(s)
	switch {
	case s == "":
		return store.SourceAPI, nil
	case src == store.SourceKeyword:
		return "", gateway.FieldErrorf(gateway.EInvalidField, "source", "keyword evidence is recorded by the gateway itself, from the inbound message")
	case !src.Valid():
		return "", gateway.FieldErrorf(gateway.EInvalidField, "source", "unknown source %q: use api, import, automation or admin", s)
	}
	return src, nil
}

// getConsent is GET /v1/consent/{channel}/{subject}: current state and the evidence history.
func (s *Server) getConsent(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	ch, subject, err := consentSubject(r)
	if err != nil {
		return err
	}
	out, err := s.consentView(r.Context(), key.Tenant, ch, subject)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// deleteConsent is DELETE /v1/consent/{channel}/{subject}[?category=]: withdraw an opt-in (the
// state becomes none, with evidence). An opt-out is not withdrawn this way: 409 conflict.
func (s *Server) deleteConsent(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	ch, subject, err := consentSubject(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	category := q.Get("category")
	if !store.ValidCategory(category) {
		return gateway.FieldErrorf(gateway.EInvalidField, "category", "unknown category %q: use marketing or utility, or leave it out", category)
	}
	cur, err := s.deps.Consent.Get(r.Context(), key.Tenant, ch, subject)
	if err != nil {
		return err
	}
	for _, e := range cur.Current {
		if e.Category != category {
			continue
		}
		switch e.State {
		case store.ConsentOptedOut:
			return gateway.Errorf(gateway.EConflict, "the subject opted out; an opt-out is lifted only by the subject (START) or a PUT with state opted_in and its evidence")
		case store.ConsentOptedIn:
			if err := s.audit(r, key, AuditConsentWithdrawn, subject, strings.TrimSpace(string(ch)+" "+category)); err != nil {
				return err
			}
			if _, err := s.deps.Consent.Record(r.Context(), store.ConsentChange{
				Tenant: key.Tenant, Channel: ch, Subject: subject, Category: category, State: store.ConsentNone,
				Source: store.SourceAPI, Actor: key.ID, At: s.now(),
			}); err != nil {
				return err
			}
		}
	}
	out, err := s.consentView(r.Context(), key.Tenant, ch, subject)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

type importRowJSON struct {
	Line   int    `json:"line"`
	Code   string `json:"code"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

type importReportJSON struct {
	Imported int             `json:"imported"`
	Rejected []importRowJSON `json:"rejected"`
}

// importConsent is POST /v1/consent:import[?channel=]: a CSV of subject,state,date,source[,category]
// (a header line "subject,…" is skipped). Good rows are recorded in one transaction; each bad row
// is reported with its line and reason, and nothing of it is written.
func (s *Server) importConsent(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	q := r.URL.Query()
	channel := gateway.Channel(q.Get("channel"))
	if channel != "" && !channel.Valid() {
		return gateway.FieldErrorf(gateway.EUnknownChannel, "channel", "unknown channel %q: use whatsapp or teams", channel)
	}
	if r.ContentLength > s.cfg.MaxBody {
		return s.tooLarge()
	}
	under := w
	if rw, ok := w.(*responseWriter); ok {
		under = rw.ResponseWriter
	}
	body := http.MaxBytesReader(under, r.Body, s.cfg.MaxBody)
	cr := csv.NewReader(body)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	now := s.now()
	report := importReportJSON{Rejected: []importRowJSON{}}
	var good []store.ConsentChange
	rows := 0
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			rows++
			report.Rejected = append(report.Rejected, importRowJSON{Line: pe.StartLine, Code: gateway.EInvalidField, Reason: "malformed CSV: " + pe.Err.Error()})
			continue
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return s.tooLarge()
			}
			return gateway.WrapError(gateway.EInvalidField, err, "the CSV body could not be read")
		}
		line, _ := cr.FieldPos(0)
		if rows == 0 && len(rec) > 0 && strings.EqualFold(strings.TrimSpace(strings.TrimPrefix(rec[0], "\ufeff")), "subject") {
			continue // the header
		}
		rows++
		if rows > MaxImportRows {
			return gateway.Errorf(gateway.EInvalidField, "at most %d rows per import; split the file", MaxImportRows)
		}
		c, err := importRow(rec, channel, now)
		if err != nil {
			report.Rejected = append(report.Rejected, importRowJSON{Line: line, Code: gateway.ErrorCode(err), Field: gateway.ErrorField(err), Reason: gateway.ErrorMessage(err)})
			continue
		}
		c.Tenant, c.Actor = key.Tenant, key.ID
		good = append(good, c)
	}
	if rows == 0 {
		return gateway.Errorf(gateway.EMissingField, "the CSV has no rows: send subject,state,date,source lines")
	}
	if err := s.audit(r, key, AuditConsentImported, gateway.Address{}, fmt.Sprintf("%d rows", len(good))); err != nil {
		return err
	}
	if err := s.deps.Consent.Import(r.Context(), good); err != nil {
		return err
	}
	report.Imported = len(good)
	return writeJSON(w, http.StatusOK, report)
}

// importRow validates one CSV record: subject, state, date, source and an optional category.
func importRow(rec []string, channel gateway.Channel, now time.Time) (store.ConsentChange, error) {
	var c store.ConsentChange
	if len(rec) < 4 || len(rec) > 5 {
		return c, gateway.Errorf(gateway.EInvalidField, "%d columns: want subject,state,date,source and optionally category", len(rec))
	}
	for i := range rec {
		rec[i] = strings.TrimSpace(rec[i])
	}
	subject, state, date, source := rec[0], rec[1], rec[2], rec[3]
	ch := channel
	if ch == "" {
		ch = gateway.WhatsApp
		if strings.HasPrefix(subject, "teams:") {
			ch = gateway.Teams
		}
	}
	if subject == "" {
		return c, gateway.FieldErrorf(gateway.EMissingField, "subject", "the subject is empty")
	}
	addr, err := parseSubject(ch, subject)
	if err != nil {
		return c, err
	}
	c.Channel, c.Subject = ch, addr
	c.State = store.ConsentState(state)
	if c.State != store.ConsentOptedIn && c.State != store.ConsentOptedOut {
		return c, gateway.FieldErrorf(gateway.EInvalidField, "state", "state %q: use opted_in or opted_out", state)
	}
	if date == "" {
		return c, gateway.FieldErrorf(gateway.EMissingField, "date", "the date of the evidence is required (2026-11-22 or RFC 3339)")
	}
	at, err := time.Parse(time.RFC3339, date)
	if err != nil {
		if at, err = time.Parse(time.DateOnly, date); err != nil {
			return c, gateway.FieldErrorf(gateway.EInvalidField, "date", "date %q: use 2026-11-22 or RFC 3339 (2026-11-22T09:30:00Z)", date)
		}
	}
	if at.After(now.Add(24 * time.Hour)) {
		return c, gateway.FieldErrorf(gateway.EInvalidField, "date", "date %s is in the future", date)
	}
	c.At = at
	c.Source = store.SourceImport
	if source != "" {
		c.Source = store.ConsentSource(source)
		if !c.Source.Valid() {
			return c, gateway.FieldErrorf(gateway.EInvalidField, "source", "source %q: use api, keyword, import, automation or admin", source)
		}
	}
	if len(rec) == 5 {
		if !store.ValidCategory(rec[4]) {
			return c, gateway.FieldErrorf(gateway.EInvalidField, "category", "category %q: use marketing or utility, or leave it empty", rec[4])
		}
		c.Category = rec[4]
	}
	return c, nil
}
