package consent

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
)

// Kind is what a keyword asks for.
type Kind string

const (
	KindNone   Kind = ""
	KindOptOut Kind = "opt_out"
	KindOptIn  Kind = "opt_in"
	KindHelp   Kind = "help"
)

// Match says which keyword list text belongs to: the whole message must be one word, after
// trimming whitespace and punctuation at both ends, compared without regard to case. "stop",
// "  Stop! " and "¡STOP!" are STOP; "stop please", "STOPPED" and "unstoppable" are not keywords.
func Match(text string, k Keywords) Kind {
	word := strings.TrimFunc(text, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsPunct(r) })
	if word == "" || strings.IndexFunc(word, unicode.IsSpace) >= 0 {
		return KindNone
	}
	for _, l := range []struct {
		kind  Kind
		words []string
	}{{KindOptOut, k.OptOut}, {KindOptIn, k.OptIn}, {KindHelp, k.Help}} {
		for _, w := range l.words {
			if strings.EqualFold(word, w) {
				return l.kind
			}
		}
	}
	return KindNone
}

// Acceptor accepts an outbound message (pipeline.Intake implements it).
type Acceptor interface {
	Accept(ctx context.Context, nm store.NewMessage) (msg *gateway.Message, existingHash string, created bool, err error)
}

// Handler is the first inbound handler: it restarts the sender's reply window on every inbound
// message, and acts on STOP/START/HELP — it records the consent change with the inbound message as
// evidence and sends the configured confirmation through the normal Intake. It is idempotent: a
// redelivered inbound message records nothing twice and sends no second reply.
type Handler struct {
	Registry *Registry
	Store    store.Consents
	Intake   Acceptor
	Policy   PolicyFunc
	Log      zerolog.Logger
}

var _ pipeline.InboundHandler = (*Handler)(nil)

// ReplyID is the message id of the confirmation of inbound message inboundID: the same on every
// redelivery, so the reply is stored once; and never an id the API hands out.
func ReplyID(tenant string, ch gateway.Channel, account, inboundID string, at time.Time) string {
	return pipeline.InboundID(tenant, ch, account, "keyword-reply:"+inboundID, at)
}

// HandleInbound implements pipeline.InboundHandler.
func (h *Handler) HandleInbound(ctx context.Context, in pipeline.Inbound) error {
	m := in.Message
	if m == nil || m.Peer.IsZero() {
		return nil
	}
	if err := h.Store.TouchInbound(ctx, m.Tenant, m.Channel, m.Peer, m.CreatedAt); err != nil {
		return err
	}
	if in.Event.Chat != "" {
		// Written in a group or a channel: keywords are for 1:1 conversations.
		return nil
	}
	p, ok := h.Policy(m.Tenant, m.Channel)
	if !ok {
		return nil
	}
	kind := Match(m.Content.Text, p.Keywords)
	var state store.ConsentState
	var reply string
	switch kind {
	case KindNone:
		return nil
	case KindOptOut:
		state, reply = store.ConsentOptedOut, p.Replies.OptOut
	case KindOptIn:
		state, reply = store.ConsentOptedIn, p.Replies.OptIn
	case KindHelp:
		reply = p.Replies.Help
	}
	if state != "" {
		if _, err := h.Registry.Record(ctx, store.ConsentChange{
			Tenant: m.Tenant, Channel: m.Channel, Subject: m.Peer, State: state, Source: store.SourceKeyword,
			Actor: string(m.Channel) + ":" + m.Account, At: m.CreatedAt, InboundMessageID: m.ID,
		}); err != nil {
			return err
		}
	}
	if reply == "" {
		return nil
	}
	id := ReplyID(m.Tenant, m.Channel, m.Account, m.ID, m.CreatedAt)
	if kind == KindOptOut {
		if err := h.Store.GrantOptOutBypass(ctx, m.Tenant, m.Peer, id, m.ID); err != nil {
			return err
		}
	}
	_, _, _, err := h.Intake.Accept(ctx, store.NewMessage{Message: &gateway.Message{
		ID: id, Tenant: m.Tenant, Direction: gateway.Outbound, Channel: m.Channel, Account: m.Account,
		Peer: m.Peer, Content: gateway.Content{Text: reply, ReplyTo: m.ID},
	}})
	var ge *gateway.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ge) && ge.Code == gateway.EConflict:
		// Stored on an earlier delivery of this inbound message: nothing to send twice.
		return nil
	}
	if _, rejected := pipeline.Rejection(err); rejected {
		// Policy refuses the reply (HELP from someone who opted out): the person is not written to.
		h.Log.Info().Str("event", "keyword_reply_suppressed").Str("tenant", m.Tenant).Str("channel", string(m.Channel)).
			Str("inbound_msg_id", m.ID).Str("subject", pipeline.ShortSubject(in.Subject)).Str("keyword", string(kind)).
			Str("error_code", gateway.ErrorCode(err)).Send()
		return nil
	}
	return err
}
