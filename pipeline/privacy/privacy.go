// Package privacy carries out the privacy operations of issue 7 over the store: erasure of a
// subject (crypto-shredding plus deletion, as an asynchronous job), export of everything held
// about a subject, and restriction of processing (a pipeline stage).
//
// A subject is a person: a phone number (+E164, WhatsApp) or a Teams user (teams:user:<id>). It
// is stored and looked up only as its blind index; logs name it by crypt.ShortSubject at most,
// and an erasure's log lines and report do not name it at all.
package privacy

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

// Store is what the service needs from the store (store/sql.DB implements it).
type Store interface {
	CreateErasure(ctx context.Context, tenant, subject, actor string) (store.Erasure, error)
	CreateTenantErasure(ctx context.Context, tenant, actor string, claim bool) (store.Erasure, error)
	Erasure(ctx context.Context, tenant, id string) (store.Erasure, error)
	ClaimErasure(ctx context.Context, stale time.Duration) (e store.Erasure, subject string, ok bool, err error)
	FailErasure(ctx context.Context, id, code string) error
	FinishErasure(ctx context.Context, id string) error
	AddErasureReport(ctx context.Context, id string, counts map[string]int64) error
	DestroySubjectKey(ctx context.Context, tenant, subject string) (bool, error)
	EraseSubjectRows(ctx context.Context, tenant, subject, jobID string) error
	ErasurePending(ctx context.Context, tenant, jobID string) ([]gateway.Dispatch, error)
	EraseTenant(ctx context.Context, tenant, keepKey string) (map[string]int64, error)
	SetRestriction(ctx context.Context, tenant, subject, actor string, on bool) (bool, error)
	Restricted(ctx context.Context, tenant, subject string) (bool, error)
	SubjectMessages(ctx context.Context, tenant, subject, afterID string, limit int) ([]*gateway.Message, error)
	History(ctx context.Context, tenant, id string) ([]gateway.StatusEvent, error)
	Consent(ctx context.Context, tenant string, channel gateway.Channel, subject gateway.Address) (store.Consent, error)
	AppendAudit(ctx context.Context, e store.AuditEntry) error
}

var _ Store = (*storesql.DB)(nil)

// Indexer computes blind indexes (crypt.Keyring).
type Indexer interface {
	BlindIndex(ctx context.Context, tenant, identifier string) (string, error)
}

// Streams removes queued messages from the bus's work queues (gateway/bus.Bus implements it).
type Streams interface {
	// DeleteQueued deletes the tenant's messages with these ids (their Nats-Msg-Id) from the
	// SEND and DISPATCH streams and returns how many it deleted.
	DeleteQueued(ctx context.Context, tenant string, ids map[string]bool) (int, error)
	// PurgeTenant deletes every queued message of the tenant from SEND and DISPATCH.
	PurgeTenant(ctx context.Context, tenant string) (int, error)
}

// Contacts erases what channel libraries keep about a person outside the store's own tables: the
// WhatsApp device store's Signal sessions, identity keys and LID mapping (gateway/server
// implements it over store/wastore).
type Contacts interface {
	EraseContact(ctx context.Context, tenant string, subject gateway.Address) (int64, error)
}

// ReportChannelState counts the rows of channel state (WhatsApp sessions, identity keys, LID
// mapping …) an erasure removed.
const ReportChannelState = "channel_state"

// Config wires a Service.
type Config struct {
	Store   Store              // required
	Indexer Indexer            // required
	Bus     pipeline.Publisher // optional: where the pending messages' final `rejected` events go
	Streams Streams            // optional: where the erased pending messages are purged from
	// Contacts, when set, erases the channels' own state about the subject. It runs when the
	// erasure is requested: the job keeps only the blind index, from which no phone number follows.
	Contacts Contacts
	Log      zerolog.Logger
	// Stale is how long a job may stay running before another worker takes it over (its process
	// died); default 5 minutes.
	Stale time.Duration
	// Poll is how often Run looks for jobs besides being woken by RequestErasure (other replicas'
	// jobs, stale ones); default 10s.
	Poll time.Duration
	// OnDone, when set, is told about every job that finished (done or failed).
	OnDone func(store.Erasure)
	Clock  func() time.Time
}

// Service runs the privacy operations.
type Service struct {
	cfg  Config
	wake chan struct{}
}

// New returns a Service. Erasure jobs run only while Run does.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Indexer == nil {
		return nil, errors.New("privacy: a store and an indexer are required")
	}
	if cfg.Stale <= 0 {
		cfg.Stale = 5 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Service{cfg: cfg, wake: make(chan struct{}, 1)}, nil
}

// ParseSubject parses a subject: +E164 (a WhatsApp phone number) or teams:user:<id>. Groups,
// chats and channels are not persons and are refused.
func ParseSubject(s string) (gateway.Address, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return gateway.Address{}, gateway.FieldErrorf(gateway.EMissingField, "subject", "a subject is required: +E164 or teams:user:<id>")
	}
	ch := gateway.WhatsApp
	if strings.HasPrefix(s, "teams:") {
		ch = gateway.Teams
	}
	a, err := gateway.ParseAddress(ch, s)
	if err != nil {
		return a, gateway.FieldErrorf(gateway.EInvalidField, "subject", "%s", gateway.ErrorMessage(err))
	}
	if a.Kind != gateway.KindPhone && a.Kind != gateway.KindTeamsUser {
		return a, gateway.FieldErrorf(gateway.EInvalidField, "subject", "a subject is a person: +E164 or teams:user:<id>, not a %s", a.Kind)
	}
	return a, nil
}

func (s *Service) index(ctx context.Context, tenant string, subject gateway.Address) (string, error) {
	return s.cfg.Indexer.BlindIndex(ctx, tenant, subject.String())
}

// audit appends an entry to the audit log; an operation whose audit entry cannot be written is
// not carried out.
func (s *Service) audit(ctx context.Context, tenant string, actor store.Actor, action, subjectIndex, detail string) error {
	target := ""
	if subjectIndex != "" {
		target = crypt.ShortSubject(subjectIndex)
	}
	return s.cfg.Store.AppendAudit(ctx, store.AuditEntry{At: s.cfg.Clock(), Tenant: tenant, Actor: actor, Action: action,
		Target: target, Detail: detail})
}

// Audit actions.
const (
	AuditErasure         = "erasure_requested"
	AuditTenantErasure   = "tenant_erasure"
	AuditExport          = "export"
	AuditRestrictionSet  = "restriction_set"
	AuditRestrictionLift = "restriction_lifted"
)

// AuditSubject appends an operation on subject (zero: none, as for a bulk import) to the audit
// log, the subject named by its blind index only.
func (s *Service) AuditSubject(ctx context.Context, tenant string, actor store.Actor, action string, subject gateway.Address, detail string) error {
	idx := ""
	if subject.Value != "" {
		var err error
		if idx, err = s.index(ctx, tenant, subject); err != nil {
			return err
		}
	}
	return s.audit(ctx, tenant, actor, action, idx, detail)
}

// RequestErasure records an erasure job for subject and wakes the worker.
func (s *Service) RequestErasure(ctx context.Context, tenant string, actor store.Actor, subject gateway.Address) (store.Erasure, error) {
	idx, err := s.index(ctx, tenant, subject)
	if err != nil {
		return store.Erasure{}, err
	}
	var channelRows int64
	if s.cfg.Contacts != nil {
		if channelRows, err = s.cfg.Contacts.EraseContact(ctx, tenant, subject); err != nil {
			return store.Erasure{}, err
		}
	}
	e, err := s.cfg.Store.CreateErasure(ctx, tenant, idx, actor.KeyID)
	if err != nil {
		return e, err
	}
	if err := s.audit(ctx, tenant, actor, AuditErasure, idx, e.ID); err != nil {
		return e, err
	}
	if channelRows > 0 {
		if err := s.cfg.Store.AddErasureReport(ctx, e.ID, map[string]int64{ReportChannelState: channelRows}); err != nil {
			return e, err
		}
	}
	s.cfg.Log.Info().Str("event", "erasure_requested").Str("erasure_id", e.ID).Str("tenant", tenant).Str("actor", actor.KeyID).Send()
	s.wakeWorker()
	return e, nil
}

func (s *Service) wakeWorker() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// RequestTenantErasure records a job that erases the whole tenant and wakes the worker. Only an
// admin API key may ask for it (the API checks the scope).
func (s *Service) RequestTenantErasure(ctx context.Context, tenant string, actor store.Actor) (store.Erasure, error) {
	e, err := s.createTenantJob(ctx, tenant, actor, false)
	if err != nil {
		return e, err
	}
	s.wakeWorker()
	return e, nil
}

// createTenantJob audits and records a tenant erasure job (claimed by the caller when claim is set).
func (s *Service) createTenantJob(ctx context.Context, tenant string, actor store.Actor, claim bool) (store.Erasure, error) {
	if err := s.audit(ctx, tenant, actor, AuditTenantErasure, "", ""); err != nil {
		return store.Erasure{}, err
	}
	e, err := s.cfg.Store.CreateTenantErasure(ctx, tenant, actor.KeyID, claim)
	if err == nil {
		s.cfg.Log.Warn().Str("event", "tenant_erasure_requested").Str("erasure_id", e.ID).Str("tenant", tenant).Str("actor", actor.KeyID).Send()
	}
	return e, err
}

// EraseTenant erases the whole tenant in this call (the operator's CLI): the same job the worker
// runs for RequestTenantErasure, claimed at once.
func (s *Service) EraseTenant(ctx context.Context, tenant string, actor store.Actor) (store.Erasure, error) {
	job, err := s.createTenantJob(ctx, tenant, actor, true)
	if err != nil {
		return job, err
	}
	if err := s.eraseTenant(ctx, job); err != nil {
		if ctx.Err() == nil {
			err = errors.Join(err, s.cfg.Store.FailErasure(ctx, job.ID, gateway.ErrorCode(err)))
		}
		return job, err
	}
	return s.cfg.Store.Erasure(ctx, tenant, job.ID)
}

// Erasure returns one of the tenant's erasure jobs.
func (s *Service) Erasure(ctx context.Context, tenant, id string) (store.Erasure, error) {
	return s.cfg.Store.Erasure(ctx, tenant, id)
}

// Run carries out erasure jobs until ctx ends: at once when woken, and every Poll.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		for {
			worked, err := s.RunOnce(ctx)
			if err != nil && ctx.Err() == nil {
				s.cfg.Log.Error().Err(err).Msg("privacy: erasure worker")
			}
			if !worked || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-t.C:
		}
	}
}

// RunOnce claims and carries out one erasure job; worked=false when there was none.
func (s *Service) RunOnce(ctx context.Context) (worked bool, err error) {
	job, subject, ok, err := s.cfg.Store.ClaimErasure(ctx, s.cfg.Stale)
	if err != nil || !ok {
		return false, err
	}
	start := s.cfg.Clock()
	if job.WholeTenant {
		err = s.eraseTenant(ctx, job)
	} else {
		err = s.erase(ctx, job, subject)
	}
	if err != nil {
		code := gateway.ErrorCode(err)
		if ctx.Err() != nil {
			return true, err // left running: taken up again when stale
		}
		s.cfg.Log.Error().Str("event", "erasure_failed").Str("erasure_id", job.ID).Str("tenant", job.Tenant).Str("error_code", code).Send()
		if ferr := s.cfg.Store.FailErasure(ctx, job.ID, code); ferr != nil {
			return true, ferr
		}
		s.done(ctx, job)
		return true, nil
	}
	ev := s.cfg.Log.Info().Str("event", "erasure_done").Str("erasure_id", job.ID).Str("tenant", job.Tenant).
		Bool("whole_tenant", job.WholeTenant).Dur("took", s.cfg.Clock().Sub(start))
	if e, err := s.cfg.Store.Erasure(ctx, job.Tenant, job.ID); err == nil {
		for k, v := range e.Report {
			ev = ev.Int64(k, v)
		}
	}
	ev.Send()
	s.done(ctx, job)
	return true, nil
}

func (s *Service) done(ctx context.Context, job store.Erasure) {
	if s.cfg.OnDone == nil {
		return
	}
	if e, err := s.cfg.Store.Erasure(ctx, job.Tenant, job.ID); err == nil {
		s.cfg.OnDone(e)
	}
}

// ReportStreamMessages counts the queued messages an erasure deleted from the streams.
const ReportStreamMessages = "stream_messages"

// eraseTenant destroys the tenant key, deletes every row of the tenant (channel credentials and
// the WhatsApp device store included: they live in tables with a tenant column) and its queued
// messages. The requesting API key stays, so its holder can read the report.
func (s *Service) eraseTenant(ctx context.Context, job store.Erasure) error {
	report, err := s.cfg.Store.EraseTenant(ctx, job.Tenant, job.Actor)
	if err != nil {
		return err
	}
	if s.cfg.Streams != nil {
		n, err := s.cfg.Streams.PurgeTenant(ctx, job.Tenant)
		if err != nil {
			return err
		}
		report[ReportStreamMessages] = int64(n)
	}
	if err := s.cfg.Store.AddErasureReport(ctx, job.ID, report); err != nil {
		return err
	}
	return s.cfg.Store.FinishErasure(ctx, job.ID)
}

// erase shreds the subject's key first (from then on nothing of the subject opens: not in the
// database, its backups or the stream files), deletes its rows, purges its pending messages from
// the streams and ends them with `rejected subject_erased` — after the rows are gone, so the
// status recorder has no row and writes no delivery line naming the subject. Every step can run
// again: a job taken over after a crash carries on from the pending list its first run stored.
func (s *Service) erase(ctx context.Context, job store.Erasure, subject string) error {
	destroyed, err := s.cfg.Store.DestroySubjectKey(ctx, job.Tenant, subject)
	if err != nil {
		return err
	}
	if destroyed {
		if err := s.cfg.Store.AddErasureReport(ctx, job.ID, map[string]int64{storesql.ReportKeys: 1}); err != nil {
			return err
		}
	}
	if err := s.cfg.Store.EraseSubjectRows(ctx, job.Tenant, subject, job.ID); err != nil {
		return err
	}
	pending, err := s.cfg.Store.ErasurePending(ctx, job.Tenant, job.ID)
	if err != nil {
		return err
	}
	if s.cfg.Streams != nil && len(pending) > 0 {
		ids := make(map[string]bool, len(pending))
		for _, d := range pending {
			ids[d.MessageID] = true
		}
		n, err := s.cfg.Streams.DeleteQueued(ctx, job.Tenant, ids)
		if err != nil {
			return err
		}
		if err := s.cfg.Store.AddErasureReport(ctx, job.ID, map[string]int64{ReportStreamMessages: int64(n)}); err != nil {
			return err
		}
	}
	if s.cfg.Bus != nil {
		now := s.cfg.Clock().UTC()
		for _, d := range pending {
			ev := gateway.StatusEvent{MessageID: d.MessageID, Tenant: d.Tenant, Channel: d.Channel, Account: d.Account,
				Status: gateway.StatusRejected, At: now,
				Error: &gateway.ErrorDetail{Code: gateway.ESubjectErased, Message: "the recipient's data was erased"}}
			if err := pipeline.PublishStatus(ctx, s.cfg.Bus, ev); err != nil {
				return err
			}
		}
	}
	return s.cfg.Store.FinishErasure(ctx, job.ID)
}

// SetRestriction restricts processing for subject (on) or lifts it; changed=false when it
// already was so.
func (s *Service) SetRestriction(ctx context.Context, tenant string, actor store.Actor, subject gateway.Address, on bool) (bool, error) {
	idx, err := s.index(ctx, tenant, subject)
	if err != nil {
		return false, err
	}
	action := AuditRestrictionSet
	if !on {
		action = AuditRestrictionLift
	}
	if err := s.audit(ctx, tenant, actor, action, idx, ""); err != nil {
		return false, err
	}
	changed, err := s.cfg.Store.SetRestriction(ctx, tenant, idx, actor.KeyID, on)
	if err == nil && changed {
		s.cfg.Log.Info().Str("event", "restriction").Str("tenant", tenant).Str("actor", actor.KeyID).Bool("restricted", on).Send()
	}
	return changed, err
}

// Restricted reports whether processing is restricted for subject.
func (s *Service) Restricted(ctx context.Context, tenant string, subject gateway.Address) (bool, error) {
	idx, err := s.index(ctx, tenant, subject)
	if err != nil {
		return false, err
	}
	return s.cfg.Store.Restricted(ctx, tenant, idx)
}

// SkipRestricted wraps an inbound handler (automations) so that it does not see messages from a
// subject whose processing is restricted: the message is stored, nothing reacts to it.
func (s *Service) SkipRestricted(h pipeline.InboundHandler) pipeline.InboundHandler {
	return pipeline.InboundHandlerFunc(func(ctx context.Context, in pipeline.Inbound) error {
		if in.Message != nil && in.Subject != "" {
			r, err := s.cfg.Store.Restricted(ctx, in.Message.Tenant, in.Subject)
			if err != nil {
				return err
			}
			if r {
				s.cfg.Log.Debug().Str("msg_id", in.Message.ID).Str("tenant", in.Message.Tenant).Msg("restricted subject: inbound handler skipped")
				return nil
			}
		}
		return h.HandleInbound(ctx, in)
	})
}
