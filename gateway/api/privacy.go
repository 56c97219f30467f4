package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// Privacy carries out the privacy operations (the privacy package implements it). Every call is
// scoped to the caller's tenant: another tenant's job is gateway.ENotFound, another tenant's
// subject is a different subject (blind indexes are per tenant).
type Privacy interface {
	RequestErasure(ctx context.Context, tenant string, actor store.Actor, subject gateway.Address) (store.Erasure, error)
	RequestTenantErasure(ctx context.Context, tenant string, actor store.Actor) (store.Erasure, error)
	Erasure(ctx context.Context, tenant, id string) (store.Erasure, error)
	Export(ctx context.Context, tenant string, actor store.Actor, subject gateway.Address, w io.Writer) error
	SetRestriction(ctx context.Context, tenant string, actor store.Actor, subject gateway.Address, on bool) (changed bool, err error)
	Restricted(ctx context.Context, tenant string, subject gateway.Address) (bool, error)
}

// Auditor appends admin and privacy operations to the audit log (the privacy package implements
// it). The target it records is the subject's blind index, never the subject.
type Auditor interface {
	AuditSubject(ctx context.Context, tenant string, actor store.Actor, action string, subject gateway.Address, detail string) error
}

// Audit actions of the consent API.
const (
	AuditConsentChanged   = "consent_changed"
	AuditConsentWithdrawn = "consent_withdrawn"
	AuditConsentImported  = "consent_imported"
)

// audit records an operation of the caller on subject (zero: none) before it is carried out: an
// operation whose audit entry cannot be written is refused.
func (s *Server) audit(r *http.Request, key gateway.APIKey, action string, subject gateway.Address, detail string) error {
	if s.deps.Audit == nil {
		return nil
	}
	return s.deps.Audit.AuditSubject(r.Context(), key.Tenant, actorOf(r, key), action, subject, detail)
}

// privacyRoutes registers the privacy routes (called from routes when Deps.Privacy is set).
func (s *Server) privacyRoutes() {
	s.handle("POST /v1/erasures", 0, s.createErasure)
	s.handle("GET /v1/erasures/{id}", 0, s.getErasure)
	s.handle("GET /v1/exports", streaming, s.export, "subject")
	s.handle("PUT /v1/restrictions/{subject}", 0, s.putRestriction)
	s.handle("GET /v1/restrictions/{subject}", 0, s.getRestriction)
	s.handle("DELETE /v1/restrictions/{subject}", 0, s.deleteRestriction)
}

// personSubject parses a subject that names a person: +E164 (WhatsApp) or teams:user:<id>.
func personSubject(raw string) (gateway.Address, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return gateway.Address{}, gateway.FieldErrorf(gateway.EMissingField, "subject", "a subject is required: +E164 or teams:user:<id>")
	}
	ch := gateway.WhatsApp
	if strings.HasPrefix(raw, "teams:") {
		ch = gateway.Teams
	}
	return parseSubject(ch, raw)
}

type erasureJSON struct {
	ID          string           `json:"id"`
	Status      string           `json:"status"`
	WholeTenant bool             `json:"whole_tenant,omitempty"`
	Report      map[string]int64 `json:"report"`
	ErrorCode   string           `json:"error_code,omitempty"`
	CreatedAt   time.Time        `json:"created_at"`
	FinishedAt  *time.Time       `json:"finished_at,omitempty"`
}

func erasureView(e store.Erasure) erasureJSON {
	out := erasureJSON{ID: e.ID, Status: string(e.State), WholeTenant: e.WholeTenant, Report: e.Report, ErrorCode: e.ErrorCode, CreatedAt: e.CreatedAt.UTC()}
	if out.Report == nil {
		out.Report = map[string]int64{}
	}
	if !e.FinishedAt.IsZero() {
		t := e.FinishedAt.UTC()
		out.FinishedAt = &t
	}
	return out
}

// createErasure is POST /v1/erasures {subject} or, with an admin key, {tenant: true} (the key's
// own tenant: there is no way to name another): 202 with the job; it runs in the background.
func (s *Server) createErasure(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	var req struct {
		Subject string `json:"subject"`
		Tenant  bool   `json:"tenant"`
	}
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	var e store.Erasure
	var err error
	if req.Tenant {
		if req.Subject != "" {
			return gateway.FieldErrorf(gateway.EInvalidField, "tenant", "give either a subject or tenant: true, not both")
		}
		if !key.Admin {
			return gateway.FieldErrorf(gateway.EForbidden, "tenant", "erasing the whole tenant needs an admin API key (switchboard keys create --admin)")
		}
		e, err = s.deps.Privacy.RequestTenantErasure(r.Context(), key.Tenant, actorOf(r, key))
	} else {
		var subject gateway.Address
		if subject, err = personSubject(req.Subject); err != nil {
			return err
		}
		e, err = s.deps.Privacy.RequestErasure(r.Context(), key.Tenant, actorOf(r, key), subject)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/erasures/"+e.ID)
	return writeJSON(w, http.StatusAccepted, erasureView(e))
}

// getErasure is GET /v1/erasures/{id}: the job's status and, when done, its report.
func (s *Server) getErasure(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	e, err := s.deps.Privacy.Erasure(r.Context(), key.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, erasureView(e))
}

// export is GET /v1/exports?subject=…: everything stored about the subject, decrypted, streamed
// as one JSON document. A failure after the first byte ends the body early (invalid JSON).
func (s *Server) export(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	q := r.URL.Query()
	raw := q.Get("subject")
	if strings.HasPrefix(raw, " ") { // an unencoded + in a query string arrives as a space
		raw = "+" + raw[1:]
	}
	subject, err := personSubject(raw)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Disposition", `attachment; filename="export.json"`)
	rw := &lazyWriter{w: w}
	if err := s.deps.Privacy.Export(r.Context(), key.Tenant, actorOf(r, key), subject, rw); err != nil {
		if !rw.started {
			h.Del("Content-Disposition")
			return err
		}
		s.log.Warn().Str("tenant", key.Tenant).Str("error_code", gateway.ErrorCode(err)).Msg("export ended early")
	}
	return nil
}

// lazyWriter sends the 200 header with the first byte, so an error before it is still an error
// body.
type lazyWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyWriter) Write(b []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(b)
}

type restrictionJSON struct {
	Subject    string `json:"subject"`
	Restricted bool   `json:"restricted"`
}

func (s *Server) setRestriction(w http.ResponseWriter, r *http.Request, key gateway.APIKey, on bool) error {
	subject, err := personSubject(r.PathValue("subject"))
	if err != nil {
		return err
	}
	if _, err := s.deps.Privacy.SetRestriction(r.Context(), key.Tenant, actorOf(r, key), subject, on); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, restrictionJSON{Subject: subject.String(), Restricted: on})
}

// putRestriction is PUT /v1/restrictions/{subject}: restrict processing (sends are rejected
// subject_restricted) until DELETE lifts it. Idempotent.
func (s *Server) putRestriction(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	return s.setRestriction(w, r, key, true)
}

// deleteRestriction is DELETE /v1/restrictions/{subject}. Idempotent.
func (s *Server) deleteRestriction(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	return s.setRestriction(w, r, key, false)
}

// getRestriction is GET /v1/restrictions/{subject}.
func (s *Server) getRestriction(w http.ResponseWriter, r *http.Request, key gateway.APIKey) error {
	subject, err := personSubject(r.PathValue("subject"))
	if err != nil {
		return err
	}
	on, err := s.deps.Privacy.Restricted(r.Context(), key.Tenant, subject)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, restrictionJSON{Subject: subject.String(), Restricted: on})
}

// actorOf names who made a request for the audit log: the API key and the peer's IP (the
// connection's address; a proxy's X-Forwarded-For is not trusted here).
func actorOf(r *http.Request, key gateway.APIKey) store.Actor {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	return store.Actor{KeyID: key.ID, IP: ip}
}
