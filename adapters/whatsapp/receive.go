package whatsapp

import (
	"context"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

// KindLID is the address kind of a sender known only by their LID (WhatsApp's privacy id), when
// the phone number behind it is not known yet.
const KindLID gateway.AddressKind = "lid"

// Content.Extra keys of inbound messages.
const (
	ExtraSenderLID   = "sender_lid"    // the sender's LID (…@lid), when known
	ExtraMessageType = "whatsapp_type" // image, video, audio, document, sticker, reaction, location, contact
	ExtraEdited      = "edited"        // "true" for an edit of an earlier message (ReplyTo names it)
)

// ErrorServerError is the error code of a server-error receipt.
const ErrorServerError = "whatsapp_server_error"

// handlerFor returns the event handler of one client generation. It returns false — whatsmeow
// then does not acknowledge the event, and the server delivers it again — when the sink could
// not take a message or receipt.
func (a *Adapter) handlerFor(gen uint64) func(evt any) bool {
	return func(evt any) bool {
		a.mu.Lock()
		cur, sink, ctx := a.gen, a.sink, a.runCtx
		a.mu.Unlock()
		if gen != cur {
			return true // a replaced client: its events are no longer ours
		}
		a.notePhone(evt)
		switch e := evt.(type) {
		case *events.Message:
			return a.onMessage(ctx, sink, e)
		case *events.Receipt:
			return a.onReceipt(ctx, sink, e)
		default:
			a.onConnEvent(evt)
			return true
		}
	}
}

// phoneSaveEvery spaces out the writes of LastSeenPhone: a phone in use is seen all the time, and
// the figure matters by the day.
const phoneSaveEvery = 10 * time.Minute

// notePhone records that the account's phone was active when the event comes from it (device 0
// of our own user): a message sent on the phone, or a receipt it sent (it read a chat).
func (a *Adapter) notePhone(evt any) {
	var src types.MessageSource
	switch e := evt.(type) {
	case *events.Message:
		src = e.Info.MessageSource
	case *events.Receipt:
		src = e.MessageSource
	default:
		return
	}
	if !src.IsFromMe || src.Sender.Device != 0 {
		return
	}
	now := a.clock.Now()
	a.mu.Lock()
	a.status.LastSeenPhone = now
	save := now.Sub(a.phoneSaved) >= phoneSaveEvery
	if save {
		a.phoneSaved = now
	}
	s := a.status
	a.mu.Unlock()
	if save {
		a.persist(s)
	}
}

func (a *Adapter) onMessage(ctx context.Context, sink adapters.Sink, e *events.Message) bool {
	if e.Info.IsFromMe || e.Info.Chat.Server == types.BroadcastServer || e.Info.Chat.Server == types.NewsletterServer {
		return true
	}
	ev, ok := a.inboundEvent(ctx, e)
	if !ok {
		return true // nothing a person wrote (protocol and key-distribution messages)
	}
	if sink == nil || ctx == nil {
		return false // not running: let WhatsApp deliver it again
	}
	sctx, cancel := context.WithTimeout(ctx, a.cfg.SinkTimeout)
	defer cancel()
	if err := sink.Inbound(sctx, ev); err != nil {
		a.log.Warn().Err(err).Str("channel_message_id", ev.ChannelMessageID).
			Msg("inbound message not taken by the sink; not acknowledging it, WhatsApp will deliver it again")
		return false
	}
	if ev.From.Kind == gateway.KindPhone {
		a.known.Store(ev.From.Value[1:], struct{}{})
	}
	return true
}

// inboundEvent converts a message; ok=false when it carries nothing for people.
func (a *Adapter) inboundEvent(ctx context.Context, e *events.Message) (gateway.InboundEvent, bool) {
	msg := e.Message
	if msg == nil {
		return gateway.InboundEvent{}, false
	}
	var c gateway.Content
	var ci *waE2E.ContextInfo
	kind := ""
	switch {
	case msg.GetConversation() != "":
		c.Text = msg.GetConversation()
	case msg.GetExtendedTextMessage() != nil:
		c.Text = msg.GetExtendedTextMessage().GetText()
		ci = msg.GetExtendedTextMessage().GetContextInfo()
	case msg.GetImageMessage() != nil:
		m := msg.GetImageMessage()
		kind, ci = "image", m.GetContextInfo()
		c.Text = m.GetCaption()
		c.Media = &gateway.Media{MIMEType: m.GetMimetype(), Caption: m.GetCaption()}
	case msg.GetVideoMessage() != nil:
		m := msg.GetVideoMessage()
		kind, ci = "video", m.GetContextInfo()
		c.Text = m.GetCaption()
		c.Media = &gateway.Media{MIMEType: m.GetMimetype(), Caption: m.GetCaption()}
	case msg.GetAudioMessage() != nil:
		m := msg.GetAudioMessage()
		kind, ci = "audio", m.GetContextInfo()
		c.Media = &gateway.Media{MIMEType: m.GetMimetype()}
	case msg.GetDocumentMessage() != nil:
		m := msg.GetDocumentMessage()
		kind, ci = "document", m.GetContextInfo()
		c.Text = m.GetCaption()
		c.Media = &gateway.Media{MIMEType: m.GetMimetype(), Filename: m.GetFileName(), Caption: m.GetCaption()}
	case msg.GetStickerMessage() != nil:
		m := msg.GetStickerMessage()
		kind, ci = "sticker", m.GetContextInfo()
		c.Media = &gateway.Media{MIMEType: m.GetMimetype()}
	case msg.GetReactionMessage() != nil:
		m := msg.GetReactionMessage()
		kind = "reaction"
		c.ReplyTo = m.GetKey().GetID()
		c.Extra = map[string]string{ExtraReaction: m.GetText()}
	case msg.GetLocationMessage() != nil:
		kind, ci = "location", msg.GetLocationMessage().GetContextInfo()
		c.Text = msg.GetLocationMessage().GetName()
	case msg.GetContactMessage() != nil:
		kind, ci = "contact", msg.GetContactMessage().GetContextInfo()
		c.Text = msg.GetContactMessage().GetDisplayName()
	default:
		return gateway.InboundEvent{}, false
	}
	if ci.GetStanzaID() != "" {
		c.ReplyTo = ci.GetStanzaID()
	}
	setExtra := func(k, v string) {
		if c.Extra == nil {
			c.Extra = map[string]string{}
		}
		c.Extra[k] = v
	}
	if kind != "" {
		setExtra(ExtraMessageType, kind)
	}
	if e.IsEdit {
		setExtra(ExtraEdited, "true")
	}
	from, lid := a.senderAddress(ctx, e.Info.Sender, e.Info.SenderAlt)
	if !lid.IsEmpty() {
		setExtra(ExtraSenderLID, lid.String())
	}
	ev := gateway.InboundEvent{
		Tenant:           a.cfg.Tenant,
		Channel:          gateway.WhatsApp,
		Account:          a.cfg.Account,
		ChannelMessageID: e.Info.ID,
		From:             from,
		FromName:         e.Info.PushName,
		Content:          c,
		At:               e.Info.Timestamp,
	}
	if e.Info.IsGroup {
		ev.Chat = e.Info.Chat.ToNonAD().String()
	}
	return ev, true
}

// senderAddress resolves a sender to a phone address when the number is known (from the event
// or the LID map), else to its LID; it also returns the LID when known.
func (a *Adapter) senderAddress(ctx context.Context, sender, alt types.JID) (gateway.Address, types.JID) {
	sender, alt = sender.ToNonAD(), alt.ToNonAD()
	var pn, lid types.JID
	switch sender.Server {
	case types.DefaultUserServer:
		pn = sender
		if alt.Server == types.HiddenUserServer {
			lid = alt
		}
	case types.HiddenUserServer:
		lid = sender
		if alt.Server == types.DefaultUserServer {
			pn = alt
		}
	}
	if lids := a.cfg.Store.LIDs(); lids != nil {
		if pn.IsEmpty() && !lid.IsEmpty() {
			if j, err := lids.GetPNForLID(ctx, lid); err == nil {
				pn = j.ToNonAD()
			}
		} else if lid.IsEmpty() && !pn.IsEmpty() {
			if j, err := lids.GetLIDForPN(ctx, pn); err == nil {
				lid = j.ToNonAD()
			}
		}
	}
	if !pn.IsEmpty() {
		v := "+" + pn.User
		if e164, err := gateway.NormalizePhone(v); err == nil {
			v = e164
		}
		return gateway.Address{Channel: gateway.WhatsApp, Kind: gateway.KindPhone, Value: v}, lid
	}
	if !lid.IsEmpty() {
		return gateway.Address{Channel: gateway.WhatsApp, Kind: KindLID, Value: lid.String()}, lid
	}
	return gateway.Address{Channel: gateway.WhatsApp, Kind: KindLID, Value: sender.String()}, lid
}

// receiptStatus maps a receipt type to a status; ok=false for receipts that are not about the
// delivery of our messages (our other devices, retries, history sync …).
func receiptStatus(t types.ReceiptType) (gateway.Status, bool) {
	switch t {
	case types.ReceiptTypeDelivered:
		return gateway.StatusDelivered, true
	case types.ReceiptTypeRead:
		return gateway.StatusRead, true
	case types.ReceiptTypePlayed:
		return gateway.StatusPlayed, true
	case types.ReceiptTypeServerError:
		return gateway.StatusFailed, true
	}
	return "", false
}

// onReceipt reports one status per message id; in a group, per participant.
func (a *Adapter) onReceipt(ctx context.Context, sink adapters.Sink, e *events.Receipt) bool {
	st, ok := receiptStatus(e.Type)
	if !ok || e.IsFromMe && e.Type != types.ReceiptTypeServerError {
		return true
	}
	if sink == nil || ctx == nil {
		return false
	}
	participant := ""
	if e.IsGroup {
		addr, _ := a.senderAddress(ctx, e.Sender, types.EmptyJID)
		participant = addr.Value
	}
	sctx, cancel := context.WithTimeout(ctx, a.cfg.SinkTimeout)
	defer cancel()
	for _, id := range e.MessageIDs {
		r := adapters.Receipt{ChannelMessageID: id, Status: st, At: e.Timestamp, Participant: participant}
		if st == gateway.StatusFailed {
			r.Error = &gateway.ErrorDetail{Code: ErrorServerError, Message: "WhatsApp's server could not deliver the message"}
		}
		if err := sink.Status(sctx, r); err != nil {
			a.log.Warn().Err(err).Str("channel_message_id", id).Str("status", string(st)).
				Msg("receipt not taken by the sink; not acknowledging it")
			return false
		}
	}
	return true
}
