// Package e2e_test runs the Teams adapter end to end on the gateway's real parts: the HTTP API,
// the SQLite store with the real keyring, the embedded NATS JetStream bus, the pipeline and the
// adapters runner — with Microsoft's side faked at the wire (teamsfake). It lives apart from the
// adapter's unit tests so that they do not depend on the rest of the gateway compiling.
package e2e_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	_ "modernc.org/sqlite"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/teams"
	"github.com/switchboard-gateway/switchboard/adapters/teams/teamsfake"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/api"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/credstore"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	sqlstore "github.com/switchboard-gateway/switchboard/store/sql"
)

type directory struct{}

func (directory) HasAccount(tenant string, ch gateway.Channel, account string) bool {
	return tenant == "acme" && ch == gateway.Teams && account == "ops"
}

func (directory) DefaultAccount(tenant string, ch gateway.Channel) (string, bool) {
	return "ops", tenant == "acme" && ch == gateway.Teams
}

type system struct {
	dir     string
	auth    *teamsfake.Authority
	graph   *teamsfake.Graph
	api     *httptest.Server
	secret  string
	inbound chan pipeline.Inbound

	mu      sync.Mutex
	status  map[string]gateway.Status
	changed chan struct{}
}

func start(t *testing.T) *system {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	log := zerolog.Nop()
	s := &system{dir: dir, auth: teamsfake.NewAuthority(t), inbound: make(chan pipeline.Inbound, 10),
		status: map[string]gateway.Status{}, changed: make(chan struct{}, 100)}
	s.graph = teamsfake.NewGraph(t, s.auth)

	dbPath := filepath.Join(dir, "switchboard.db")
	masters := []crypt.MasterKey{{ID: "mk_test", Key: bytes.Repeat([]byte{7}, crypt.KeySize)}}
	db, kr, err := sqlstore.OpenEncrypted(ctx, sqlstore.Config{Driver: sqlstore.SQLite, DSN: dbPath}, masters, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	s.secret = api.NewAPIKeySecret()
	if _, err := db.CreateAPIKey(ctx, "acme", "e2e", s.secret); err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(ctx, bus.Config{Embedded: &bus.Embedded{StoreDir: filepath.Join(dir, "nats"), StoreKey: string(kr.DeriveKey("e2e-jetstream"))}}, log)
	if err != nil {
		t.Fatal(err)
	}

	// The credential store on its own connection to the same file (store/sql does not share its
	// *sql.DB).
	cdb, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := credstore.New(cdb, credstore.SQLite, credstore.Keyring(kr))
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := teams.Config{
		Tenant: "acme", Account: "ops", TenantID: teamsfake.TenantID, ClientID: teamsfake.ClientID,
		AuthorityURL: s.auth.URL(), GraphURL: s.graph.URL(), HTTPClient: s.auth.Client(),
		Chats: []string{"19:inbox@thread.v2"}, PollInterval: 20 * time.Millisecond, SendInterval: time.Millisecond,
		Log: log,
	}
	// `switchboard teams login`, once.
	loginAuth, err := teams.NewAuth(cfg, creds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loginAuth.Login(ctx, func(teams.DeviceCode) {}); err != nil {
		t.Fatal(err)
	}
	adapter, err := teams.New(cfg, creds, nil)
	if err != nil {
		t.Fatal(err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	resumer, err := pipeline.NewResumer(pipeline.ResumerConfig{Store: db, Bus: b, Interval: time.Hour, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	intake, err := pipeline.NewIntake(pipeline.IntakeConfig{Store: db, Bus: b, Retry: resumer.Retry, Indexer: kr, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	router, err := pipeline.NewRouter(pipeline.RouterConfig{Store: db, Bus: b, Stages: []pipeline.Stage{pipeline.RouteStage{}}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := pipeline.NewRecorder(pipeline.RecorderConfig{Store: db, Bus: b, Log: log, OnApplied: s.onApplied})
	if err != nil {
		t.Fatal(err)
	}
	inrec, err := pipeline.NewInboundRecorder(pipeline.InboundRecorderConfig{
		Store: db, Bus: b, Sealer: kr, Log: log, Concurrency: 1,
		Handlers: []pipeline.InboundHandler{pipeline.InboundHandlerFunc(func(_ context.Context, in pipeline.Inbound) error {
			s.inbound <- in
			return nil
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	runner, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: "acme", Channel: gateway.Teams, Account: "ops", Adapter: adapter,
		Store: db, Bus: b, Sealer: kr, BackOff: []time.Duration{10 * time.Millisecond}, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range []func(context.Context) error{router.Run, rec.Run, inrec.Run, runner.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx); err != nil {
				t.Errorf("component stopped: %v", err)
			}
		}()
	}
	s.api = httptest.NewServer(api.New(api.Config{Log: log}, api.Deps{Intake: intake, Messages: db, Keys: db, Directory: directory{}}))
	t.Cleanup(func() {
		s.api.Close()
		cancel()
		wg.Wait()
		b.Close(context.Background())
		cdb.Close()
		db.Close()
	})
	return s
}

func (s *system) onApplied(_ context.Context, as []store.Applied) {
	s.mu.Lock()
	for _, a := range as {
		if a.Advanced {
			s.status[a.Event.MessageID] = a.Event.Status
		}
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// waitStatus waits for the recorder to move id to want.
func (s *system) waitStatus(t *testing.T, id string, want gateway.Status) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		s.mu.Lock()
		got := s.status[id]
		s.mu.Unlock()
		if got == want {
			return
		}
		select {
		case <-s.changed:
		case <-timeout:
			t.Fatalf("message %s is %q, want %q", id, got, want)
		}
	}
}

func (s *system) send(t *testing.T, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", s.api.URL+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusAccepted || out.ID == "" {
		t.Fatalf("POST /v1/messages: %d %+v %v", resp.StatusCode, out, err)
	}
	return out.ID
}

// TestSendToChatEndToEnd: POST /v1/messages to teams:chat:X → the fake Graph received
// POST /v1.0/chats/X/messages with a bearer token and the escaped body → status sent with the
// Graph message id. A 429 with Retry-After: 1 is retried and delivered once.
func TestSendToChatEndToEnd(t *testing.T) {
	s := start(t)
	id := s.send(t, `{"channel":"teams","to":"teams:chat:19:abc@thread.v2","text":"<script>x</script> Invoice & co"}`)
	s.waitStatus(t, id, gateway.StatusSent)

	var posts []teamsfake.Request
	for _, r := range s.graph.Requests() {
		if r.Method == "POST" && r.Path == "/v1.0/chats/19:abc@thread.v2/messages" {
			posts = append(posts, r)
		}
	}
	if len(posts) != 1 {
		t.Fatalf("graph got %d posts, want 1", len(posts))
	}
	if !strings.HasPrefix(posts[0].Auth, "Bearer ") || !s.auth.Valid(strings.TrimPrefix(posts[0].Auth, "Bearer ")) {
		t.Errorf("authorization = %q", posts[0].Auth)
	}
	body, _ := posts[0].Body["body"].(map[string]any)
	if body["contentType"] != "html" || body["content"] != "&lt;script&gt;x&lt;/script&gt; Invoice &amp; co" {
		t.Errorf("body = %v", body)
	}
	got := s.getMessage(t, id)
	msgs := s.graph.Messages("19:abc@thread.v2")
	if got.ChannelMessageID == "" || len(msgs) != 1 || got.ChannelMessageID != msgs[0].ID {
		t.Errorf("channel message id = %q, graph holds %+v", got.ChannelMessageID, msgs)
	}

	// Throttled once: retried after Retry-After, delivered once.
	s.graph.Fail("POST", "/v1.0/chats/19:abc@thread.v2/messages", 429, map[string]string{"Retry-After": "1"})
	id2 := s.send(t, `{"channel":"teams","to":"teams:chat:19:abc@thread.v2","text":"second"}`)
	s.waitStatus(t, id2, gateway.StatusSent)
	n := 0
	for _, m := range s.graph.Messages("19:abc@thread.v2") {
		if m.HTML == "second" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the throttled message landed %d times, want once", n)
	}

	// A 403 fails the message with teams_forbidden.
	s.graph.Fail("POST", "/v1.0/chats/19:locked@thread.v2/messages", 403, nil)
	id3 := s.send(t, `{"channel":"teams","to":"teams:chat:19:locked@thread.v2","text":"no entry"}`)
	s.waitStatus(t, id3, gateway.StatusFailed)
	if m := s.getMessage(t, id3); m.Error == nil || m.Error.Code != teams.ECodeForbidden {
		t.Errorf("failed message = %+v", m)
	}

	// Nothing readable in the data directory: no token, no message text.
	secrets := append(s.auth.Tokens(), "Invoice &", "no entry")
	for _, sec := range secrets {
		paths, _ := gatewaytest.FilesHolding(t, s.dir, []byte(sec))
		for _, p := range paths {
			t.Errorf("%s contains %q in plaintext", p, sec)
		}
	}
}

// TestReceiveEndToEnd: a message someone writes in a polled chat reaches the inbound handlers,
// stored, with sender and text; the service account's own message does not.
func TestReceiveEndToEnd(t *testing.T) {
	s := start(t)
	// Let the first poll set the high-water mark, then write.
	s.graph.WaitFor(t, "GET", "/v1.0/chats/19:inbox@thread.v2/messages")
	s.graph.Add("19:inbox@thread.v2", teamsfake.Message{ID: "own", From: teamsfake.ServiceUserID, HTML: "ours", At: time.Now()})
	s.graph.Add("19:inbox@thread.v2", teamsfake.Message{ID: "1700000000001", From: "user-ann", FromName: "Ann", HTML: "<p>STOP</p>", At: time.Now().Add(time.Millisecond)})
	select {
	case in := <-s.inbound:
		if in.Event.ChannelMessageID != "teams:chat:19:inbox@thread.v2|1700000000001" || in.Message.Content.Text != "STOP" || in.Event.FromName != "Ann" ||
			in.Message.Peer.String() != "teams:user:user-ann" || in.Event.Chat != "teams:chat:19:inbox@thread.v2" {
			t.Errorf("inbound = %+v", in)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no inbound message")
	}
	select {
	case in := <-s.inbound:
		t.Errorf("a second inbound message: %+v", in.Event)
	default:
	}
}

type apiMessage struct {
	ID               string `json:"id"`
	Status           string `json:"status"`
	ChannelMessageID string `json:"channel_message_id"`
	Error            *struct {
		Code string `json:"code"`
	} `json:"error"`
}

func (s *system) getMessage(t *testing.T, id string) apiMessage {
	t.Helper()
	req, _ := http.NewRequest("GET", s.api.URL+"/v1/messages/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+s.secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m apiMessage
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}
