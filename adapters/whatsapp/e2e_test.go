package whatsapp

// End to end on real parts, with only WhatsApp faked at its wire edge: SQLite store/sql with the
// real keyring, the WhatsApp device store in the same database, the embedded NATS bus, the
// pipeline (intake, router, recorders) and the adapters runner driving this adapter.

import (
	"context"
	"encoding/hex"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
	"github.com/switchboard-gateway/switchboard/pipeline"
	sbstore "github.com/switchboard-gateway/switchboard/store"
	sqlstore "github.com/switchboard-gateway/switchboard/store/sql"
	"github.com/switchboard-gateway/switchboard/store/sql/sqltest"
	"github.com/switchboard-gateway/switchboard/store/wastore"
)

// failingBus fails publishes to one stream while armed.
type failingBus struct {
	*bus.Bus
	failStream atomic.Value // string
}

func (f *failingBus) Publish(ctx context.Context, subject, msgID string, data []byte) error {
	if s, _ := f.failStream.Load().(string); s != "" && bus.StreamFor(subject) == s {
		return gateway.Errorf(gateway.EUnavailable, "bus: injected failure on %s", subject)
	}
	return f.Bus.Publish(ctx, subject, msgID, data)
}

type e2e struct {
	t       *testing.T
	dir     string
	db      *sqlstore.DB
	bus     *failingBus
	intake  *pipeline.Intake
	adapter *Adapter
	applied chan sbstore.Applied
	inbound chan pipeline.Inbound

	keys [][]byte // the device's private keys, to look for on disk

	mu      sync.Mutex
	status  map[string]gateway.Status
	clients []*fakeClient
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	db, kr := sqltest.Open(t, dir)
	if err := db.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// The device store lives in the same database, sealed with the same keyring.
	if err := wastore.Migrate(ctx, db.SQL(), wastore.SQLite); err != nil {
		t.Fatal(err)
	}
	dev, err := wastore.New(db.SQL(), wastore.SQLite, wastore.KeyringSealer(kr), "acme", "sales", wastore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	paired := dev.NewDevice()
	if err := (&fakeClient{dev: paired}).pair(ctx, types.JID{User: "4915100000001", Device: 12, Server: types.DefaultUserServer}); err != nil {
		t.Fatal(err)
	}
	b, err := bus.Open(ctx, bus.Config{Embedded: &bus.Embedded{StoreDir: filepath.Join(dir, "nats"), StoreKey: string(kr.DeriveKey("test-jetstream"))}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, dir: dir, db: db, bus: &failingBus{Bus: b},
		keys:    [][]byte{paired.NoiseKey.Priv[:], paired.IdentityKey.Priv[:], paired.SignedPreKey.Priv[:], paired.AdvSecretKey},
		applied: make(chan sbstore.Applied, 1000), inbound: make(chan pipeline.Inbound, 100), status: map[string]gateway.Status{}}
	log := zerolog.Nop()
	resumer, err := pipeline.NewResumer(pipeline.ResumerConfig{Store: db, Bus: e.bus, Interval: time.Hour, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	e.intake, err = pipeline.NewIntake(pipeline.IntakeConfig{Store: db, Bus: e.bus, Retry: resumer.Retry, Indexer: kr, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	router, err := pipeline.NewRouter(pipeline.RouterConfig{Store: db, Bus: e.bus, Stages: []pipeline.Stage{pipeline.RouteStage{}}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := pipeline.NewRecorder(pipeline.RecorderConfig{Store: db, Bus: e.bus, Log: log, OnApplied: func(_ context.Context, as []sbstore.Applied) {
		e.mu.Lock()
		for _, a := range as {
			if a.Advanced {
				e.status[a.Event.MessageID] = a.Event.Status
			}
		}
		e.mu.Unlock()
		for _, a := range as {
			e.applied <- a
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	inrec, err := pipeline.NewInboundRecorder(pipeline.InboundRecorderConfig{Store: db, Bus: e.bus, Sealer: kr, Log: log, Concurrency: 1,
		Handlers: []pipeline.InboundHandler{pipeline.InboundHandlerFunc(func(_ context.Context, in pipeline.Inbound) error {
			e.inbound <- in
			return nil
		})}})
	if err != nil {
		t.Fatal(err)
	}
	e.adapter, err = New(Config{
		Tenant: "acme", Account: "sales", Store: dev, Log: log,
		Pacing: Pacing{Interval: time.Millisecond, Burst: 1000, FirstContactInterval: -1, Jitter: -1},
		NewClient: func(d *store.Device) LinkClient {
			c := newFakeClient(d, realClock{})
			e.mu.Lock()
			e.clients = append(e.clients, c)
			e.mu.Unlock()
			return c
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runner, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Adapter: e.adapter,
		Store: db, Media: db, Bus: e.bus, Sealer: kr, BackOff: []time.Duration{10 * time.Millisecond}, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{router.Run, rec.Run, inrec.Run, runner.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("component stopped: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = b.Close(context.Background())
	})
	if err := e.adapter.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *e2e) client() *fakeClient {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clients[len(e.clients)-1]
}

func (e *e2e) waitStatus(id string, want gateway.Status) {
	e.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		e.mu.Lock()
		cur := e.status[id]
		e.mu.Unlock()
		if cur == want {
			return
		}
		select {
		case <-e.applied:
		case <-timeout:
			e.t.Fatalf("message %s is %q, want %s", id, cur, want)
		}
	}
}

func (e *e2e) waitInbound() pipeline.Inbound {
	e.t.Helper()
	select {
	case in := <-e.inbound:
		return in
	case <-time.After(30 * time.Second):
		e.t.Fatal("no inbound message")
	}
	return pipeline.Inbound{}
}

func TestEndToEndSendReceiptsInbound(t *testing.T) {
	e := newE2E(t)
	ctx := context.Background()
	const secret = "Your invoice 4711 is attached"
	addr, _ := gateway.ParseAddress(gateway.WhatsApp, "+4915112345678")
	m, _, _, err := e.intake.Accept(ctx, sbstore.NewMessage{Message: &gateway.Message{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: addr, Content: gateway.Content{Text: secret},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e.waitStatus(m.ID, gateway.StatusSent)

	// The fake client got SendMessage with the id stored before the send.
	stored, err := e.db.Message(ctx, "acme", m.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	sent := e.client().sentMessages()
	if len(sent) != 1 || string(sent[0].ID) != stored.ChannelMessageID || stored.ChannelMessageID == "" ||
		sent[0].Msg.GetConversation() != secret || sent[0].To.User != "4915112345678" {
		t.Fatalf("sent %+v, stored channel id %q", sent, stored.ChannelMessageID)
	}

	// Receipts move the message to read.
	peer := types.NewJID("4915112345678", types.DefaultUserServer)
	for _, rt := range []types.ReceiptType{types.ReceiptTypeDelivered, types.ReceiptTypeRead} {
		if !e.client().Emit(&events.Receipt{MessageSource: types.MessageSource{Chat: peer, Sender: peer}, MessageIDs: []string{stored.ChannelMessageID}, Timestamp: time.Now(), Type: rt}) {
			t.Fatalf("receipt %q not acknowledged", rt)
		}
	}
	e.waitStatus(m.ID, gateway.StatusRead)

	// Inbound: published before the handler reports success; a publish failure is not acked; the
	// redelivery is stored once.
	in := inboundMessage("3EB0INBOUND1", &waE2E.Message{Conversation: proto.String("STOP please")}, types.MessageSource{Chat: peer, Sender: peer})
	e.bus.failStream.Store(bus.StreamInbound)
	if e.client().Emit(in) {
		t.Fatal("handler reported success although the publish failed")
	}
	e.bus.failStream.Store("")
	if !e.client().Emit(in) {
		t.Fatal("redelivery failed")
	}
	got := e.waitInbound()
	if got.Event.ChannelMessageID != "3EB0INBOUND1" || got.Message.Content.Text != "STOP please" || got.Message.Peer.Value != "+4915112345678" {
		t.Errorf("inbound %+v", got.Event)
	}
	// WhatsApp delivers it once more (say our ack was lost); then a new message follows. The
	// recorder is ordered, so if the duplicate were stored it would arrive before the new one.
	if !e.client().Emit(in) {
		t.Fatal("second redelivery failed")
	}
	if !e.client().Emit(inboundMessage("3EB0INBOUND2", &waE2E.Message{Conversation: proto.String("next")}, types.MessageSource{Chat: peer, Sender: peer})) {
		t.Fatal("second message failed")
	}
	if next := e.waitInbound(); next.Event.ChannelMessageID != "3EB0INBOUND2" {
		t.Errorf("after the duplicate came %s, want 3EB0INBOUND2", next.Event.ChannelMessageID)
	}

	// Nothing readable on disk: not the text, not the number, not the device keys.
	grep(t, e.dir, [][]byte{[]byte(secret), []byte("4915112345678"), []byte("STOP please")}, e.keys)
}

// An uploaded file named by a message reaches WhatsApp: the runner loads it from the store.
func TestUploadedMediaIsSent(t *testing.T) {
	e := newE2E(t)
	ctx := context.Background()
	pdf := []byte("%PDF-1.7 uploaded invoice")
	f := gateway.MediaFile{ID: gateway.NewMediaID(), Tenant: "acme", MIMEType: "application/pdf", Filename: "invoice.pdf",
		ExpiresAt: time.Now().Add(time.Hour)}
	if err := e.db.PutMedia(ctx, f, pdf); err != nil {
		t.Fatal(err)
	}
	addr, _ := gateway.ParseAddress(gateway.WhatsApp, "+4915112345678")
	m, _, _, err := e.intake.Accept(ctx, sbstore.NewMessage{Message: &gateway.Message{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: addr,
		Content: gateway.Content{Media: &gateway.Media{ID: f.ID, MIMEType: f.MIMEType, Filename: f.Filename, Caption: "your invoice"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e.waitStatus(m.ID, gateway.StatusSent)
	c := e.client()
	c.mu.Lock()
	uploads := append([]whatsmeow.MediaType(nil), c.uploads...)
	c.mu.Unlock()
	sent := c.sentMessages()
	doc := sent[len(sent)-1].Msg.GetDocumentMessage()
	if len(uploads) != 1 || uploads[0] != whatsmeow.MediaDocument || doc.GetFileName() != "invoice.pdf" ||
		doc.GetCaption() != "your invoice" || doc.GetFileLength() != uint64(len(pdf)) {
		t.Fatalf("uploads %v, document %v", uploads, doc)
	}
}

// A group message is delivered, then read, when every member other than the account has it; each
// member's receipt is in the history.
func TestGroupMessageFollowsItsLeastAdvancedMember(t *testing.T) {
	e := newE2E(t)
	ctx := context.Background()
	group := types.NewJID("120363000000000001", types.GroupServer)
	member := func(user string) types.GroupParticipant {
		j := types.NewJID(user, types.DefaultUserServer)
		return types.GroupParticipant{JID: j, PhoneNumber: j}
	}
	own, ana, ben := member("4915100000001"), member("4915111111111"), member("4915122222222")
	c := e.client()
	c.mu.Lock()
	c.groups = map[types.JID][]types.GroupParticipant{group: {own, ana, ben}}
	c.mu.Unlock()

	addr, err := gateway.ParseAddress(gateway.WhatsApp, group.String())
	if err != nil {
		t.Fatal(err)
	}
	m, _, _, err := e.intake.Accept(ctx, sbstore.NewMessage{Message: &gateway.Message{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: addr, Content: gateway.Content{Text: "hello group"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e.waitStatus(m.ID, gateway.StatusSent)
	stored, err := e.db.Message(ctx, "acme", m.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	receipt := func(from types.GroupParticipant, rt types.ReceiptType) {
		t.Helper()
		ev := &events.Receipt{MessageSource: types.MessageSource{Chat: group, Sender: from.JID, IsGroup: true},
			MessageIDs: []string{stored.ChannelMessageID}, Timestamp: time.Now(), Type: rt}
		if !c.Emit(ev) {
			t.Fatalf("receipt %q of %s not acknowledged", rt, from.JID.User)
		}
	}
	// Each receipt below is applied before the next is emitted (the recorder reports each one).
	next := func() sbstore.Applied {
		t.Helper()
		select {
		case a := <-e.applied:
			return a
		case <-time.After(30 * time.Second):
			t.Fatal("no status applied")
		}
		return sbstore.Applied{}
	}
	for len(e.applied) > 0 {
		<-e.applied
	}
	steps := []struct {
		from     types.GroupParticipant
		rt       types.ReceiptType
		advanced gateway.Status // "" = history only
	}{
		{ana, types.ReceiptTypeDelivered, ""},
		{ana, types.ReceiptTypeRead, ""},
		{ben, types.ReceiptTypeDelivered, gateway.StatusDelivered},
		{ben, types.ReceiptTypeRead, gateway.StatusRead},
	}
	for _, st := range steps {
		receipt(st.from, st.rt)
		a := next()
		if a.Event.Participant == "" || a.Advanced != (st.advanced != "") || (a.Advanced && a.Event.Status != st.advanced) {
			t.Fatalf("receipt %q of %s: applied %+v, want advanced to %q", st.rt, st.from.JID.User, a, st.advanced)
		}
	}
	h, err := e.db.History(ctx, "acme", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	members := 0
	for _, ev := range h {
		if ev.Participant != "" {
			members++
		}
	}
	if members != len(steps) {
		t.Fatalf("history holds %d member receipts, want %d: %+v", members, len(steps), h)
	}
}

func grep(t *testing.T, dir string, texts, keys [][]byte) {
	t.Helper()
	for _, n := range texts {
		paths, _ := gatewaytest.FilesHolding(t, dir, n)
		for _, p := range paths {
			t.Errorf("%s contains %q in plaintext", strings.TrimPrefix(p, dir), n)
		}
	}
	for i, k := range keys {
		raw, _ := gatewaytest.FilesHolding(t, dir, k)
		hexed, _ := gatewaytest.FilesHolding(t, dir, []byte(hex.EncodeToString(k)))
		for _, p := range append(raw, hexed...) {
			t.Errorf("%s contains device key %d in plaintext", strings.TrimPrefix(p, dir), i)
		}
	}
}
