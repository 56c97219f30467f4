package automation

import (
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// TestChatTrigger: an inbound trigger with chat matches messages in that chat (a group, a Teams
// channel) only, and the matching account too.
func TestChatTrigger(t *testing.T) {
	c := parse(t, `      - {name: r, when: {inbound: {channel: teams, account: ops, chat: "19:abc@thread.v2"}}, do: [{reply: {text: ok}}]}
`)
	e := New(Config{}, c)
	in := func(account, chat string) gateway.InboundEvent {
		ev := event(gateway.Teams, account, "teams:user:0f3c", "x")
		ev.Chat = chat
		return ev
	}
	for _, tt := range []struct {
		name string
		ev   gateway.InboundEvent
		want bool
	}{
		{"that chat", in("ops", "19:abc@thread.v2"), true},
		{"another chat", in("ops", "19:xyz@thread.v2"), false},
		{"no chat", in("ops", ""), false},
		{"another account", in("sales", "19:abc@thread.v2"), false},
	} {
		if got := len(e.Plan(tt.ev, 0)) == 1; got != tt.want {
			t.Errorf("%s: matched %v, want %v", tt.name, got, tt.want)
		}
	}
}
