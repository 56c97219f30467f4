package adapters_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/pipeline"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

const (
	number = "+4915112345678"
	text   = "the invoice 4711 is overdue"
)

type published struct {
	Subject, MsgID string
	Data           []byte
}

type fakeBus struct {
	mu   sync.Mutex
	msgs []published
	fail error
}

func (b *fakeBus) Publish(_ context.Context, subject, msgID string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.msgs = append(b.msgs, published{subject, msgID, data})
	return nil
}

func (b *fakeBus) Consume(context.Context, bus.ConsumerConfig, bus.Handler) error {
	return errors.New("fakeBus: no consumers")
}

func (b *fakeBus) events(t *testing.T) []gateway.StatusEvent {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []gateway.StatusEvent
	for _, p := range b.msgs {
		var ev gateway.StatusEvent
		if err := json.Unmarshal(p.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if p.Subject != bus.StatusSubject(ev.Tenant) || p.MsgID != ev.EventID() {
			t.Fatalf("status event on %s with msg id %s", p.Subject, p.MsgID)
		}
		out = append(out, ev)
	}
	return out
}

type fakeStore struct {
	mu     sync.Mutex
	msgs   map[string]*gateway.Message
	claims []string
}

func (s *fakeStore) Message(_ context.Context, tenant, id string, withContent bool) (*gateway.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.msgs[id]
	if !ok || m.Tenant != tenant {
		return nil, gateway.Errorf(gateway.ENotFound, "no message")
	}
	c := *m
	if !withContent {
		c.Content = gateway.Content{}
	}
	return &c, nil
}

func (s *fakeStore) ClaimChannelMessageID(_ context.Context, tenant, id, proposed string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims = append(s.claims, proposed)
	m := s.msgs[id]
	if m.ChannelMessageID == "" {
		m.ChannelMessageID = proposed
	}
	return m.ChannelMessageID, nil
}

func (s *fakeStore) MessageIDByChannelID(_ context.Context, tenant string, ch gateway.Channel, account, cid string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		if m.Tenant == tenant && m.Channel == ch && m.Account == account && m.ChannelMessageID == cid {
			return m.ID, nil
		}
	}
	return "", gateway.Errorf(gateway.ENotFound, "no message")
}

type fakeSealer struct{}

func (fakeSealer) BlindIndex(_ context.Context, tenant, identifier string) (string, error) {
	h := sha256.Sum256([]byte(tenant + "|" + identifier))
	return hex.EncodeToString(h[:]), nil
}

func (fakeSealer) Seal(_ context.Context, _, _ string, _ crypt.AD, plaintext []byte) ([]byte, error) {
	out := make([]byte, len(plaintext))
	for i, b := range plaintext {
		out[i] = b ^ 0x5a
	}
	return out, nil
}

func (s fakeSealer) Open(ctx context.Context, tenant, subject string, ad crypt.AD, ct []byte) ([]byte, error) {
	return s.Seal(ctx, tenant, subject, ad, ct)
}

// fakeAdapter records sends and answers with err.
type fakeAdapter struct {
	mu    sync.Mutex
	sends []adapters.Outbound
	err   error
	next  string
}

func (a *fakeAdapter) NewChannelMessageID() string { return a.next }

func (a *fakeAdapter) Send(_ context.Context, m adapters.Outbound) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sends = append(a.sends, m)
	if a.err != nil {
		return "", a.err
	}
	if m.ChannelMessageID == "" {
		return "channel-assigned", nil
	}
	return m.ChannelMessageID, nil
}

func (a *fakeAdapter) Run(ctx context.Context, _ adapters.Sink) error { <-ctx.Done(); return nil }

func dispatchMsg(t *testing.T, id string, delivered uint64) *bus.Msg {
	t.Helper()
	data, _ := json.Marshal(gateway.Dispatch{MessageID: id, Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales"})
	return &bus.Msg{Subject: "sb.dispatch.whatsapp.acme.sales", Data: data, MsgID: id, NumDelivered: delivered}
}

func TestRunnerHandle(t *testing.T) {
	optedOut := pipeline.StageFunc(func(context.Context, *gateway.Message) error {
		return gateway.Errorf(gateway.ERecipientOptedOut, "opted out while queued")
	})
	tests := []struct {
		name       string
		status     gateway.Status
		storedCID  string
		proposed   string
		stages     []pipeline.Stage
		sendErr    error
		delivered  uint64
		wantSends  int
		wantCID    string // channel id given to Send
		wantErr    bool
		wantTerm   bool
		wantDelay  time.Duration
		wantStatus gateway.Status // the one event published, "" for none
		wantCode   string
	}{
		{name: "sends and reports sent", status: gateway.StatusQueued, proposed: "SB1", wantSends: 1, wantCID: "SB1", wantStatus: gateway.StatusSent},
		{name: "reuses the stored channel id", status: gateway.StatusQueued, storedCID: "SB0", proposed: "SB1", wantSends: 1, wantCID: "SB0", wantStatus: gateway.StatusSent},
		{name: "channel assigns the id", status: gateway.StatusQueued, wantSends: 1, wantCID: "", wantStatus: gateway.StatusSent},
		{name: "already sent: no second send", status: gateway.StatusSent, proposed: "SB1"},
		{name: "already read: no second send", status: gateway.StatusRead, proposed: "SB1"},
		{name: "rejected meanwhile: no send", status: gateway.StatusRejected, proposed: "SB1"},
		{name: "opted out while queued", status: gateway.StatusQueued, proposed: "SB1", stages: []pipeline.Stage{optedOut},
			wantStatus: gateway.StatusRejected, wantCode: gateway.ERecipientOptedOut},
		{name: "permanent failure", status: gateway.StatusQueued, proposed: "SB1", sendErr: adapters.Permanent("not_on_whatsapp", errors.New("no account")),
			wantSends: 1, wantCID: "SB1", wantStatus: gateway.StatusFailed, wantCode: "not_on_whatsapp"},
		{name: "retryable failure", status: gateway.StatusQueued, proposed: "SB1", sendErr: errors.New("connection reset"), delivered: 1,
			wantSends: 1, wantCID: "SB1", wantErr: true},
		{name: "retry after", status: gateway.StatusQueued, proposed: "SB1", sendErr: adapters.RetryAfter(7*time.Second, errors.New("429")), delivered: 1,
			wantSends: 1, wantCID: "SB1", wantErr: true, wantDelay: 7 * time.Second},
		{name: "last attempt fails: failed and dead letter", status: gateway.StatusQueued, proposed: "SB1", sendErr: errors.New("connection reset"), delivered: 3,
			wantSends: 1, wantCID: "SB1", wantErr: true, wantTerm: true, wantStatus: gateway.StatusFailed, wantCode: gateway.EChannelError},
		{name: "gone: dropped", status: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to, _ := gateway.ParseAddress(gateway.WhatsApp, number)
			st := &fakeStore{msgs: map[string]*gateway.Message{}}
			if tt.status != "" {
				st.msgs["msg_1"] = &gateway.Message{ID: "msg_1", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: to,
					Content: gateway.Content{Text: text}, Status: tt.status, ChannelMessageID: tt.storedCID}
			}
			b := &fakeBus{}
			ad := &fakeAdapter{err: tt.sendErr, next: tt.proposed}
			r, err := adapters.NewRunner(adapters.RunnerConfig{
				Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Adapter: ad, Store: st, Bus: b, Sealer: fakeSealer{},
				Stages: tt.stages, MaxDeliver: 3,
			})
			if err != nil {
				t.Fatal(err)
			}
			delivered := tt.delivered
			if delivered == 0 {
				delivered = 1
			}
			err = r.Handle(context.Background(), dispatchMsg(t, "msg_1", delivered))
			if (err != nil) != tt.wantErr || bus.IsTerminal(err) != tt.wantTerm {
				t.Fatalf("Handle: %v; want error %v, terminal %v", err, tt.wantErr, tt.wantTerm)
			}
			if d, _ := pipeline.RetryAfter(err); d != tt.wantDelay {
				t.Fatalf("retry delay %v, want %v", d, tt.wantDelay)
			}
			if len(ad.sends) != tt.wantSends {
				t.Fatalf("%d sends, want %d", len(ad.sends), tt.wantSends)
			}
			if tt.wantSends > 0 {
				s := ad.sends[0]
				if s.ChannelMessageID != tt.wantCID || s.To != to || s.Content.Text != text || s.Attempt != int(delivered) {
					t.Fatalf("sent %+v", s)
				}
			}
			evs := b.events(t)
			if tt.wantStatus == "" {
				if len(evs) != 0 {
					t.Fatalf("published %+v, want nothing", evs)
				}
				return
			}
			if len(evs) != 1 || evs[0].Status != tt.wantStatus || evs[0].MessageID != "msg_1" || evs[0].Account != "sales" {
				t.Fatalf("published %+v, want one %s event", evs, tt.wantStatus)
			}
			if tt.wantCode != "" && (evs[0].Error == nil || evs[0].Error.Code != tt.wantCode) {
				t.Fatalf("event error %+v, want %s", evs[0].Error, tt.wantCode)
			}
			if tt.wantStatus == gateway.StatusSent {
				want := tt.wantCID
				if want == "" {
					want = "channel-assigned"
				}
				if evs[0].ChannelMessageID != want || st.msgs["msg_1"].ChannelMessageID != want {
					t.Fatalf("sent event names %q (stored %q), want %q", evs[0].ChannelMessageID, st.msgs["msg_1"].ChannelMessageID, want)
				}
			}
		})
	}
}

func TestRunnerRefusesAnotherTenantsDispatch(t *testing.T) {
	r, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: "globex", Channel: gateway.WhatsApp, Account: "sales", Adapter: &fakeAdapter{},
		Store: &fakeStore{}, Bus: &fakeBus{}, Sealer: fakeSealer{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Handle(context.Background(), dispatchMsg(t, "msg_1", 1)); !bus.IsTerminal(err) {
		t.Fatalf("Handle: %v; want a dead letter", err)
	}
}

func TestRunnerSink(t *testing.T) {
	to, _ := gateway.ParseAddress(gateway.WhatsApp, number)
	st := &fakeStore{msgs: map[string]*gateway.Message{
		"msg_1": {ID: "msg_1", Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: to, Status: gateway.StatusSent, ChannelMessageID: "SB1"},
	}}
	b := &fakeBus{}
	r, err := adapters.NewRunner(adapters.RunnerConfig{
		Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Adapter: &fakeAdapter{}, Store: st, Bus: b, Sealer: fakeSealer{},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	if err := r.Status(ctx, adapters.Receipt{ChannelMessageID: "SB1", Status: gateway.StatusRead, At: at, Participant: "+4915199999999"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Status(ctx, adapters.Receipt{ChannelMessageID: "unknown", Status: gateway.StatusRead}); err != nil {
		t.Fatalf("a receipt for a message we did not send must be dropped: %v", err)
	}
	evs := b.events(t)
	if len(evs) != 1 || evs[0].MessageID != "msg_1" || evs[0].Status != gateway.StatusRead || !evs[0].At.Equal(at) ||
		len(evs[0].Participant) != 64 || evs[0].ChannelMessageID != "SB1" {
		t.Fatalf("events %+v", evs)
	}

	b.msgs = nil
	err = r.Inbound(ctx, gateway.InboundEvent{ChannelMessageID: "IN1", From: to, FromName: "Erika", Content: gateway.Content{Text: text}})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.msgs) != 1 || b.msgs[0].Subject != "sb.inbound.acme.whatsapp" || b.msgs[0].MsgID != "whatsapp:sales:IN1" {
		t.Fatalf("inbound published %+v", b.msgs)
	}
	for _, secret := range []string{text, number, "Erika"} {
		if bytes.Contains(b.msgs[0].Data, []byte(secret)) {
			t.Fatalf("INBOUND payload carries %q", secret)
		}
	}
	var env pipeline.InboundEnvelope
	if err := json.Unmarshal(b.msgs[0].Data, &env); err != nil {
		t.Fatal(err)
	}
	if env.Tenant != "acme" || env.Account != "sales" || env.Channel != gateway.WhatsApp || env.ID == "" || env.At.IsZero() {
		t.Fatalf("envelope %+v", env)
	}
	// A publish that fails is reported to the adapter, which must not ack to its channel.
	b.fail = errors.New("bus down")
	if err := r.Inbound(ctx, gateway.InboundEvent{ChannelMessageID: "IN2", From: to, Content: gateway.Content{Text: "hi"}}); err == nil {
		t.Fatal("Inbound must fail when the publish fails")
	}
}
