package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/switchboard-gateway/switchboard/adapters/whatsapp"
	"github.com/switchboard-gateway/switchboard/adapters/whatsapp/whatsapptest"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
)

// ---- a fake WhatsApp at the whatsmeow client's edge ----

// waSend is one message the fake network took.
type waSend struct {
	ID   types.MessageID
	To   types.JID
	Text string
}

// waNetwork stands in for WhatsApp behind every fake client the binary creates: it pairs new
// devices (as if the QR code were scanned), takes sends, and lets the test push whatsmeow's own
// events to the connected client.
type waNetwork struct {
	mu      sync.Mutex
	clients []*waClient
	sends   []waSend
	sent    chan waSend
	seq     int
}

func newWANetwork() *waNetwork { return &waNetwork{sent: make(chan waSend, 1000)} }

func (n *waNetwork) factory(dev *store.Device) whatsapp.LinkClient {
	c := &waClient{net: n, dev: dev}
	n.mu.Lock()
	n.clients = append(n.clients, c)
	n.mu.Unlock()
	return c
}

// tweak is the binary's test seam: the fake client, and a quick look for new links.
func (n *waNetwork) tweak(c *whatsapp.Config) {
	c.NewClient = n.factory
	c.LinkPoll = 20 * time.Millisecond
}

// connected is the client of the linked device that is connected now.
func (n *waNetwork) connected(t *testing.T) *waClient {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.clients) - 1; i >= 0; i-- {
		if c := n.clients[i]; c.isConnected() && c.dev.ID != nil {
			return c
		}
	}
	t.Fatal("no connected WhatsApp client")
	return nil
}

func (n *waNetwork) waitSent(t *testing.T) waSend {
	t.Helper()
	select {
	case s := <-n.sent:
		return s
	case <-time.After(30 * time.Second):
		t.Fatal("nothing was sent to WhatsApp within 30s")
		return waSend{}
	}
}

func (n *waNetwork) allSends() []waSend {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]waSend(nil), n.sends...)
}

type waClient struct {
	net *waNetwork
	dev *store.Device

	whatsapptest.Handlers // AddEventHandler, RemoveEventHandler, Emit

	mu        sync.Mutex
	conn      bool
	qr        chan whatsmeow.QRChannelItem
	linkPhone types.JID
}

func (c *waClient) isConnected() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.conn }

// Connect logs a linked device in; for a new device (linking) it shows one QR code, then pairs
// as a phone that scanned it would.
func (c *waClient) Connect(ctx context.Context) error {
	c.mu.Lock()
	c.conn = true
	qr := c.qr
	c.mu.Unlock()
	if c.dev.ID == nil {
		if qr == nil {
			return errors.New("fake: linking without a QR channel")
		}
		qr <- whatsmeow.QRChannelItem{Event: whatsmeow.QRChannelEventCode, Code: "2@fake-qr-code", Timeout: 20 * time.Second}
		jid := types.JID{User: "4915100000001", Device: 7, Server: types.DefaultUserServer}
		c.dev.ID = &jid
		if err := c.dev.Save(ctx); err != nil {
			return err
		}
		qr <- whatsmeow.QRChannelSuccess
	}
	c.Emit(&events.Connected{})
	return nil
}

func (c *waClient) Disconnect()       { c.mu.Lock(); c.conn = false; c.mu.Unlock() }
func (c *waClient) IsConnected() bool { return c.isConnected() }
func (c *waClient) IsLoggedIn() bool  { return c.isConnected() && c.dev.ID != nil }

func (c *waClient) GenerateMessageID() types.MessageID {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	c.net.seq++
	return types.MessageID(fmt.Sprintf("3EB0FAKE%06d", c.net.seq))
}

func (c *waClient) SendMessage(_ context.Context, to types.JID, msg *waE2E.Message, extra ...whatsmeow.SendRequestExtra) (whatsmeow.SendResponse, error) {
	if !c.isConnected() {
		return whatsmeow.SendResponse{}, whatsmeow.ErrNotConnected
	}
	if len(extra) != 1 || extra[0].ID == "" {
		return whatsmeow.SendResponse{}, errors.New("fake: a send without its pre-generated id")
	}
	s := waSend{ID: extra[0].ID, To: to, Text: msg.GetConversation()}
	c.net.mu.Lock()
	c.net.sends = append(c.net.sends, s)
	c.net.mu.Unlock()
	c.net.sent <- s
	return whatsmeow.SendResponse{ID: s.ID, Timestamp: time.Now()}, nil
}

func (c *waClient) Upload(context.Context, []byte, whatsmeow.MediaType) (whatsmeow.UploadResponse, error) {
	return whatsmeow.UploadResponse{}, errors.New("fake: no uploads")
}

func (c *waClient) IsOnWhatsApp(_ context.Context, phones []string) ([]types.IsOnWhatsAppResponse, error) {
	var out []types.IsOnWhatsAppResponse
	for _, p := range phones {
		out = append(out, types.IsOnWhatsAppResponse{Query: p, JID: types.NewJID(strings.TrimPrefix(p, "+"), types.DefaultUserServer), IsIn: true})
	}
	return out, nil
}

func (c *waClient) GetGroupInfo(context.Context, types.JID) (*types.GroupInfo, error) {
	return nil, whatsmeow.ErrGroupNotFound
}

func (c *waClient) Logout(ctx context.Context) error { return c.dev.Delete(ctx) }

func (c *waClient) GetQRChannel(context.Context) (<-chan whatsmeow.QRChannelItem, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.qr = make(chan whatsmeow.QRChannelItem, 4)
	return c.qr, nil
}

func (c *waClient) PairPhone(context.Context, string) (string, error) { return "ABCD-EFGH", nil }
func (c *waClient) LinkedJID() types.JID                              { return c.dev.GetJID() }

// ---- helpers ----

// runWA runs one switchboard command in-process with the fake WhatsApp in place of whatsmeow.
func runWA(t *testing.T, ctx context.Context, n *waNetwork, args ...string) (string, error) {
	t.Helper()
	out, errOut := &gatewaytest.LogBuffer{}, &gatewaytest.LogBuffer{}
	g := &globals{stdout: out, stderr: errOut, whatsappTest: n.tweak}
	root := newRoot(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String() + errOut.String(), err
}

// waConfig writes a configuration with one WhatsApp account on the whatsmeow driver, paced fast
// enough for tests, and returns its path.
func waConfig(t *testing.T, dir, listen string) string {
	t.Helper()
	path := filepath.Join(dir, "switchboard.yaml")
	cfg := fmt.Sprintf(`
data_dir: %s
server: {listen: %q}
tenants:
  - id: acme
    channels:
      whatsapp:
        consent: {require_opt_in: false}
        accounts:
          - name: sales
            driver: whatsmeow
            whatsmeow: {rate_per_minute: 60000, burst: 100, jitter: 0s, first_contact_per_hour: 3600000}
`, dir, listen)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waMessage is what GET /v1/messages/{id} answers, as far as these tests look.
type waMessage struct {
	ID               string `json:"id"`
	Status           string `json:"status"`
	ChannelMessageID string `json:"channel_message_id"`
}

type waAPI struct {
	t    *testing.T
	base string
	key  string
}

func (c waAPI) send(to, text string) string {
	c.t.Helper()
	body := fmt.Sprintf(`{"channel":"whatsapp","to":%q,"text":%q}`, to, text)
	req, _ := http.NewRequest(http.MethodPost, c.base+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m waMessage
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusAccepted || m.ID == "" {
		c.t.Fatalf("POST /v1/messages: HTTP %d %+v %v", resp.StatusCode, m, err)
	}
	return m.ID
}

func (c waAPI) message(id string) waMessage {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.base+"/v1/messages/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m waMessage
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET /v1/messages/%s: HTTP %d %v", id, resp.StatusCode, err)
	}
	return m
}

// waitStatus polls the API (an HTTP client has no other way to learn) until message id has status.
func (c waAPI) waitStatus(id, status string) waMessage {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := c.message(id)
		if m.Status == status {
			return m
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("message %s is %s after 30s, want %s", id, m.Status, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waReadyz answers /readyz's status code.
func waReadyz(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// serveWA links the account through the CLI, creates an API key, and serves in the background
// until the test ends.
func serveWA(t *testing.T, n *waNetwork) (waAPI, string) {
	t.Helper()
	dir := t.TempDir()
	listen := freePort(t)
	cfgPath := waConfig(t, dir, listen)
	ctx := t.Context()
	out, err := runWA(t, ctx, n, "whatsapp", "link", "--config", cfgPath, "--dev", "--tenant", "acme", "--account", "sales")
	if err != nil || !strings.Contains(out, "linked tenant acme, WhatsApp account sales") || !strings.Contains(out, "Linked to +49******0001") || !strings.Contains(out, "Scan this QR code") {
		t.Fatalf("whatsapp link: %v\n%s", err, out)
	}
	key, err := runWA(t, ctx, n, "keys", "create", "--config", cfgPath, "--tenant", "acme")
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, key)
	}
	key = strings.TrimSpace(strings.Split(key, "\n")[0])
	// /readyz includes the account: once ready, it is connected.
	base := serveInBackground(t, listen, func(ctx context.Context) (string, error) {
		return runWA(t, ctx, n, "serve", "--config", cfgPath, "--dev")
	})
	return waAPI{t: t, base: base, key: key}, cfgPath
}

// ---- tests ----

// TestWhatsAppThroughTheBinary: `whatsapp link` (QR in the terminal), `serve`, POST /v1/messages →
// the fake WhatsApp got SendMessage with the id stored before the send → delivery and read
// receipts, whatsmeow's own events → status read through the API; `whatsapp accounts` shows it.
func TestWhatsAppThroughTheBinary(t *testing.T) {
	n := newWANetwork()
	api, cfgPath := serveWA(t, n)

	id := api.send("+4915112345678", "your order has shipped")
	got := n.waitSent(t)
	if got.Text != "your order has shipped" || got.To.User != "4915112345678" {
		t.Errorf("WhatsApp got %+v", got)
	}
	m := api.waitStatus(id, "sent")
	if m.ChannelMessageID != string(got.ID) {
		t.Fatalf("sent under %q, stored %q", got.ID, m.ChannelMessageID)
	}
	peer := types.NewJID("4915112345678", types.DefaultUserServer)
	for _, rt := range []types.ReceiptType{types.ReceiptTypeDelivered, types.ReceiptTypeRead} {
		if !n.connected(t).Emit(&events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer},
			MessageIDs: []types.MessageID{got.ID}, Timestamp: time.Now(), Type: rt}) {
			t.Fatalf("receipt %q not taken", rt)
		}
	}
	api.waitStatus(id, "read")

	out, err := runWA(t, t.Context(), n, "whatsapp", "accounts", "--config", cfgPath, "--dev")
	if err != nil || !waLineHas(out, "acme", "sales", "whatsmeow", "connected", "+49******0001") {
		t.Fatalf("whatsapp accounts: %v\n%s", err, out)
	}

	// Logout unlinks on WhatsApp's side and destroys the keys; a second one has nothing to do.
	out, err = runWA(t, t.Context(), n, "whatsapp", "logout", "--config", cfgPath, "--dev", "--tenant", "acme", "--account", "sales")
	if err != nil || !strings.Contains(out, "the device keys are destroyed") {
		t.Fatalf("whatsapp logout: %v\n%s", err, out)
	}
	out, err = runWA(t, t.Context(), n, "whatsapp", "accounts", "--config", cfgPath, "--dev")
	if err != nil || !waLineHas(out, "acme", "sales", "whatsmeow", "logged_out") || strings.Contains(out, "+49******0001") {
		t.Fatalf("whatsapp accounts after logout: %v\n%s", err, out)
	}
	if out, err = runWA(t, t.Context(), n, "whatsapp", "logout", "--config", cfgPath, "--dev", "--tenant", "acme", "--account", "sales"); err == nil || !strings.Contains(err.Error(), "not linked") {
		t.Fatalf("second logout: %v\n%s", err, out)
	}
}

// waLineHas reports whether one line of out holds all fields, in order.
func waLineHas(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		rest, ok := l, true
		for _, f := range fields {
			i := strings.Index(rest, f)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(f):]
		}
		if ok {
			return true
		}
	}
	return false
}

// TestWhatsAppLoggedOutKeepsQueue: the phone unlinks the device (whatsmeow's LoggedOut event)
// while messages are being sent; 50 messages accepted meanwhile wait in the stream, /readyz says
// the account cannot send; after `whatsapp link` again every message goes out exactly once,
// through the real runner (whose gate keeps them in the stream meanwhile: without it they would
// be retried only after the five minutes a logged-out account asks for).
func TestWhatsAppLoggedOutKeepsQueue(t *testing.T) {
	n := newWANetwork()
	api, cfgPath := serveWA(t, n)

	first := api.send("+4915112345678", "before the logout")
	n.waitSent(t)
	api.waitStatus(first, "sent")

	n.connected(t).Emit(&events.LoggedOut{Reason: events.ConnectFailureLoggedOut})
	deadline := time.Now().Add(30 * time.Second)
	for waReadyz(t, api.base) != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready 30s after the logout")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := runWA(t, t.Context(), n, "whatsapp", "accounts", "--config", cfgPath, "--dev")
	if err != nil || !waLineHas(out, "acme", "sales", "whatsmeow", "logged_out") {
		t.Fatalf("whatsapp accounts after the logout: %v\n%s", err, out)
	}

	const total = 50
	var ids []string
	for i := range total {
		ids = append(ids, api.send(fmt.Sprintf("+491511234%04d", i), fmt.Sprintf("queued %d", i)))
	}
	for _, id := range ids {
		api.waitStatus(id, "queued")
	}
	if s := n.allSends(); len(s) != 1 {
		t.Fatalf("%d sends while logged out", len(s)-1)
	}

	out, err = runWA(t, t.Context(), n, "whatsapp", "link", "--config", cfgPath, "--dev", "--tenant", "acme", "--account", "sales")
	if err != nil || !strings.Contains(out, "linked tenant acme") {
		t.Fatalf("relink: %v\n%s", err, out)
	}
	for range total {
		n.waitSent(t)
	}
	for _, id := range ids {
		api.waitStatus(id, "sent")
	}
	perID := map[types.MessageID]int{}
	for _, s := range n.allSends() {
		perID[s.ID]++
	}
	if len(perID) != total+1 {
		t.Errorf("%d distinct messages reached WhatsApp, want %d", len(perID), total+1)
	}
	for id, k := range perID {
		if k != 1 {
			t.Errorf("%s reached WhatsApp %d times", id, k)
		}
	}
	if code := waReadyz(t, api.base); code != http.StatusOK {
		t.Errorf("/readyz after the relink: %d", code)
	}
}

// TestWhatsAppLinkWithoutNetwork runs the real binary with the real whatsmeow client behind a
// proxy that refuses every connection: `whatsapp link` fails with a clear error and a non-zero
// exit status, well within 30 seconds, and leaves the account unlinked.
func TestWhatsAppLinkWithoutNetwork(t *testing.T) {
	dir := t.TempDir()
	cfgPath := waConfig(t, dir, freePort(t))
	nowhere := "http://" + freePort(t) // nothing listens there
	env := append(os.Environ(), "SWITCHBOARD_TEST_MAIN=1")
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		env = append(env, k+"="+nowhere)
	}
	env = append(env, "NO_PROXY=", "no_proxy=")
	run := func(args ...string) (string, int, time.Duration) {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return out.String(), cmd.ProcessState.ExitCode(), took
	}
	out, code, took := run("whatsapp", "link", "--config", cfgPath, "--dev", "--tenant", "acme", "--account", "sales")
	t.Logf("exit %d after %s:\n%s", code, took.Round(time.Millisecond), out)
	if code == 0 {
		t.Fatal("link succeeded without a network")
	}
	if !strings.Contains(out, "could not reach WhatsApp") || !strings.Contains(out, "nothing was linked") {
		t.Errorf("unclear error:\n%s", out)
	}
	if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("the command panicked:\n%s", out)
	}
	if took > 30*time.Second {
		t.Errorf("took %s", took)
	}
	out, code, _ = run("whatsapp", "accounts", "--config", cfgPath, "--dev")
	if code != 0 || !waLineHas(out, "acme", "sales", "whatsmeow", "unlinked") {
		t.Errorf("whatsapp accounts after the failed link (exit %d):\n%s", code, out)
	}
}
