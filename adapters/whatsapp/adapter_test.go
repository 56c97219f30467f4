package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

func phone(s string) gateway.Address {
	return gateway.Address{Channel: gateway.WhatsApp, Kind: gateway.KindPhone, Value: s}
}

func TestSendPassesPregeneratedID(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	group := gateway.Address{Channel: gateway.WhatsApp, Kind: gateway.KindGroup, Value: "120363000000000042@g.us"}
	tests := []struct {
		name  string
		to    gateway.Address
		c     gateway.Content
		check func(t *testing.T, m *waE2E.Message)
	}{
		{"text", phone("+4915112345678"), gateway.Content{Text: "hello"}, func(t *testing.T, m *waE2E.Message) {
			if m.GetConversation() != "hello" {
				t.Errorf("conversation = %q", m.GetConversation())
			}
		}},
		{"reply", phone("+4915112345678"), gateway.Content{Text: "yes", ReplyTo: "3EB0PEER", Extra: map[string]string{ExtraReplyText: "ok?"}}, func(t *testing.T, m *waE2E.Message) {
			ci := m.GetExtendedTextMessage().GetContextInfo()
			if m.GetExtendedTextMessage().GetText() != "yes" || ci.GetStanzaID() != "3EB0PEER" ||
				ci.GetParticipant() != "4915112345678@s.whatsapp.net" || ci.GetQuotedMessage().GetConversation() != "ok?" {
				t.Errorf("reply = %v", m)
			}
		}},
		{"reply to own message", phone("+4915112345678"), gateway.Content{Text: "again", ReplyTo: "3EB0MINE", Extra: map[string]string{ExtraReplyFromMe: "true"}}, func(t *testing.T, m *waE2E.Message) {
			if p := m.GetExtendedTextMessage().GetContextInfo().GetParticipant(); p != "4915100000001@s.whatsapp.net" {
				t.Errorf("participant = %q", p)
			}
		}},
		{"reaction", phone("+4915112345678"), gateway.Content{ReplyTo: "3EB0PEER", Extra: map[string]string{ExtraReaction: "👍"}}, func(t *testing.T, m *waE2E.Message) {
			r := m.GetReactionMessage()
			if r.GetText() != "👍" || r.GetKey().GetID() != "3EB0PEER" || r.GetKey().GetFromMe() || r.GetKey().GetRemoteJID() != "4915112345678@s.whatsapp.net" {
				t.Errorf("reaction = %v", r)
			}
		}},
		{"group", group, gateway.Content{Text: "team"}, func(t *testing.T, m *waE2E.Message) {
			if m.GetConversation() != "team" {
				t.Errorf("conversation = %q", m.GetConversation())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := h.a.NewChannelMessageID()
			if !strings.HasPrefix(id, "3EB0FAKE") {
				t.Fatalf("NewChannelMessageID = %q, want the client's GenerateMessageID", id)
			}
			got, err := h.a.Send(h.ctx, adapters.Outbound{MessageID: "msg_1", ChannelMessageID: id, To: tt.to, Content: tt.c, Attempt: 1})
			if err != nil {
				t.Fatal(err)
			}
			if got != id {
				t.Errorf("Send returned %q, want %q", got, id)
			}
			sent := h.client().sentMessages()
			last := sent[len(sent)-1]
			if string(last.ID) != id {
				t.Errorf("SendMessage got id %q, want %q", last.ID, id)
			}
			want, _ := recipientJID(tt.to)
			if last.To != want {
				t.Errorf("to = %s, want %s", last.To, want)
			}
			tt.check(t, last.Msg)
		})
	}
}

func TestSendErrors(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	cli := h.client()
	cli.mu.Lock()
	cli.notOnWA["4915199999999"] = true
	cli.mu.Unlock()
	tests := []struct {
		name      string
		to        gateway.Address
		c         gateway.Content
		sendErr   error
		permanent bool
		code      string
	}{
		{"not on whatsapp", phone("+4915199999999"), gateway.Content{Text: "hi"}, nil, true, ENotOnWhatsApp},
		{"teams address", gateway.Address{Channel: gateway.Teams, Kind: gateway.KindTeamsUser, Value: "u"}, gateway.Content{Text: "hi"}, nil, true, gateway.EInvalidRecipient},
		{"bad group", gateway.Address{Channel: gateway.WhatsApp, Kind: gateway.KindGroup, Value: "x@s.whatsapp.net"}, gateway.Content{Text: "hi"}, nil, true, gateway.EInvalidRecipient},
		{"template", phone("+4915112345678"), gateway.Content{Template: &gateway.Template{Name: "t"}}, nil, true, EUnsupportedContent},
		{"empty", phone("+4915112345678"), gateway.Content{}, nil, true, EUnsupportedContent},
		{"network", phone("+4915112345678"), gateway.Content{Text: "hi"}, &net.OpError{Op: "write", Err: errors.New("broken pipe")}, false, "whatsapp_disconnected"},
		{"timeout", phone("+4915112345678"), gateway.Content{Text: "hi"}, whatsmeow.ErrMessageTimedOut, false, "whatsapp_disconnected"},
		{"disconnected", phone("+4915112345678"), gateway.Content{Text: "hi"}, &whatsmeow.DisconnectedError{Action: "message send"}, false, "whatsapp_disconnected"},
		{"server error", phone("+4915112345678"), gateway.Content{Text: "hi"}, fmt.Errorf("%w 500", whatsmeow.ErrServerReturnedError), false, gateway.EChannelError},
		{"AD jid", phone("+4915112345678"), gateway.Content{Text: "hi"}, whatsmeow.ErrRecipientADJID, true, gateway.EInvalidRecipient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cli.mu.Lock()
			cli.sendErr = tt.sendErr
			cli.mu.Unlock()
			_, err := h.a.Send(h.ctx, adapters.Outbound{ChannelMessageID: "3EB0X", To: tt.to, Content: tt.c})
			if err == nil {
				t.Fatal("no error")
			}
			se := adapters.AsSendError(err)
			if se.Permanent != tt.permanent || se.Code != tt.code {
				t.Errorf("got permanent=%v code=%q (%v), want %v %q", se.Permanent, se.Code, err, tt.permanent, tt.code)
			}
			if !tt.permanent && se.RetryAfter <= 0 {
				t.Errorf("retryable error without RetryAfter")
			}
		})
	}
}

func TestReceiptsBecomeStatuses(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	peer := types.NewJID("4915112345678", types.DefaultUserServer)
	group := types.NewJID("120363000000000042", types.GroupServer)
	at := time.Date(2026, 11, 22, 9, 1, 0, 0, time.UTC)
	tests := []struct {
		name string
		evt  *events.Receipt
		want []adapters.Receipt
	}{
		{"delivered, several ids", &events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer}, MessageIDs: []string{"A", "B", "C"}, Timestamp: at, Type: types.ReceiptTypeDelivered},
			[]adapters.Receipt{{ChannelMessageID: "A", Status: gateway.StatusDelivered, At: at}, {ChannelMessageID: "B", Status: gateway.StatusDelivered, At: at}, {ChannelMessageID: "C", Status: gateway.StatusDelivered, At: at}}},
		{"read", &events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer}, MessageIDs: []string{"A"}, Timestamp: at, Type: types.ReceiptTypeRead},
			[]adapters.Receipt{{ChannelMessageID: "A", Status: gateway.StatusRead, At: at}}},
		{"played", &events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer}, MessageIDs: []string{"V"}, Timestamp: at, Type: types.ReceiptTypePlayed},
			[]adapters.Receipt{{ChannelMessageID: "V", Status: gateway.StatusPlayed, At: at}}},
		{"server error", &events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer}, MessageIDs: []string{"E"}, Timestamp: at, Type: types.ReceiptTypeServerError},
			[]adapters.Receipt{{ChannelMessageID: "E", Status: gateway.StatusFailed, At: at, Error: &gateway.ErrorDetail{Code: ErrorServerError}}}},
		{"group, per participant", &events.Receipt{MessageSource: types.MessageSource{Chat: group, Sender: types.JID{User: "4915112345678", Device: 3, Server: types.DefaultUserServer}, IsGroup: true}, MessageIDs: []string{"G"}, Timestamp: at, Type: types.ReceiptTypeRead},
			[]adapters.Receipt{{ChannelMessageID: "G", Status: gateway.StatusRead, At: at, Participant: "+4915112345678"}}},
		{"our other device", &events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer, IsFromMe: true}, MessageIDs: []string{"S"}, Timestamp: at, Type: types.ReceiptTypeSender}, nil},
		{"retry", &events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer}, MessageIDs: []string{"R"}, Timestamp: at, Type: types.ReceiptTypeRetry}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.sink.mu.Lock()
			h.sink.statuses = nil
			h.sink.mu.Unlock()
			if !h.client().Emit(tt.evt) {
				t.Fatal("handler reported failure")
			}
			h.sink.mu.Lock()
			got := h.sink.statuses
			h.sink.mu.Unlock()
			if len(got) != len(tt.want) {
				t.Fatalf("got %d statuses, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.ChannelMessageID != w.ChannelMessageID || g.Status != w.Status || !g.At.Equal(w.At) || g.Participant != w.Participant ||
					(w.Error == nil) != (g.Error == nil) || (w.Error != nil && g.Error.Code != w.Error.Code) {
					t.Errorf("status %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
	t.Run("sink failure is not acknowledged", func(t *testing.T) {
		h.sink.mu.Lock()
		h.sink.fail = errors.New("bus down")
		h.sink.mu.Unlock()
		defer func() { h.sink.mu.Lock(); h.sink.fail = nil; h.sink.mu.Unlock() }()
		if h.client().Emit(&events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer}, MessageIDs: []string{"A"}, Type: types.ReceiptTypeRead}) {
			t.Error("handler reported success although the sink failed")
		}
	})
}

func inboundMessage(id string, msg *waE2E.Message, src types.MessageSource) *events.Message {
	return &events.Message{Info: types.MessageInfo{MessageSource: src, ID: id, PushName: "Ford", Timestamp: time.Date(2026, 11, 22, 9, 2, 0, 0, time.UTC)}, Message: msg}
}

func TestInboundMessages(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	pn := types.NewJID("4915112345678", types.DefaultUserServer)
	lid := types.NewJID("209876500002", types.HiddenUserServer)
	group := types.NewJID("120363000000000042", types.GroupServer)
	tests := []struct {
		name  string
		evt   *events.Message
		check func(t *testing.T, ev gateway.InboundEvent)
	}{
		{"text", inboundMessage("M1", &waE2E.Message{Conversation: proto.String("STOP")}, types.MessageSource{Chat: pn, Sender: pn}),
			func(t *testing.T, ev gateway.InboundEvent) {
				if ev.Content.Text != "STOP" || ev.From.Value != "+4915112345678" || ev.From.Kind != gateway.KindPhone || ev.FromName != "Ford" || ev.ChannelMessageID != "M1" || ev.Chat != "" {
					t.Errorf("%+v", ev)
				}
			}},
		{"reply (extended text)", inboundMessage("M2", &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("the invoice"), ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String("3EB0OURS")}}}, types.MessageSource{Chat: pn, Sender: pn}),
			func(t *testing.T, ev gateway.InboundEvent) {
				if ev.Content.Text != "the invoice" || ev.Content.ReplyTo != "3EB0OURS" {
					t.Errorf("%+v", ev.Content)
				}
			}},
		{"image caption", inboundMessage("M3", &waE2E.Message{ImageMessage: &waE2E.ImageMessage{Caption: proto.String("receipt"), Mimetype: proto.String("image/jpeg")}}, types.MessageSource{Chat: pn, Sender: pn}),
			func(t *testing.T, ev gateway.InboundEvent) {
				if ev.Content.Text != "receipt" || ev.Content.Media == nil || ev.Content.Media.MIMEType != "image/jpeg" || ev.Content.Extra[ExtraMessageType] != "image" {
					t.Errorf("%+v", ev.Content)
				}
			}},
		{"document", inboundMessage("M4", &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{FileName: proto.String("a.pdf"), Mimetype: proto.String("application/pdf")}}, types.MessageSource{Chat: pn, Sender: pn}),
			func(t *testing.T, ev gateway.InboundEvent) {
				if ev.Content.Media == nil || ev.Content.Media.Filename != "a.pdf" {
					t.Errorf("%+v", ev.Content)
				}
			}},
		{"LID sender with phone alt", inboundMessage("M5", &waE2E.Message{Conversation: proto.String("hi")}, types.MessageSource{Chat: lid, Sender: lid, SenderAlt: pn}),
			func(t *testing.T, ev gateway.InboundEvent) {
				if ev.From.Value != "+4915112345678" || ev.Content.Extra[ExtraSenderLID] != "209876500002@lid" {
					t.Errorf("%+v", ev)
				}
			}},
		{"group", inboundMessage("M6", &waE2E.Message{Conversation: proto.String("all")}, types.MessageSource{Chat: group, Sender: pn, IsGroup: true}),
			func(t *testing.T, ev gateway.InboundEvent) {
				if ev.Chat != "120363000000000042@g.us" || ev.From.Value != "+4915112345678" {
					t.Errorf("%+v", ev)
				}
			}},
		{"reaction", inboundMessage("M7", &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{Text: proto.String("❤"), Key: &waCommon.MessageKey{ID: proto.String("3EB0OURS")}}}, types.MessageSource{Chat: pn, Sender: pn}),
			func(t *testing.T, ev gateway.InboundEvent) {
				if ev.Content.Extra[ExtraReaction] != "❤" || ev.Content.ReplyTo != "3EB0OURS" {
					t.Errorf("%+v", ev.Content)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.sink.mu.Lock()
			h.sink.inbound = nil
			h.sink.mu.Unlock()
			if !h.client().Emit(tt.evt) {
				t.Fatal("handler reported failure")
			}
			h.sink.mu.Lock()
			got := h.sink.inbound
			h.sink.mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("sink got %d events", len(got))
			}
			if got[0].Channel != gateway.WhatsApp || got[0].Account != "sales" || got[0].Tenant != "acme" {
				t.Errorf("routing fields: %+v", got[0])
			}
			tt.check(t, got[0])
		})
	}
	t.Run("not for people", func(t *testing.T) {
		h.sink.mu.Lock()
		h.sink.inbound = nil
		h.sink.mu.Unlock()
		for _, evt := range []*events.Message{
			inboundMessage("P1", &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{}}, types.MessageSource{Chat: pn, Sender: pn}),
			inboundMessage("P2", &waE2E.Message{Conversation: proto.String("from my phone")}, types.MessageSource{Chat: pn, Sender: pn, IsFromMe: true}),
		} {
			if !h.client().Emit(evt) {
				t.Error("handler failed on a message it should skip")
			}
		}
		h.sink.mu.Lock()
		n := len(h.sink.inbound)
		h.sink.mu.Unlock()
		if n != 0 {
			t.Errorf("sink got %d events", n)
		}
	})
}

func TestInboundAckedOnlyAfterSink(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	pn := types.NewJID("4915112345678", types.DefaultUserServer)
	evt := inboundMessage("DUP1", &waE2E.Message{Conversation: proto.String("hello")}, types.MessageSource{Chat: pn, Sender: pn})

	// The handler does not return before the sink has taken the message.
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	h.sink.mu.Lock()
	h.sink.gate, h.sink.entered = gate, entered
	h.sink.mu.Unlock()
	result := make(chan bool, 1)
	go func() { result <- h.client().Emit(evt) }()
	<-entered
	select {
	case <-result:
		t.Fatal("the handler returned before the sink took the message")
	default:
	}
	close(gate)
	if !<-result {
		t.Fatal("handler reported failure")
	}

	// A failing sink makes the handler report failure: whatsmeow sends no ack, WhatsApp redelivers.
	h.sink.mu.Lock()
	h.sink.gate, h.sink.entered, h.sink.fail = nil, nil, errors.New("publish failed")
	h.sink.mu.Unlock()
	if h.client().Emit(evt) {
		t.Fatal("handler reported success although the publish failed")
	}

	// The redelivery carries the same channel message id, the bus's dedupe key.
	h.sink.mu.Lock()
	h.sink.fail = nil
	h.sink.mu.Unlock()
	if !h.client().Emit(evt) {
		t.Fatal("redelivery failed")
	}
	h.sink.mu.Lock()
	got := h.sink.inbound
	h.sink.mu.Unlock()
	if len(got) != 2 || got[0].ChannelMessageID != "DUP1" || got[1].ChannelMessageID != got[0].ChannelMessageID {
		t.Errorf("inbound ids: %+v", got)
	}
}

func TestLoggedOutKeepsQueuedMessages(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	type queued struct {
		id, chID string
	}
	var queue []queued
	for i := 0; i < 50; i++ {
		queue = append(queue, queued{id: fmt.Sprintf("msg_%02d", i), chID: h.a.NewChannelMessageID()})
	}
	// A minimal runner: send the head of the queue; a retryable error keeps it queued.
	sendHead := func() error {
		q := queue[0]
		_, err := h.a.Send(h.ctx, adapters.Outbound{MessageID: q.id, ChannelMessageID: q.chID, To: phone("+4915112345678"), Content: gateway.Content{Text: q.id}})
		if err == nil {
			queue = queue[1:]
		}
		return err
	}
	for i := 0; i < 20; i++ {
		if err := sendHead(); err != nil {
			t.Fatal(err)
		}
	}
	// While connected, WaitNotReady blocks.
	cctx, ccancel := context.WithCancel(h.ctx)
	ccancel()
	if err := h.a.WaitNotReady(cctx); err == nil {
		t.Fatal("WaitNotReady returned while connected")
	}
	first := h.client()
	first.Emit(&events.LoggedOut{Reason: events.ConnectFailureLoggedOut})
	h.waitState(StateLoggedOut)
	if err := h.a.WaitNotReady(h.ctx); err != nil { // the runner's cue to stop consuming
		t.Fatal(err)
	}
	if paused, reason, _ := h.a.Paused(); !paused || !strings.HasPrefix(reason, "logged_out") {
		t.Errorf("Paused = %v %q", paused, reason)
	}
	err := sendHead()
	se := adapters.AsSendError(err)
	if err == nil || se.Permanent || se.RetryAfter <= 0 || se.Code != "whatsapp_logged_out" {
		t.Fatalf("send while logged out: %v", err)
	}
	if len(queue) != 30 {
		t.Fatalf("queue = %d", len(queue))
	}
	// The dead device is destroyed.
	if dev, err := h.store.Device(h.ctx); err != nil || dev != nil {
		t.Fatalf("device after logout: %v %v", dev, err)
	}
	// WaitReady blocks while logged out.
	wctx, cancel := context.WithCancel(h.ctx)
	cancel()
	if err := h.a.WaitReady(wctx); err == nil {
		t.Fatal("WaitReady returned while logged out")
	}

	// Relink through the adapter: the QR is scanned, whatsmeow saves the device.
	h.mu.Lock()
	h.prepare = func(c *fakeClient) {
		c.qr = make(chan whatsmeow.QRChannelItem, 4)
		c.qr <- whatsmeow.QRChannelItem{Event: whatsmeow.QRChannelEventCode, Code: "2@qr", Timeout: time.Minute}
	}
	h.mu.Unlock()
	var evs []LinkEvent
	linkDone := make(chan error, 1)
	go func() {
		linkDone <- h.a.Link(h.ctx, LinkOptions{LoginWait: time.Millisecond}, func(e LinkEvent) {
			evs = append(evs, e)
			if e.Type == LinkQR {
				c := h.client()
				if err := c.pair(h.ctx, types.JID{User: "4915100000001", Device: 14, Server: types.DefaultUserServer}); err != nil {
					t.Error(err)
				}
				c.qr <- whatsmeow.QRChannelSuccess
			}
		})
	}()
	if err := <-linkDone; err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Type != LinkQR || evs[1].Type != LinkSuccess || evs[1].Phone != "+49******0001" {
		t.Errorf("link events: %+v", evs)
	}
	h.waitState(StateConnected)
	if err := h.a.WaitReady(h.ctx); err != nil {
		t.Fatal(err)
	}
	for len(queue) > 0 {
		if err := sendHead(); err != nil {
			t.Fatal(err)
		}
	}
	// Every message went out exactly once, across both devices, with its stored id.
	seen := map[types.MessageID]int{}
	h.mu.Lock()
	clients := append([]*fakeClient(nil), h.clients...)
	h.mu.Unlock()
	for _, c := range clients {
		for _, m := range c.sentMessages() {
			seen[m.ID]++
		}
	}
	if len(seen) != 50 {
		t.Errorf("%d distinct messages sent, want 50", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s sent %d times", id, n)
		}
	}
}

func TestPacing(t *testing.T) {
	const interval = 2 * time.Second
	const jitter = 500 * time.Millisecond
	h := newHarness(t, true, func(c *Config) {
		c.Pacing = Pacing{Interval: interval, Burst: 1, FirstContactInterval: -1, Jitter: jitter}
	})
	h.waitState(StateConnected)
	start := h.clock.Now()
	var outs []adapters.Outbound
	for i := 0; i < 100; i++ {
		outs = append(outs, adapters.Outbound{ChannelMessageID: fmt.Sprintf("3EB0P%03d", i), To: phone("+4915112345678"), Content: gateway.Content{Text: "x"}})
	}
	h.sendPaced(outs)
	sent := h.client().sentMessages()
	if len(sent) != 100 {
		t.Fatalf("sent %d", len(sent))
	}
	for i := 1; i < len(sent); i++ {
		gap := sent[i].At.Sub(sent[i-1].At)
		if gap < interval-jitter || gap > interval+jitter {
			t.Errorf("gap %d = %s, want %s ± %s", i, gap, interval, jitter)
		}
	}
	total := sent[99].At.Sub(start)
	if total < 99*interval || total > 99*interval+jitter {
		t.Errorf("100 sends took %s, want %s (+ up to %s jitter)", total, 99*interval, jitter)
	}
}

// sendPaced sends outs in order, moving the fake clock to the sender's slot each time it waits.
func (h *harness) sendPaced(outs []adapters.Outbound) {
	h.t.Helper()
	done := make(chan error, 1)
	go func() {
		for _, o := range outs {
			if _, err := h.a.Send(h.ctx, o); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				h.t.Fatal(err)
			}
			return
		case <-h.clock.Waiting():
			h.clock.AdvanceToNext()
		}
	}
}

func TestFirstContactPacing(t *testing.T) {
	h := newHarness(t, true, func(c *Config) {
		c.Pacing = Pacing{Interval: time.Second, Burst: 100, FirstContactInterval: time.Minute, Jitter: -1}
	})
	h.waitState(StateConnected)
	// +49…0001 wrote to the account; +49…0002 and …0003 never did.
	pn := types.NewJID("4915112340001", types.DefaultUserServer)
	if !h.client().Emit(inboundMessage("IN1", &waE2E.Message{Conversation: proto.String("hi")}, types.MessageSource{Chat: pn, Sender: pn})) {
		t.Fatal("inbound failed")
	}
	start := h.clock.Now()
	var outs []adapters.Outbound
	for _, to := range []string{"+4915112340001", "+4915112340002", "+4915112340001", "+4915112340003"} {
		outs = append(outs, adapters.Outbound{ChannelMessageID: "3EB0" + to[1:], To: phone(to), Content: gateway.Content{Text: "x"}})
	}
	h.sendPaced(outs)
	sent := h.client().sentMessages()
	offsets := make([]time.Duration, len(sent))
	for i, m := range sent {
		offsets[i] = m.At.Sub(start)
	}
	// Known, first contact, known (burst), then the second first contact a minute after the first.
	want := []time.Duration{0, 0, 0, time.Minute}
	for i := range want {
		if offsets[i] != want[i] {
			t.Errorf("send %d at +%s, want +%s", i, offsets[i], want[i])
		}
	}
}

// WhatsApp's reach-out time lock (error 463) pauses messages to numbers that never wrote, for a
// doubling period; replies to people who wrote keep going; a first contact that goes through
// resets the period.
func TestReachoutTimeLock(t *testing.T) {
	h := newHarness(t, true, func(c *Config) {
		c.Pacing = Pacing{Interval: time.Millisecond, Burst: 100, FirstContactInterval: -1, Jitter: -1, ReachoutLock: time.Hour}
	})
	h.waitState(StateConnected)
	known := types.NewJID("4915112340001", types.DefaultUserServer)
	if !h.client().Emit(inboundMessage("IN1", &waE2E.Message{Conversation: proto.String("hi")}, types.MessageSource{Chat: known, Sender: known})) {
		t.Fatal("inbound failed")
	}
	cli := h.client()
	setErr := func(err error) {
		cli.mu.Lock()
		cli.sendErr = err
		cli.mu.Unlock()
	}
	send := func(to string) error {
		_, err := h.a.Send(h.ctx, adapters.Outbound{ChannelMessageID: "3EB0" + to[1:], To: phone(to), Content: gateway.Content{Text: "x"}})
		return err
	}
	wantLocked := func(err error, wait time.Duration) {
		t.Helper()
		se := adapters.AsSendError(err)
		if se.Code != EReachoutLocked || se.Permanent || se.RetryAfter != wait {
			t.Fatalf("got %v (code %q, retry after %s), want %s after %s", err, se.Code, se.RetryAfter, EReachoutLocked, wait)
		}
	}

	setErr(fmt.Errorf("%w 463", whatsmeow.ErrServerReturnedError))
	wantLocked(send("+4915112340002"), time.Hour)
	setErr(nil)
	sentBefore := len(cli.sentMessages())
	wantLocked(send("+4915112340003"), time.Hour) // held back without asking WhatsApp
	if n := len(cli.sentMessages()); n != sentBefore {
		t.Fatalf("a first contact went out during the lock (%d sends, want %d)", n, sentBefore)
	}
	if err := send("+4915112340001"); err != nil {
		t.Fatalf("a reply during the lock: %v", err)
	}
	h.clock.Advance(time.Hour)
	setErr(fmt.Errorf("%w 463", whatsmeow.ErrServerReturnedError))
	wantLocked(send("+4915112340003"), 2*time.Hour) // still locked: twice as long
	h.clock.Advance(2 * time.Hour)
	setErr(nil)
	if err := send("+4915112340003"); err != nil {
		t.Fatalf("first contact after the lock: %v", err)
	}
	setErr(fmt.Errorf("%w 463", whatsmeow.ErrServerReturnedError))
	wantLocked(send("+4915112340004"), time.Hour) // a success in between: short again
}

func TestReconnectBackoffAndBan(t *testing.T) {
	h := newHarness(t, true, func(c *Config) {
		c.Backoff = Backoff{Min: time.Second, Max: 8 * time.Second, Factor: 2}
	})
	h.waitState(StateConnected)
	cli := h.client()
	cli.mu.Lock()
	cli.connectErr = errors.New("dial tcp: connection refused")
	cli.mu.Unlock()
	cli.Disconnect()
	before := h.clock.Now()
	cli.Emit(&events.Disconnected{})
	h.waitState(StateDisconnected)

	// Each failed attempt waits longer, up to Max; every wait is in [d/2, d].
	var waits []time.Duration
	last := before
	for i := 0; i < 6; i++ {
		<-h.clock.Waiting()
		h.clock.AdvanceToNext()
		h.waitState(StateConnecting)
		now := h.clock.Now()
		waits = append(waits, now.Sub(last))
		last = now
		h.waitState(StateDisconnected) // the attempt failed
	}
	// The connection had just come up, so even the first retry backs off.
	max := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, w := range waits {
		if w > max[i] || w < max[i]/2 {
			t.Errorf("wait before attempt %d = %s, want in [%s, %s]", i+1, w, max[i]/2, max[i])
		}
	}

	// The connection comes back; a ban stops reconnects until it expires.
	cli.mu.Lock()
	cli.connectErr = nil
	cli.mu.Unlock()
	<-h.clock.Waiting()
	h.clock.AdvanceToNext()
	h.waitState(StateConnected)
	banAt := h.clock.Now()
	cli.Emit(&events.TemporaryBan{Code: events.TempBanSentToTooManyPeople, Expire: time.Hour})
	s := h.waitState(StateBanned)
	if !s.BannedUntil.Equal(banAt.Add(time.Hour)) {
		t.Errorf("banned until %s", s.BannedUntil)
	}
	_, err := h.a.Send(h.ctx, adapters.Outbound{ChannelMessageID: "3EB0B", To: phone("+4915112345678"), Content: gateway.Content{Text: "x"}})
	if se := adapters.AsSendError(err); err == nil || se.Code != "whatsapp_banned" || se.RetryAfter != time.Hour {
		t.Errorf("send while banned: %v", err)
	}
	cli.mu.Lock()
	connects := cli.connects
	cli.mu.Unlock()
	<-h.clock.Waiting()
	h.clock.AdvanceToNext()
	h.waitState(StateConnected)
	if h.clock.Now().Sub(banAt) != time.Hour {
		t.Errorf("reconnected %s after the ban, want 1h", h.clock.Now().Sub(banAt))
	}
	cli.mu.Lock()
	if cli.connects != connects+1 {
		t.Errorf("%d connects during the ban", cli.connects-connects-1)
	}
	cli.mu.Unlock()

	// ClientOutdated: a clear state that names the fix, and no reconnect loop.
	cli.Emit(&events.ClientOutdated{})
	s = h.waitState(StateOutdated)
	if !strings.Contains(s.Detail, "upgrade") {
		t.Errorf("outdated detail %q", s.Detail)
	}
}

func TestMediaSend(t *testing.T) {
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 64)...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(png)
		case "/big.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(make([]byte, 2048))
		case "/a.exe":
			w.Header().Set("Content-Type", "application/x-msdownload")
			_, _ = w.Write([]byte("MZ"))
		case "/report.pdf":
			w.Header().Set("Content-Type", "application/pdf")
			_, _ = w.Write([]byte("%PDF-1.4"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	h := newHarness(t, true, func(c *Config) {
		c.Media = MediaLimits{MaxBytes: 1024, AllowPrivateAddresses: true}
		c.HTTPClient = srv.Client()
	})
	h.waitState(StateConnected)
	tests := []struct {
		name     string
		url      string
		uploaded *gateway.Media // an uploaded file instead of url, with its bytes in data
		data     []byte
		code     string // "" = sent
		kind     whatsmeow.MediaType
	}{
		{name: "image", url: srv.URL + "/a.png", kind: whatsmeow.MediaImage},
		{name: "document", url: srv.URL + "/report.pdf", kind: whatsmeow.MediaDocument},
		{name: "too large", url: srv.URL + "/big.png", code: EMediaTooLarge},
		{name: "type not allowed", url: srv.URL + "/a.exe", code: EMediaType},
		{name: "missing", url: srv.URL + "/nope", code: EMediaFetch},
		{name: "not http", url: "file:///etc/passwd", code: EMediaFetch},
		{name: "uploaded document", uploaded: &gateway.Media{ID: "med_1", MIMEType: "application/pdf", Filename: "report.pdf"}, data: []byte("%PDF-1.4"), kind: whatsmeow.MediaDocument},
		{name: "uploaded audio", uploaded: &gateway.Media{ID: "med_5", MIMEType: "audio/ogg"}, data: []byte("OggS"), kind: whatsmeow.MediaAudio},
		{name: "uploaded video", uploaded: &gateway.Media{ID: "med_6", MIMEType: "video/mp4"}, data: []byte("ftyp"), kind: whatsmeow.MediaVideo},
		{name: "uploaded image, type sniffed", uploaded: &gateway.Media{ID: "med_2"}, data: png, kind: whatsmeow.MediaImage},
		{name: "uploaded image too large", uploaded: &gateway.Media{ID: "med_3", MIMEType: "image/png"}, data: make([]byte, 2048), code: EMediaTooLarge},
		{name: "uploaded file gone", uploaded: &gateway.Media{ID: "med_4", MIMEType: "application/pdf"}, code: EMediaFetch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			media := &gateway.Media{URL: tt.url, Caption: "see"}
			if tt.uploaded != nil {
				media = tt.uploaded
				media.Caption = "see"
			}
			_, err := h.a.Send(h.ctx, adapters.Outbound{ChannelMessageID: "3EB0M", To: phone("+4915112345678"),
				Content: gateway.Content{Media: media}, MediaData: tt.data})
			if tt.code != "" {
				se := adapters.AsSendError(err)
				if err == nil || !se.Permanent || se.Code != tt.code {
					t.Fatalf("err = %v, want permanent %s", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := h.client()
			c.mu.Lock()
			up := c.uploads[len(c.uploads)-1]
			c.mu.Unlock()
			if up != tt.kind {
				t.Errorf("uploaded as %s", up)
			}
			sent := c.sentMessages()
			m := sent[len(sent)-1].Msg
			switch tt.kind {
			case whatsmeow.MediaImage:
				if m.GetImageMessage().GetCaption() != "see" || m.GetImageMessage().GetMimetype() != "image/png" || m.GetImageMessage().GetDirectPath() != "/v/x" {
					t.Errorf("image message %v", m)
				}
			case whatsmeow.MediaDocument:
				if m.GetDocumentMessage().GetFileName() != "report.pdf" {
					t.Errorf("document message %v", m)
				}
			case whatsmeow.MediaAudio:
				if m.GetAudioMessage().GetMimetype() != "audio/ogg" || m.GetAudioMessage().GetDirectPath() != "/v/x" {
					t.Errorf("audio message %v", m)
				}
			case whatsmeow.MediaVideo:
				if m.GetVideoMessage().GetCaption() != "see" || m.GetVideoMessage().GetMimetype() != "video/mp4" {
					t.Errorf("video message %v", m)
				}
			}
		})
	}
	t.Run("private address refused by default", func(t *testing.T) {
		h2 := newHarness(t, true)
		h2.waitState(StateConnected)
		_, err := h2.a.Send(h2.ctx, adapters.Outbound{ChannelMessageID: "3EB0M", To: phone("+4915112345678"),
			Content: gateway.Content{Media: &gateway.Media{URL: srv.URL + "/a.png"}}})
		if se := adapters.AsSendError(err); err == nil || !se.Permanent || se.Code != EMediaFetch {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestConnectionEvents(t *testing.T) {
	h := newHarness(t, true, func(c *Config) {
		c.Backoff = Backoff{Min: time.Second, Max: time.Minute}
	})
	h.waitState(StateConnected)
	cli := h.client()

	// One keep-alive timeout is tolerated.
	cli.Emit(&events.KeepAliveTimeout{ErrorCount: 1})
	if s := h.a.Status(); s.State != StateConnected {
		t.Fatalf("after one keep-alive timeout: %s", s.State)
	}
	// Three in a row: the connection is dropped and redialled at once.
	connects := func() int { cli.mu.Lock(); defer cli.mu.Unlock(); return cli.connects }
	before := connects()
	cli.Emit(&events.KeepAliveTimeout{ErrorCount: 3})
	if s := h.waitState(StateDisconnected); s.Detail != "keep-alive timed out" {
		t.Errorf("detail %q", s.Detail)
	}
	h.waitState(StateConnected)
	if connects() != before+1 {
		t.Errorf("%d reconnects", connects()-before)
	}

	// A connection that held for a while comes back at once after a drop.
	h.clock.Advance(2 * time.Minute)
	cli.Disconnect()
	cli.Emit(&events.Disconnected{})
	if s := h.waitState(StateDisconnected); s.Attempt != 0 {
		t.Errorf("attempt after a stable connection = %d", s.Attempt)
	}
	h.waitState(StateConnected)

	// Another connection took the device: wait the longest backoff before trying again.
	replacedAt := h.clock.Now()
	cli.Emit(&events.StreamReplaced{})
	h.waitState(StateReplaced)
	<-h.clock.Waiting()
	h.clock.AdvanceToNext()
	h.waitState(StateConnected)
	if d := h.clock.Now().Sub(replacedAt); d < 30*time.Second || d > time.Minute {
		t.Errorf("reconnected %s after being replaced, want the capped backoff (30s–1m)", d)
	}
}
