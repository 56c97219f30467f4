package privacy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// exportPage is how many messages the export reads at a time.
const exportPage = 200

// ExportMessage is one message in an export: everything stored about it, decrypted.
type ExportMessage struct {
	ID               string                `json:"id"`
	Direction        string                `json:"direction"` // outbound or inbound, as in the API
	Channel          gateway.Channel       `json:"channel"`
	Account          string                `json:"account"`
	Peer             string                `json:"peer"`
	Content          gateway.Content       `json:"content"`
	Metadata         map[string]string     `json:"metadata,omitempty"`
	Status           gateway.Status        `json:"status"`
	ErrorCode        string                `json:"error_code,omitempty"`
	ChannelMessageID string                `json:"channel_message_id,omitempty"`
	CreatedAt        time.Time             `json:"created_at"`
	UpdatedAt        time.Time             `json:"updated_at"`
	History          []gateway.StatusEvent `json:"history"`
}

// ExportConsent is the subject's consent on one channel, in the field names of the consent API.
type ExportConsent struct {
	Channel       gateway.Channel         `json:"channel"`
	Current       []ExportConsentEntry    `json:"current"`
	History       []ExportConsentEvidence `json:"history"`
	LastInboundAt *time.Time              `json:"last_inbound_at,omitempty"`
}

// ExportConsentEntry is the current state of one category ("" = the plain entry).
type ExportConsentEntry struct {
	Category  string              `json:"category,omitempty"`
	State     store.ConsentState  `json:"state"`
	Source    store.ConsentSource `json:"source"`
	UpdatedAt time.Time           `json:"updated_at"`
}

// ExportConsentEvidence is one recorded piece of consent evidence.
type ExportConsentEvidence struct {
	ID               string              `json:"id"`
	Category         string              `json:"category,omitempty"`
	State            store.ConsentState  `json:"state"`
	Source           store.ConsentSource `json:"source"`
	Actor            string              `json:"actor,omitempty"`
	At               time.Time           `json:"at"`
	InboundMessageID string              `json:"inbound_message_id,omitempty"`
	Note             string              `json:"note,omitempty"`
}

// Export writes everything stored about subject in tenant as one JSON document:
//
//	{"subject":…, "tenant":…, "generated_at":…, "restricted":…, "consent":{…}, "messages":[…]}
//
// Messages are read and written a page at a time, so a long history streams in bounded memory.
// An error after the first byte leaves the document unfinished (not valid JSON): the caller can
// tell.
func (s *Service) Export(ctx context.Context, tenant string, actor store.Actor, subject gateway.Address, w io.Writer) error {
	idx, err := s.index(ctx, tenant, subject)
	if err != nil {
		return err
	}
	if err := s.audit(ctx, tenant, actor, AuditExport, idx, ""); err != nil {
		return err
	}
	restricted, err := s.cfg.Store.Restricted(ctx, tenant, idx)
	if err != nil {
		return err
	}
	c, err := s.cfg.Store.Consent(ctx, tenant, subject.Channel, subject)
	if err != nil {
		return err
	}
	ec := ExportConsent{Channel: subject.Channel, Current: []ExportConsentEntry{}, History: []ExportConsentEvidence{}}
	for _, e := range c.Current {
		ec.Current = append(ec.Current, ExportConsentEntry(e))
	}
	for _, e := range c.History {
		ec.History = append(ec.History, ExportConsentEvidence(e))
	}
	if !c.LastInboundAt.IsZero() {
		ec.LastInboundAt = &c.LastInboundAt
	}
	msgs, err := s.cfg.Store.SubjectMessages(ctx, tenant, idx, "", exportPage)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	head := struct {
		Subject     string        `json:"subject"`
		Tenant      string        `json:"tenant"`
		GeneratedAt time.Time     `json:"generated_at"`
		Restricted  bool          `json:"restricted"`
		Consent     ExportConsent `json:"consent"`
	}{subject.String(), tenant, s.cfg.Clock().UTC(), restricted, ec}
	hb, err := json.Marshal(head)
	if err != nil {
		return err
	}
	bw.Write(hb[:len(hb)-1])
	bw.WriteString(`,"messages":[`)
	first := true
	for len(msgs) > 0 {
		for _, m := range msgs {
			hist, err := s.cfg.Store.History(ctx, tenant, m.ID)
			if err != nil {
				return err
			}
			em := ExportMessage{
				ID: m.ID, Direction: m.Direction.Name(), Channel: m.Channel, Account: m.Account, Peer: m.Peer.String(),
				Content: m.Content, Metadata: m.Metadata, Status: m.Status, ErrorCode: m.ErrorCode,
				ChannelMessageID: m.ChannelMessageID, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt, History: hist,
			}
			b, err := json.Marshal(em)
			if err != nil {
				return err
			}
			if !first {
				bw.WriteByte(',')
			}
			first = false
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
		if len(msgs) < exportPage {
			break
		}
		if msgs, err = s.cfg.Store.SubjectMessages(ctx, tenant, idx, msgs[len(msgs)-1].ID, exportPage); err != nil {
			return err
		}
	}
	bw.WriteString("]}\n")
	if err := bw.Flush(); err != nil {
		return err
	}
	s.cfg.Log.Info().Str("event", "export").Str("tenant", tenant).Send()
	return nil
}
