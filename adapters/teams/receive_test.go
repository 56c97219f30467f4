package teams

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

const (
	testChat    = "19:chat-1@thread.v2"
	testTeam    = "team-1"
	testChannel = "19:general@thread.tacv2"
)

func pollConfig(c *Config) {
	c.Chats = []string{testChat}
	c.Channels = []string{testTeam + "/" + testChannel}
}

var t0 = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

// TestPollFirstRunSkipsHistory: the first poll only sets the high-water mark.
func TestPollFirstRunSkipsHistory(t *testing.T) {
	e := newEnv(t)
	e.login(t)
	e.graph.Add(testChat, fakeMessage{ID: "1", From: "u1", HTML: "old", At: t0})
	a := e.adapter(t, pollConfig, nil)
	sink := newSink()
	if err := a.PollOnce(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.events()); n != 0 {
		t.Fatalf("first poll delivered %d messages of history", n)
	}
	e.graph.Add(testChat, fakeMessage{ID: "2", From: "u1", FromName: "Ann", HTML: "<p>new &amp; <b>shiny</b></p><p>second line</p>", At: t0.Add(time.Minute)})
	if err := a.PollOnce(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	evs := sink.events()
	if len(evs) != 1 {
		t.Fatalf("delivered %d, want 1", len(evs))
	}
	ev := evs[0]
	want := gateway.InboundEvent{
		Tenant: "acme", Channel: gateway.Teams, Account: "ops", ChannelMessageID: "teams:chat:" + testChat + "|2",
		From:     gateway.Address{Channel: gateway.Teams, Kind: gateway.KindTeamsUser, Value: "u1"},
		FromName: "Ann", Chat: "teams:chat:" + testChat,
		Content: gateway.Content{Text: "new & shiny\nsecond line"}, At: t0.Add(time.Minute),
	}
	if fmt.Sprint(ev) != fmt.Sprint(want) {
		t.Errorf("event =\n%+v\nwant\n%+v", ev, want)
	}
}

// TestPollRestartNeitherMissesNorRepeats: the sink fails in the middle of a batch; a new process
// over the same store delivers the rest, and nothing twice. Own messages, system messages and
// deleted ones are skipped; equal timestamps and paging are handled.
func TestPollRestartNeitherMissesNorRepeats(t *testing.T) {
	e := newEnv(t)
	e.login(t)
	ctx := context.Background()
	a := e.adapter(t, pollConfig, nil)
	if err := a.PollOnce(ctx, newSink()); err != nil { // sets the marks (empty chat and channel)
		t.Fatal(err)
	}
	var want []string
	for i := 0; i < 60; i++ { // more than one page
		id := fmt.Sprintf("c%02d", i)
		at := t0.Add(time.Duration(i/2) * time.Second) // pairs share a timestamp
		e.graph.Add(testChat, fakeMessage{ID: id, From: "user-7c1d2e9f-aad", HTML: "m " + id, At: at})
		want = append(want, id)
	}
	e.graph.Add(testChat, fakeMessage{ID: "own", From: serviceUserID, HTML: "from us", At: t0.Add(time.Hour)})
	e.graph.Add(testChat, fakeMessage{ID: "sys", Type: "systemEventMessage", HTML: "member added", At: t0.Add(time.Hour)})
	e.graph.Add(testTeam+"/"+testChannel, fakeMessage{ID: "ch1", From: "u2", HTML: "in channel", At: t0})
	want = append(want, "ch1")

	first := newSink()
	first.failAt = 24 // the bus goes away in the middle, between two messages of the same millisecond
	if err := a.PollOnce(ctx, first); err == nil {
		t.Fatal("poll with a failing sink returned nil")
	}
	// A new process over the same database.
	b := e.adapter(t, pollConfig, nil)
	second := newSink()
	if err := b.PollOnce(ctx, second); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range append(first.events(), second.events()...) {
		if ev.Chat == "teams:chat:"+testChat {
			got = append(got, graphID(ev.ChannelMessageID))
		}
	}
	for _, ev := range append(first.events(), second.events()...) {
		if ev.Chat == "teams:channel:"+testTeam+"/"+testChannel {
			got = append(got, graphID(ev.ChannelMessageID))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("delivered %v\nwant      %v", got, want)
	}
	if n := len(first.events()); n != 24 { // c00…c22 and the channel's message
		t.Errorf("first process delivered %d, want 24", n)
	}
	// Nothing new: nothing delivered.
	third := newSink()
	if err := e.adapter(t, pollConfig, nil).PollOnce(ctx, third); err != nil || len(third.events()) != 0 {
		t.Errorf("idle poll: %v, %d events", err, len(third.events()))
	}
	e.db.assertNotInFiles(t, testChat, "user-7c1d2e9f-aad")
}

// TestRunPollsWithBackoff: Run polls every PollInterval and backs off while Graph fails.
func TestRunPollsWithBackoff(t *testing.T) {
	e := newEnv(t)
	e.login(t)
	a := e.adapter(t, func(c *Config) {
		c.Chats = []string{testChat}
		c.PollInterval, c.MaxPollInterval = 10*time.Second, 30*time.Second
	}, nil)
	sink := newSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, sink) }()
	path := "/v1.0/chats/" + testChat + "/messages"

	e.graph.WaitFor(t, "GET", path) // first poll: sets the mark
	e.clock.BlockUntil(t, 1)
	e.graph.Add(testChat, fakeMessage{ID: "1", From: "u1", HTML: "hello", At: t0})
	e.graph.Fail("GET", path, 503, nil)
	e.clock.Advance(10 * time.Second)
	e.graph.WaitFor(t, "GET", path) // fails
	e.clock.BlockUntil(t, 1)
	e.clock.Advance(10 * time.Second) // backing off: 20s, not 10s
	if n := e.clock.pending(); n != 1 {
		t.Fatalf("the poll timer fired before the backoff ended (%d timers pending)", n)
	}
	e.clock.Advance(10 * time.Second)
	if ev := <-sink.got; graphID(ev.ChannelMessageID) != "1" {
		t.Errorf("got %+v", ev)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v", err)
	}
}

func TestHTMLToText(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain", "plain"},
		{"<p>Hello <at id=\"0\">Ann</at>,</p><p>see&nbsp;this &lt;tag&gt;</p>", "Hello Ann,\nsee\u00a0this <tag>"},
		{"a<br>b<br/>c", "a\nb\nc"},
		{"<div>x</div><script>alert(1)</script><style>p{}</style>y", "x\ny"},
		{"<img alt=\"smile\" src=\"x\">", "smile"},
	}
	for _, tc := range cases {
		if got := htmlToText(tc.in); got != tc.want {
			t.Errorf("htmlToText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSameGraphIDInTwoConversations: Graph message ids are timestamps, unique per conversation
// only. Two conversations writing in the same millisecond must reach the gateway as two messages
// (its dedupe is by channel message id), and either id still works as a reply_to.
func TestSameGraphIDInTwoConversations(t *testing.T) {
	e := newEnv(t)
	e.login(t)
	ctx := context.Background()
	a := e.adapter(t, pollConfig, nil)
	if err := a.PollOnce(ctx, newSink()); err != nil {
		t.Fatal(err)
	}
	e.graph.Add(testChat, fakeMessage{ID: "1700000000123", From: "u1", HTML: "in the chat", At: t0})
	e.graph.Add(testTeam+"/"+testChannel, fakeMessage{ID: "1700000000123", From: "u2", HTML: "in the channel", At: t0})
	sink := newSink()
	if err := a.PollOnce(ctx, sink); err != nil {
		t.Fatal(err)
	}
	evs := sink.events()
	if len(evs) != 2 || evs[0].ChannelMessageID == evs[1].ChannelMessageID {
		t.Fatalf("want two messages with distinct ids, got %+v", evs)
	}
	for _, ev := range evs {
		if graphID(ev.ChannelMessageID) != "1700000000123" {
			t.Errorf("%q does not carry the Graph id", ev.ChannelMessageID)
		}
	}
}

func TestGraphIDAcceptsBothForms(t *testing.T) {
	for in, want := range map[string]string{
		"1700000000123": "1700000000123",
		"teams:channel:team-1/19:general@thread.tacv2|1700000000123": "1700000000123",
	} {
		if got := graphID(in); got != want {
			t.Errorf("graphID(%q) = %q, want %q", in, got, want)
		}
	}
}
