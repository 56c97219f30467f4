package whatsapp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	_ "modernc.org/sqlite"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/whatsapp/whatsapptest"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store/crypt/crypttest"
	"github.com/switchboard-gateway/switchboard/store/wastore"
)

// ---- fake whatsmeow client ----

type sentMessage struct {
	To  types.JID
	Msg *waE2E.Message
	ID  types.MessageID
	At  time.Time
}

// fakeClient stands in for whatsmeow's client at its wire edge. Tests drive it with whatsmeow's
// own event types through Emit.
type fakeClient struct {
	whatsapptest.Handlers // AddEventHandler, RemoveEventHandler, Emit

	mu    sync.Mutex
	dev   *store.Device
	clock Clock
	idSeq int

	connected, loggedIn bool
	autoLogin           bool  // Connect emits *events.Connected
	connectErr          error // Connect fails with it
	connects            int

	sent      []sentMessage
	sendErr   error
	notOnWA   map[string]bool // phone users not on WhatsApp
	uploads   []whatsmeow.MediaType
	qr        chan whatsmeow.QRChannelItem
	pairPhone string
	loggedOut bool
	groups    map[types.JID][]types.GroupParticipant // GetGroupInfo answers
}

func newFakeClient(dev *store.Device, clock Clock) *fakeClient {
	return &fakeClient{dev: dev, clock: clock, autoLogin: true, notOnWA: map[string]bool{}}
}

func (f *fakeClient) Connect(ctx context.Context) error {
	f.mu.Lock()
	f.connects++
	if f.connectErr != nil {
		err := f.connectErr
		f.mu.Unlock()
		return err
	}
	f.connected = true
	auto := f.autoLogin
	f.mu.Unlock()
	if auto {
		f.mu.Lock()
		f.loggedIn = true
		f.mu.Unlock()
		f.Emit(&events.Connected{})
	}
	return nil
}

func (f *fakeClient) Disconnect() {
	f.mu.Lock()
	f.connected, f.loggedIn = false, false
	f.mu.Unlock()
}

func (f *fakeClient) IsConnected() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.connected }
func (f *fakeClient) IsLoggedIn() bool  { f.mu.Lock(); defer f.mu.Unlock(); return f.loggedIn }

func (f *fakeClient) GenerateMessageID() types.MessageID {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.idSeq++
	return types.MessageID(fmt.Sprintf("3EB0FAKE%06d", f.idSeq))
}

func (f *fakeClient) SendMessage(ctx context.Context, to types.JID, msg *waE2E.Message, extra ...whatsmeow.SendRequestExtra) (whatsmeow.SendResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(extra) != 1 || extra[0].ID == "" {
		return whatsmeow.SendResponse{}, errors.New("fake: SendMessage without a pre-generated id")
	}
	if !f.connected {
		return whatsmeow.SendResponse{}, whatsmeow.ErrNotConnected
	}
	if f.sendErr != nil {
		return whatsmeow.SendResponse{}, f.sendErr
	}
	f.sent = append(f.sent, sentMessage{To: to, Msg: msg, ID: extra[0].ID, At: f.clock.Now()})
	return whatsmeow.SendResponse{ID: extra[0].ID, Timestamp: f.clock.Now()}, nil
}

func (f *fakeClient) Upload(ctx context.Context, data []byte, mt whatsmeow.MediaType) (whatsmeow.UploadResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads = append(f.uploads, mt)
	return whatsmeow.UploadResponse{URL: "https://mmg.example/x", DirectPath: "/v/x", MediaKey: []byte("k"), FileLength: uint64(len(data))}, nil
}

func (f *fakeClient) IsOnWhatsApp(ctx context.Context, phones []string) ([]types.IsOnWhatsAppResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []types.IsOnWhatsAppResponse
	for _, p := range phones {
		u := p[1:]
		out = append(out, types.IsOnWhatsAppResponse{Query: p, JID: types.NewJID(u, types.DefaultUserServer), IsIn: !f.notOnWA[u]})
	}
	return out, nil
}

func (f *fakeClient) GetGroupInfo(ctx context.Context, jid types.JID) (*types.GroupInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps, ok := f.groups[jid]
	if !ok {
		return nil, whatsmeow.ErrGroupNotFound
	}
	return &types.GroupInfo{JID: jid, Participants: ps}, nil
}

func (f *fakeClient) Logout(ctx context.Context) error {
	f.mu.Lock()
	f.loggedOut = true
	f.mu.Unlock()
	return f.dev.Delete(ctx)
}

func (f *fakeClient) GetQRChannel(ctx context.Context) (<-chan whatsmeow.QRChannelItem, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.qr == nil {
		f.qr = make(chan whatsmeow.QRChannelItem, 16)
	}
	return f.qr, nil
}

func (f *fakeClient) PairPhone(ctx context.Context, phone string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pairPhone = phone
	return "ABCD-EFGH", nil
}

func (f *fakeClient) LinkedJID() types.JID { return f.dev.GetJID() }

// pair completes a pairing as whatsmeow does: the device gets its JID and is saved.
func (f *fakeClient) pair(ctx context.Context, jid types.JID) error {
	f.dev.ID = &jid
	return f.dev.Save(ctx)
}

func (f *fakeClient) sentMessages() []sentMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sentMessage(nil), f.sent...)
}

// ---- fake sink ----

type fakeSink struct {
	mu       sync.Mutex
	statuses []adapters.Receipt
	inbound  []gateway.InboundEvent
	fail     error
	gate     chan struct{} // when set, Inbound waits for it
	entered  chan struct{}
}

func (s *fakeSink) Status(ctx context.Context, r adapters.Receipt) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.statuses = append(s.statuses, r)
	return nil
}

func (s *fakeSink) Inbound(ctx context.Context, m gateway.InboundEvent) error {
	s.mu.Lock()
	gate, entered, fail := s.gate, s.entered, s.fail
	s.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil {
		return fail
	}
	s.mu.Lock()
	s.inbound = append(s.inbound, m)
	s.mu.Unlock()
	return nil
}

// ---- store and harness ----

// newDeviceStore returns a real, encrypted device store over SQLite in a temp dir.
func newDeviceStore(t *testing.T) *wastore.Container {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "wa.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := wastore.Migrate(ctx, db, wastore.SQLite); err != nil {
		t.Fatal(err)
	}
	c, err := wastore.New(db, wastore.SQLite, wastore.KeyringSealer(crypttest.NewKeyring(t)), "acme", "sales", wastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// harness is one adapter over a fake client and a real device store.
type harness struct {
	t       *testing.T
	ctx     context.Context
	store   *wastore.Container
	clock   *FakeClock
	a       *Adapter
	sink    *fakeSink
	statusC chan Status

	mu      sync.Mutex
	clients []*fakeClient
	prepare func(*fakeClient) // applied to every new client
	done    chan error
}

type harnessOpt func(*Config)

func newHarness(t *testing.T, linked bool, opts ...harnessOpt) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{
		t: t, ctx: ctx, store: newDeviceStore(t),
		clock:   NewFakeClock(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)),
		sink:    &fakeSink{},
		statusC: make(chan Status, 256),
	}
	if linked {
		h.saveDevice("4915100000001")
	}
	cfg := Config{
		Tenant: "acme", Account: "sales", Store: h.store, Clock: h.clock,
		Pacing: Pacing{Interval: time.Millisecond, Burst: 1 << 20, FirstContactInterval: -1, Jitter: -1},
		Log:    zerolog.Nop(),
		NewClient: func(dev *store.Device) LinkClient {
			c := newFakeClient(dev, h.clock)
			h.mu.Lock()
			if h.prepare != nil {
				h.prepare(c)
			}
			h.clients = append(h.clients, c)
			h.mu.Unlock()
			return c
		},
		OnStatus: func(s Status) { h.statusC <- s },
	}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.a = a
	h.done = make(chan error, 1)
	go func() { h.done <- a.Run(ctx, h.sink) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

// saveDevice stores a paired device, as a link would.
func (h *harness) saveDevice(user string) {
	h.t.Helper()
	dev := h.store.NewDevice()
	jid := types.JID{User: user, Device: 12, Server: types.DefaultUserServer}
	if err := (&fakeClient{dev: dev}).pair(context.Background(), jid); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) client() *fakeClient {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) == 0 {
		return nil
	}
	return h.clients[len(h.clients)-1]
}

// waitState waits for the adapter to report state (an event, not a poll); the deadline only
// turns a hang into a failure.
func (h *harness) waitState(want State) Status {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-h.statusC:
			if s.State == want {
				return s
			}
		case <-deadline:
			h.t.Fatalf("state %s never reported; now %+v", want, h.a.Status())
		}
	}
}
