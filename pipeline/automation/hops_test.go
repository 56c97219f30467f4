package automation

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// TestHopsFromStoredMessages: an answer inherits the hop count of the automation message it
// answers, read from the stored message (so a restarted engine knows it too): the next message in
// that conversation within the window, or a reply to it at any time. The answer to an
// automation's reply, or a message after the window, starts afresh.
func TestHopsFromStoredMessages(t *testing.T) {
	const rules = `
      - name: wa-to-teams
        when: {inbound: {channel: whatsapp, text: {contains_any: [invoice]}}}
        do: [{forward: {to: "teams:chat:19:x@thread.v2"}}]
      - name: teams-to-wa
        when: {inbound: {channel: teams, text: {contains_any: [invoice]}}}
        do: [{forward: {to: "+4915112345678"}}]
      - name: hello
        when: {inbound: {channel: whatsapp, text: {keyword: hello}}}
        do: [{reply: {text: "hello yourself"}}]
`
	in := &fakeIntake{byKey: map[string]*gateway.Message{}, optedOut: map[string]bool{}}
	st := newFakeStore(in)
	engine := func() *Engine { return New(Config{Intake: in, Store: st, Log: zerolog.Nop()}, parse(t, rules)) }
	handle := func(e *Engine, ev gateway.InboundEvent) *gateway.Message {
		t.Helper()
		n := len(in.accepted)
		if err := e.HandleInbound(t.Context(), inbound(ev)); err != nil {
			t.Fatal(err)
		}
		if len(in.accepted) != n+1 {
			t.Fatalf("%d messages created, want 1", len(in.accepted)-n)
		}
		return in.accepted[n]
	}
	teamsEcho := func(text string, at time.Time) gateway.InboundEvent {
		ev := event(gateway.Teams, "ops", "teams:user:11111111-2222-3333-4444-555555555555", text)
		ev.Chat, ev.At = "teams:chat:19:x@thread.v2", at
		return ev
	}

	fwd := handle(engine(), event(gateway.WhatsApp, "sales", "+4915112345678", "Invoice 42"))
	if fwd.Hops != 1 || fwd.Metadata[MetaHops] != "1" || fwd.Metadata[MetaCause] == "" || fwd.Metadata[MetaAction] != "forward" {
		t.Fatalf("forward hops %d metadata %v", fwd.Hops, fwd.Metadata)
	}
	// A restarted engine: the hop count comes from the stored forward.
	back := handle(engine(), teamsEcho("invoice 42 seen", eventTime.Add(30*time.Second)))
	if back.Hops != 2 {
		t.Fatalf("echo in the conversation: hops %d, want 2", back.Hops)
	}
	// Much later in the same chat: a person writing, not an echo.
	late := handle(engine(), teamsEcho("invoice 43", eventTime.Add(time.Hour)))
	if late.Hops != 1 {
		t.Fatalf("after the window: hops %d, want 1", late.Hops)
	}
	// A reply to the forward itself (quoting it) is linked at any time.
	quoted := teamsEcho("about that invoice", eventTime.Add(2*time.Hour))
	quoted.Content.ReplyTo = "c-" + fwd.ID
	if m := handle(engine(), quoted); m.Hops != 2 {
		t.Fatalf("reply to the forward: hops %d, want 2", m.Hops)
	}
	// The answer to an automation's reply is a conversation: it starts afresh.
	wa := event(gateway.WhatsApp, "sales", "+4915199999999", "hello")
	if r := handle(engine(), wa); r.Hops != 1 || r.Metadata[MetaAction] != "reply" {
		t.Fatalf("reply %+v", r)
	}
	wa2 := event(gateway.WhatsApp, "sales", "+4915199999999", "invoice 44")
	wa2.At = eventTime.Add(10 * time.Second)
	if m := handle(engine(), wa2); m.Hops != 1 {
		t.Fatalf("after a reply: hops %d, want 1", m.Hops)
	}
}
