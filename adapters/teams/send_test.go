package teams

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
)

func addr(t *testing.T, s string) gateway.Address {
	t.Helper()
	a, err := gateway.ParseAddress(gateway.Teams, s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSend runs the real Graph SDK against the fake Graph: each address kind posts to its URL
// with our bearer token and an escaped HTML body, and errors are classified for the runner.
func TestSend(t *testing.T) {
	const escaped = "&lt;b&gt;Invoice&lt;/b&gt; &amp; &#34;total&#34;<br>line 2"
	cases := []struct {
		name     string
		to       string
		replyTo  string
		fail     int               // status the fake answers first on wantPath
		headers  map[string]string // with it
		wantPath string
		wantCode string        // SendError code when failing
		wantPerm bool          // permanent failure
		wantWait time.Duration // RetryAfter
	}{
		{name: "chat", to: "teams:chat:19:abc@thread.v2", wantPath: "/v1.0/chats/19:abc@thread.v2/messages"},
		{name: "channel", to: "teams:channel:team-1/19:general@thread.tacv2", wantPath: "/v1.0/teams/team-1/channels/19:general@thread.tacv2/messages"},
		{name: "reply", to: "teams:channel:team-1/19:general@thread.tacv2", replyTo: "1616990032035", wantPath: "/v1.0/teams/team-1/channels/19:general@thread.tacv2/messages/1616990032035/replies"},
		{name: "429 Retry-After 1", to: "teams:chat:19:abc@thread.v2", fail: 429, headers: map[string]string{"Retry-After": "1"},
			wantPath: "/v1.0/chats/19:abc@thread.v2/messages", wantCode: gateway.EChannelError, wantWait: time.Second},
		{name: "503 Retry-After 7", to: "teams:chat:19:abc@thread.v2", fail: 503, headers: map[string]string{"Retry-After": "7"},
			wantPath: "/v1.0/chats/19:abc@thread.v2/messages", wantCode: gateway.EChannelError, wantWait: 7 * time.Second},
		{name: "403", to: "teams:chat:19:abc@thread.v2", fail: 403, wantPath: "/v1.0/chats/19:abc@thread.v2/messages", wantCode: ECodeForbidden, wantPerm: true},
		{name: "404", to: "teams:channel:team-1/19:gone@thread.tacv2", fail: 404, wantPath: "/v1.0/teams/team-1/channels/19:gone@thread.tacv2/messages", wantCode: ECodeNotFound, wantPerm: true},
		{name: "500", to: "teams:chat:19:abc@thread.v2", fail: 500, wantPath: "/v1.0/chats/19:abc@thread.v2/messages", wantCode: gateway.EChannelError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.login(t)
			a := e.adapter(t, func(c *Config) { c.SendInterval, c.Clock = time.Nanosecond, WallClock{} }, nil)
			if tc.fail != 0 {
				e.graph.Fail("POST", tc.wantPath, tc.fail, tc.headers)
			}
			m := adapters.Outbound{MessageID: "msg_1", To: addr(t, tc.to), Attempt: 1,
				Content: gateway.Content{Text: "<b>Invoice</b> & \"total\"\nline 2", ReplyTo: tc.replyTo}}
			id, err := a.Send(context.Background(), m)
			reqs := e.graph.Requests()
			if len(reqs) != 1 || reqs[0].Method != "POST" || reqs[0].Path != tc.wantPath {
				t.Fatalf("graph saw %+v, want one POST %s (the SDK must not retry by itself)", reqs, tc.wantPath)
			}
			if !strings.HasPrefix(reqs[0].Auth, "Bearer fake-access-token-") {
				t.Errorf("authorization = %q", reqs[0].Auth)
			}
			body, _ := reqs[0].Body["body"].(map[string]any)
			if body["contentType"] != "html" || body["content"] != escaped {
				t.Errorf("body = %v, want html %q", body, escaped)
			}
			if tc.fail == 0 {
				if err != nil || id == "" {
					t.Fatalf("send = %q, %v", id, err)
				}
				return
			}
			if err == nil {
				t.Fatal("send succeeded against a failing Graph")
			}
			se := adapters.AsSendError(err)
			if se.Code != tc.wantCode || se.Permanent != tc.wantPerm || se.RetryAfter != tc.wantWait {
				t.Errorf("error = code %q permanent %v retry after %v; want %q %v %v", se.Code, se.Permanent, se.RetryAfter, tc.wantCode, tc.wantPerm, tc.wantWait)
			}
		})
	}
}

// TestSendRetryAfterDeliversOnce: a 429 is retried by the runner after Retry-After and the
// message lands once.
func TestSendRetryAfterDeliversOnce(t *testing.T) {
	e := newEnv(t)
	e.login(t)
	a := e.adapter(t, nil, nil)
	path := "/v1.0/chats/19:abc@thread.v2/messages"
	e.graph.Fail("POST", path, 429, map[string]string{"Retry-After": "1"})
	m := adapters.Outbound{MessageID: "msg_1", To: addr(t, "teams:chat:19:abc@thread.v2"), Content: gateway.Content{Text: "hello"}, Attempt: 1}
	_, err := a.Send(context.Background(), m)
	se := adapters.AsSendError(err)
	if se.Permanent || se.RetryAfter != time.Second {
		t.Fatalf("first attempt: %+v", se)
	}
	// The runner waits Retry-After, then tries again; the pacer holds the account that long too.
	done := make(chan error, 1)
	go func() {
		m.Attempt = 2
		_, err := a.Send(context.Background(), m)
		done <- err
	}()
	e.clock.BlockUntil(t, 1)
	e.clock.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatalf("second attempt: %v", err)
	}
	n := len(e.graph.Messages("19:abc@thread.v2"))
	if n != 1 || e.graph.Count("POST", path) != 2 {
		t.Errorf("delivered %d messages in %d posts, want 1 in 2", n, e.graph.Count("POST", path))
	}
}

// TestSendToUser: the 1:1 chat is created once (with both members bound), then reused, also
// by a new process.
func TestSendToUser(t *testing.T) {
	e := newEnv(t)
	e.login(t)
	ctx := context.Background()
	m := adapters.Outbound{MessageID: "msg_1", To: addr(t, "teams:user:user-42"), Content: gateway.Content{Text: "hi"}, Attempt: 1}
	a := e.adapter(t, func(c *Config) { c.SendInterval, c.Clock = time.Nanosecond, WallClock{} }, nil)
	for i := 0; i < 2; i++ {
		if _, err := a.Send(ctx, m); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	b := e.adapter(t, func(c *Config) { c.SendInterval, c.Clock = time.Nanosecond, WallClock{} }, nil) // restart
	if _, err := b.Send(ctx, m); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	if n := e.graph.Count("POST", "/v1.0/chats"); n != 1 {
		t.Errorf("POST /chats %d times, want once", n)
	}
	chat := "19:user-42_" + serviceUserID + "@unq.gbl.spaces"
	if n := e.graph.Count("POST", "/v1.0/chats/"+chat+"/messages"); n != 3 {
		t.Errorf("posted %d messages to the 1:1 chat, want 3", n)
	}
	for _, r := range e.graph.Requests() {
		if r.Path == "/v1.0/chats" {
			members, _ := r.Body["members"].([]any)
			if len(members) != 2 || r.Body["chatType"] != "oneOnOne" {
				t.Errorf("create chat body = %v", r.Body)
			}
		}
	}
	e.db.assertNotInFiles(t, "user-42")

	// Erasure of the user: the next send creates (finds) the chat again.
	if err := b.ForgetUser(ctx, "user-42"); err != nil {
		t.Fatal(err)
	}
	c := e.adapter(t, func(c *Config) { c.SendInterval, c.Clock = time.Nanosecond, WallClock{} }, nil)
	if _, err := c.Send(ctx, m); err != nil {
		t.Fatal(err)
	}
	if n := e.graph.Count("POST", "/v1.0/chats"); n != 2 {
		t.Errorf("after ForgetUser: POST /chats %d times, want 2", n)
	}
}

func TestSendRejectsBadContent(t *testing.T) {
	e := newEnv(t)
	a := e.adapter(t, nil, nil)
	cases := []struct {
		name    string
		content gateway.Content
		code    string
	}{
		{"empty", gateway.Content{}, gateway.EMissingField},
		{"template", gateway.Content{Template: &gateway.Template{Name: "reminder"}}, gateway.EInvalidField},
		{"media scheme", gateway.Content{Media: &gateway.Media{URL: "javascript:alert(1)"}}, gateway.EInvalidField},
		{"our id as reply_to", gateway.Content{Text: "x", ReplyTo: "msg_01abc"}, gateway.EInvalidField},
		{"bad card", gateway.Content{Extra: map[string]string{ExtraAdaptiveCard: "[1]"}}, gateway.EInvalidField},
		{"bad mentions", gateway.Content{Text: "x", Extra: map[string]string{ExtraMentions: `{"id":"a"}`}}, gateway.EInvalidField},
		{"mention without name", gateway.Content{Text: "x", Extra: map[string]string{ExtraMentions: `[{"id":"a"}]`}}, gateway.EInvalidField},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Send(context.Background(), adapters.Outbound{To: addr(t, "teams:channel:t/c"), Content: tc.content})
			se := adapters.AsSendError(err)
			if !se.Permanent || se.Code != tc.code {
				t.Fatalf("error = %+v, want permanent %s", se, tc.code)
			}
			if len(e.graph.Requests()) != 0 {
				t.Fatal("a bad message reached Graph")
			}
		})
	}
}

// TestSendMentionsAndCard: mentions become <at> tags with mention entities, an Adaptive Card an
// attachment referenced from the body.
func TestSendMentionsAndCard(t *testing.T) {
	e := newEnv(t)
	e.login(t)
	a := e.adapter(t, nil, nil)
	card := `{"type":"AdaptiveCard","version":"1.4","body":[{"type":"TextBlock","text":"Approve?"}]}`
	_, err := a.Send(context.Background(), adapters.Outbound{To: addr(t, "teams:channel:team-1/19:c@thread.tacv2"), Content: gateway.Content{
		Text:  "please look",
		Extra: map[string]string{ExtraMentions: `[{"id":"aad-ann","name":"Ann <&> Co"}]`, ExtraAdaptiveCard: card},
	}})
	if err != nil {
		t.Fatal(err)
	}
	b := e.graph.Requests()[0].Body
	atts, _ := b["attachments"].([]any)
	if len(atts) != 1 {
		t.Fatalf("attachments = %v", b["attachments"])
	}
	att := atts[0].(map[string]any)
	id, _ := att["id"].(string)
	if att["contentType"] != "application/vnd.microsoft.card.adaptive" || att["content"] != card || len(id) != 36 {
		t.Errorf("attachment = %v", att)
	}
	want := `<at id="0">Ann &lt;&amp;&gt; Co</at> please look<attachment id="` + id + `"></attachment>`
	if body := b["body"].(map[string]any); body["content"] != want {
		t.Errorf("content = %q, want %q", body["content"], want)
	}
	ms, _ := b["mentions"].([]any)
	if len(ms) != 1 {
		t.Fatalf("mentions = %v", b["mentions"])
	}
	m := ms[0].(map[string]any)
	user := m["mentioned"].(map[string]any)["user"].(map[string]any)
	if m["id"] != float64(0) || m["mentionText"] != "Ann <&> Co" || user["id"] != "aad-ann" || user["userIdentityType"] != "aadUser" {
		t.Errorf("mention = %v", m)
	}
}

func TestRenderBody(t *testing.T) {
	cases := []struct {
		in   gateway.Content
		want string
	}{
		{gateway.Content{Text: "a < b\r\nc"}, "a &lt; b<br>c"},
		{gateway.Content{Text: "see", Media: &gateway.Media{URL: "https://x.example/a?b=1&c=<2>", Caption: "the <file>"}},
			`see<br><a href="https://x.example/a?b=1&amp;c=&lt;2&gt;">the &lt;file&gt;</a>`},
	}
	for _, tc := range cases {
		m, err := renderBody(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := *m.GetBody().GetContent(); got != tc.want {
			t.Errorf("renderBody(%+v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestPacer: posts of one account are spaced by the interval, and a 429 holds them all.
func TestPacer(t *testing.T) {
	c := newFakeClock()
	p := &pacer{clock: c, interval: 250 * time.Millisecond}
	ctx := context.Background()
	if err := p.wait(ctx); err != nil { // the first goes at once
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.wait(ctx) }()
	c.BlockUntil(t, 1)
	select {
	case <-done:
		t.Fatal("second post did not wait for the interval")
	default:
	}
	c.Advance(250 * time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p.hold(5 * time.Second)
	go func() { done <- p.wait(ctx) }()
	c.BlockUntil(t, 1)
	c.Advance(4 * time.Second)
	select {
	case <-done:
		t.Fatal("post went before the Retry-After hold ended")
	default:
	}
	c.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	p.hold(time.Hour)
	go func() { done <- p.wait(cctx) }()
	c.BlockUntil(t, 1)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a cancelled wait returned nil")
	}
}
