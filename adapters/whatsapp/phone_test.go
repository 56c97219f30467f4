package whatsapp

import (
	"context"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// TestLastSeenPhone: a message or receipt from the account's own phone (device 0) records when the
// phone was last active, shown by AccountState and stored (writes spaced out); another of our
// devices, or a contact, does not count.
func TestLastSeenPhone(t *testing.T) {
	h := newHarness(t, true)
	h.waitState(StateConnected)
	own := types.JID{User: "4915100000001", Server: types.DefaultUserServer}
	otherDevice := types.JID{User: "4915100000001", Device: 3, Server: types.DefaultUserServer}
	contact := types.NewJID("4915112345678", types.DefaultUserServer)
	fromMe := func(sender types.JID) *events.Message {
		return inboundMessage("OWN"+sender.String(), &waE2E.Message{Conversation: proto.String("sent on the phone")},
			types.MessageSource{Chat: contact, Sender: sender, IsFromMe: true})
	}

	h.client().Emit(fromMe(otherDevice))
	h.client().Emit(inboundMessage("IN1", &waE2E.Message{Conversation: proto.String("hi")}, types.MessageSource{Chat: contact, Sender: contact}))
	if seen := h.a.AccountState().LastSeenPhone; !seen.IsZero() {
		t.Fatalf("phone seen at %v from another device or a contact", seen)
	}

	first := h.clock.Now()
	h.client().Emit(fromMe(own))
	if seen := h.a.AccountState().LastSeenPhone; !seen.Equal(first) {
		t.Fatalf("phone seen at %v, want %v", seen, first)
	}
	stored := func() time.Time {
		s, _, err := h.store.LoadState(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return s.LastSeenPhone
	}
	if got := stored(); !got.Equal(first.Truncate(time.Millisecond)) {
		t.Fatalf("stored %v, want %v", got, first)
	}

	// A read receipt from the phone a minute later counts, but is not written yet.
	h.clock.Advance(time.Minute)
	h.client().Emit(&events.Receipt{MessageSource: types.MessageSource{Chat: contact, Sender: own, IsFromMe: true},
		MessageIDs: []string{"X"}, Timestamp: h.clock.Now(), Type: types.ReceiptTypeReadSelf})
	if seen := h.a.AccountState().LastSeenPhone; !seen.Equal(h.clock.Now()) {
		t.Fatalf("phone seen at %v after its receipt", seen)
	}
	if got := stored(); !got.Equal(first.Truncate(time.Millisecond)) {
		t.Fatalf("stored %v one minute later: writes should be spaced out", got)
	}
	h.clock.Advance(phoneSaveEvery)
	h.client().Emit(fromMe(own))
	if got := stored(); !got.Equal(h.clock.Now().Truncate(time.Millisecond)) {
		t.Fatalf("stored %v, want %v", got, h.clock.Now())
	}
}
