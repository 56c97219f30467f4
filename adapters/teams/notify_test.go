package teams

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/adapters/teams/teamsfake"
)

type notifyEnv struct {
	*env
	hub     *Notifications
	srv     *httptest.Server
	sink    *recordingSink
	a       *Adapter
	subID   string
	state   string
	created teamsfake.Request
	cancel  context.CancelFunc
	done    chan error
}

// startNotified runs an adapter with a public URL until its subscription exists.
func startNotified(t *testing.T) *notifyEnv {
	e := newEnv(t)
	e.login(t)
	n := &notifyEnv{env: e, hub: NewNotifications(zerolog.New(e.logs)), sink: newSink(), done: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.Handle("POST "+NotificationPath, n.hub)
	mux.Handle("POST "+LifecyclePath, n.hub)
	n.srv = httptest.NewServer(mux)
	t.Cleanup(n.srv.Close)
	n.a = e.adapter(t, func(c *Config) {
		c.Chats = []string{testChat}
		c.PublicURL = "https://gw.example/"
	}, n.hub)
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- n.a.Run(ctx, n.sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-n.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	n.created = e.graph.WaitFor(t, "POST", "/v1.0/subscriptions")
	e.clock.BlockUntil(t, 1) // created, caught up, waiting for the renewal time
	subs, err := n.a.Subscriptions(context.Background())
	if err != nil || len(subs) != 1 {
		t.Fatalf("subscriptions = %v, %v", subs, err)
	}
	n.subID = subs[0].ID
	n.state, _ = n.created.Body["clientState"].(string)
	return n
}

func (n *notifyEnv) post(t *testing.T, path string, items ...map[string]any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"value": items})
	resp, err := http.Post(n.srv.URL+path, "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (n *notifyEnv) created1(msgID, state string) map[string]any {
	return map[string]any{
		"subscriptionId": n.subID, "clientState": state, "changeType": "created", "tenantId": testTenantID,
		"resource":     "chats('" + testChat + "')/messages('" + msgID + "')",
		"resourceData": map[string]any{"id": msgID, "@odata.type": "#Microsoft.Graph.chatMessage"},
	}
}

func TestSubscriptionCreated(t *testing.T) {
	n := startNotified(t)
	b := n.created.Body
	if b["changeType"] != "created" || b["resource"] != "/chats/"+testChat+"/messages" ||
		b["notificationUrl"] != "https://gw.example"+NotificationPath || b["lifecycleNotificationUrl"] != "https://gw.example"+LifecyclePath {
		t.Errorf("subscription body = %v", b)
	}
	if exp, _ := time.Parse(time.RFC3339Nano, b["expirationDateTime"].(string)); !exp.Equal(n.clock.Now().Add(55 * time.Minute)) {
		t.Errorf("expiration = %v, want now+55m", b["expirationDateTime"])
	}
	if len(n.state) < 32 {
		t.Errorf("clientState %q is too weak", n.state)
	}
	n.db.assertNotInFiles(t, n.state, testChat)
}

func TestValidationHandshake(t *testing.T) {
	n := startNotified(t)
	for _, path := range []string{NotificationPath, LifecyclePath} {
		resp, err := http.Post(n.srv.URL+path+"?validationToken=Validation%3A%20Testing%20client%20%3Cb%3E", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "Validation: Testing client <b>" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %q %v", path, resp.StatusCode, body, resp.Header)
		}
	}
}

func TestNotificationAuth(t *testing.T) {
	n := startNotified(t)
	n.graph.Add(testChat, fakeMessage{ID: "n1", From: "u1", FromName: "Ann", HTML: "<p>hi</p>", At: t0})
	cases := []struct {
		name   string
		item   map[string]any
		status int
	}{
		{"wrong clientState", n.created1("n1", n.state+"x"), http.StatusForbidden},
		{"empty clientState", n.created1("n1", ""), http.StatusForbidden},
		{"unknown subscription", func() map[string]any { m := n.created1("n1", n.state); m["subscriptionId"] = "sub-forged"; return m }(), http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if code, _ := n.post(t, NotificationPath, tc.item); code != tc.status {
				t.Errorf("status %d, want %d", code, tc.status)
			}
		})
	}
	// A batch with one bad item publishes nothing, not even the good one.
	if code, _ := n.post(t, NotificationPath, n.created1("n1", n.state), n.created1("n1", "bad")); code != http.StatusForbidden {
		t.Errorf("mixed batch: %d", code)
	}
	if len(n.sink.events()) != 0 || n.graph.Count("GET", "/v1.0/chats/"+testChat+"/messages/n1") != 0 {
		t.Fatal("a refused notification was acted on")
	}
	if code, body := n.post(t, NotificationPath); code != http.StatusAccepted {
		t.Errorf("empty batch: %d %s", code, body)
	}
	resp, err := http.Post(n.srv.URL+NotificationPath, "application/json", strings.NewReader("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad JSON: %d", resp.StatusCode)
	}
}

// TestNotificationDelivers: a valid notification fetches the message and gives one inbound
// event, 202 only after the sink took it; delivered twice, still one; a sink failure answers 503
// so Graph delivers again.
func TestNotificationDelivers(t *testing.T) {
	n := startNotified(t)
	n.graph.Add(testChat, fakeMessage{ID: "n1", From: "u1", FromName: "Ann", HTML: "<p>hi &amp; bye</p>", At: t0})
	n.graph.Add(testChat, fakeMessage{ID: "n2", From: "u2", HTML: "second", At: t0.Add(time.Second)})
	n.graph.Add(testChat, fakeMessage{ID: "own", From: serviceUserID, HTML: "ours", At: t0.Add(2 * time.Second)})

	n.sink.failAt = 1
	if code, _ := n.post(t, NotificationPath, n.created1("n1", n.state)); code != http.StatusServiceUnavailable {
		t.Fatalf("sink down: %d, want 503", code)
	}
	for i := 0; i < 2; i++ {
		if code, body := n.post(t, NotificationPath, n.created1("n1", n.state)); code != http.StatusAccepted {
			t.Fatalf("delivery %d: %d %s", i, code, body)
		}
	}
	if code, _ := n.post(t, NotificationPath, n.created1("n2", n.state), n.created1("own", n.state)); code != http.StatusAccepted {
		t.Fatalf("batch: %d", code)
	}
	evs := n.sink.events()
	if len(evs) != 2 || graphID(evs[0].ChannelMessageID) != "n1" || evs[0].Content.Text != "hi & bye" || evs[0].FromName != "Ann" ||
		evs[0].From.Value != "u1" || evs[0].Chat != "teams:chat:"+testChat || evs[1].ChannelMessageID != "teams:chat:"+testChat+"|n2" {
		t.Fatalf("events = %+v", evs)
	}
	if auth := n.graph.Requests(); !strings.HasPrefix(auth[len(auth)-1].Auth, "Bearer fake-access-token-") {
		t.Errorf("message fetched without our token")
	}
}

// TestSubscriptionRenewal: renewed RenewBefore ahead of expiry (fake clock); lifecycle events
// are acted on.
func TestSubscriptionRenewal(t *testing.T) {
	n := startNotified(t)
	patch := "/v1.0/subscriptions/" + n.subID

	n.clock.Advance(39 * time.Minute)
	if n.graph.Count("PATCH", patch) != 0 {
		t.Fatal("renewed too early")
	}
	n.clock.Advance(time.Minute) // 15 minutes before expiry
	r := n.graph.WaitFor(t, "PATCH", patch)
	if exp, _ := time.Parse(time.RFC3339Nano, r.Body["expirationDateTime"].(string)); !exp.Equal(n.clock.Now().Add(55 * time.Minute)) {
		t.Errorf("renewed to %v, want now+55m", r.Body["expirationDateTime"])
	}
	n.clock.BlockUntil(t, 1)
	subs, _ := n.a.Subscriptions(context.Background())
	if len(subs) != 1 || !subs[0].Expires.Equal(n.clock.Now().Add(55*time.Minute)) {
		t.Errorf("stored subscription = %+v", subs)
	}

	// reauthorizationRequired → renewed at once.
	life := func(event string) map[string]any {
		return map[string]any{"subscriptionId": n.subID, "clientState": n.state, "lifecycleEvent": event}
	}
	if code, _ := n.post(t, LifecyclePath, life("reauthorizationRequired")); code != http.StatusAccepted {
		t.Fatalf("lifecycle: %d", code)
	}
	n.graph.WaitFor(t, "PATCH", patch)

	// missed → a catch-up poll delivers what the notifications did not.
	n.graph.Add(testChat, fakeMessage{ID: "m1", From: "u1", HTML: "missed one", At: n.clock.Now()})
	if code, _ := n.post(t, LifecyclePath, life("missed")); code != http.StatusAccepted {
		t.Fatalf("lifecycle: %d", code)
	}
	if ev := <-n.sink.got; graphID(ev.ChannelMessageID) != "m1" {
		t.Errorf("catch-up delivered %+v", ev)
	}

	// subscriptionRemoved → a new subscription.
	if code, _ := n.post(t, LifecyclePath, life("subscriptionRemoved")); code != http.StatusAccepted {
		t.Fatalf("lifecycle: %d", code)
	}
	n.graph.WaitFor(t, "POST", "/v1.0/subscriptions")
	eventually(t, "a new subscription is stored", func() bool {
		subs, _ = n.a.Subscriptions(context.Background())
		return len(subs) == 1 && subs[0].ID != n.subID
	})
	// The old id is no longer accepted.
	if code, _ := n.post(t, NotificationPath, n.created1("m1", n.state)); code != http.StatusForbidden {
		t.Errorf("notification for the removed subscription: %d", code)
	}
}

// TestSubscriptionRenewalAfterRestart: a new process reuses the stored subscription and renews
// it when due; a subscription Graph forgot (404) is recreated.
func TestSubscriptionRenewalAfterRestart(t *testing.T) {
	n := startNotified(t)
	n.cancel()
	if err := <-n.done; err != nil {
		t.Fatal(err)
	}
	n.done <- nil // for the cleanup

	b := n.adapter(t, func(c *Config) { c.Chats = []string{testChat}; c.PublicURL = "https://gw.example" }, n.hub)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, newSink()) }()
	defer func() { cancel(); <-done }()
	n.graph.DropSubscription(n.subID) // Graph lost it
	// Whether the new process reads the clock before or after this, the stored subscription is
	// due: renewed (404), then recreated.
	n.clock.Advance(40 * time.Minute)
	n.graph.WaitFor(t, "PATCH", "/v1.0/subscriptions/"+n.subID)
	n.graph.WaitFor(t, "POST", "/v1.0/subscriptions")
	if got := n.graph.Count("POST", "/v1.0/subscriptions"); got != 2 {
		t.Fatalf("%d subscriptions created, want 2 (the first, and the one replacing the lost one)", got)
	}
}

// eventually polls cond until it holds: only for state that has no event to wait on.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestParseResource(t *testing.T) {
	cases := []struct {
		in                  string
		src                 source
		id, parent, wantErr string
	}{
		{"chats('19:abc@thread.v2')/messages('1616')", source{chat: "19:abc@thread.v2"}, "1616", "", ""},
		{"/chats('19%3Aabc%40thread.v2')/messages('1616')", source{chat: "19:abc@thread.v2"}, "1616", "", ""},
		{"teams('t1')/channels('19:c@thread.tacv2')/messages('1')", source{team: "t1", channel: "19:c@thread.tacv2"}, "1", "", ""},
		{"teams('t1')/channels('c')/messages('1')/replies('2')", source{team: "t1", channel: "c"}, "2", "1", ""},
		{"users('x')/messages('1')", source{}, "", "", "unexpected"},
		{"chats('x'", source{}, "", "", "unexpected"},
	}
	for _, tc := range cases {
		src, id, parent, err := parseResource(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err = %v", tc.in, err)
			}
			continue
		}
		if err != nil || src != tc.src || id != tc.id || parent != tc.parent {
			t.Errorf("%q = %+v %q %q %v", tc.in, src, id, parent, err)
		}
	}
}
