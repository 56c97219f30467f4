package pipeline_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// published is one message a fakeBus took.
type published struct {
	Subject, MsgID string
	Data           []byte
}

// fakeBus records publishes; fail makes the publish to a subject fail. Consumers are not used by
// the unit tests: they call the handlers directly.
type fakeBus struct {
	mu   sync.Mutex
	msgs []published
	fail func(subject string) error
}

func (b *fakeBus) Publish(_ context.Context, subject, msgID string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		if err := b.fail(subject); err != nil {
			return err
		}
	}
	b.msgs = append(b.msgs, published{subject, msgID, append([]byte(nil), data...)})
	return nil
}

func (b *fakeBus) Consume(context.Context, bus.ConsumerConfig, bus.Handler) error {
	return errors.New("fakeBus: no consumers")
}

func (b *fakeBus) ConsumeBatch(context.Context, bus.ConsumerConfig, bus.BatchHandler) error {
	return errors.New("fakeBus: no consumers")
}

func (b *fakeBus) all() []published {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]published(nil), b.msgs...)
}

func statusEvents(t *testing.T, ps []published) []gateway.StatusEvent {
	t.Helper()
	var out []gateway.StatusEvent
	for _, p := range ps {
		if bus.StreamFor(p.Subject) != bus.StreamStatus {
			continue
		}
		var ev gateway.StatusEvent
		if err := json.Unmarshal(p.Data, &ev); err != nil {
			t.Fatalf("status event: %v", err)
		}
		if p.MsgID != ev.EventID() {
			t.Errorf("status event published with msg id %q, want %q", p.MsgID, ev.EventID())
		}
		out = append(out, ev)
	}
	return out
}

// fakeStore keeps messages in memory.
type fakeStore struct {
	mu        sync.Mutex
	msgs      map[string]*gateway.Message
	hashes    map[string]string
	idem      map[string]string // tenant/key → id
	inbound   map[string]bool   // channel message ids
	applied   [][]gateway.StatusEvent
	applyErr  error
	loadErr   error
	createErr error
}

func newFakeStore() *fakeStore {
	return &fakeStore{msgs: map[string]*gateway.Message{}, hashes: map[string]string{}, idem: map[string]string{}, inbound: map[string]bool{}}
}

func (s *fakeStore) CreateMessage(_ context.Context, nm store.NewMessage) (*gateway.Message, string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.createErr != nil {
		return nil, "", false, s.createErr
	}
	m := nm.Message
	if m.IdempotencyKey != "" {
		if id, ok := s.idem[m.Tenant+"/"+m.IdempotencyKey]; ok {
			c := *s.msgs[id]
			return &c, s.hashes[id], false, nil
		}
		s.idem[m.Tenant+"/"+m.IdempotencyKey] = m.ID
	}
	c := *m
	s.msgs[m.ID] = &c
	s.hashes[m.ID] = nm.RequestHash
	return nil, "", true, nil
}

func (s *fakeStore) put(m gateway.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs[m.ID] = &m
}

func (s *fakeStore) Message(_ context.Context, tenant, id string, withContent bool) (*gateway.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return nil, s.loadErr
	}
	m, ok := s.msgs[id]
	if !ok || m.Tenant != tenant {
		return nil, gateway.Errorf(gateway.ENotFound, "no message %s", id)
	}
	c := *m
	if !withContent {
		c.Content = gateway.Content{}
	}
	return &c, nil
}

func (s *fakeStore) Unfinished(_ context.Context, afterID string, limit int) ([]gateway.Dispatch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, m := range s.msgs {
		if m.Status == gateway.StatusAccepted && id > afterID {
			ids = append(ids, id)
		}
	}
	sortStrings(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]gateway.Dispatch, len(ids))
	for i, id := range ids {
		m := s.msgs[id]
		out[i] = gateway.Dispatch{MessageID: id, Tenant: m.Tenant, Channel: m.Channel, Account: m.Account}
	}
	return out, nil
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func (s *fakeStore) ApplyStatus(_ context.Context, events []gateway.StatusEvent) ([]store.Applied, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applyErr != nil {
		return nil, s.applyErr
	}
	s.applied = append(s.applied, events)
	out := make([]store.Applied, len(events))
	for i, e := range events {
		m, ok := s.msgs[e.MessageID]
		if !ok {
			out[i] = store.Applied{Event: e, Missing: true}
			continue
		}
		e.Previous = m.Status
		a := store.Applied{Event: e, Masked: m.Peer.Masked(), Subject: "s_0123456789ab", CreatedAt: m.CreatedAt}
		if gateway.Advances(m.Status, e.Status) {
			m.Status = e.Status
			a.Advanced = true
		}
		out[i] = a
	}
	return out, nil
}

func (s *fakeStore) CreateInbound(_ context.Context, m *gateway.Message) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.createErr != nil {
		return false, s.createErr
	}
	if s.inbound[m.ChannelMessageID] {
		return false, nil
	}
	s.inbound[m.ChannelMessageID] = true
	c := *m
	s.msgs[m.ID] = &c
	return true, nil
}

// fakeSealer is a keyring stand-in: the blind index is a hash, sealing prefixes the ad and
// reverses the bytes (enough to see that nothing readable crosses the bus in unit tests; the
// integration tests use the real keyring). erased subjects fail to open with subject_erased.
type fakeSealer struct {
	erased map[string]bool
}

func (fakeSealer) BlindIndex(_ context.Context, tenant, identifier string) (string, error) {
	h := sha256.Sum256([]byte(tenant + "|" + identifier))
	return hex.EncodeToString(h[:]), nil
}

func adKey(tenant, subject string, ad crypt.AD) string {
	return tenant + "|" + subject + "|" + ad.Table + "|" + ad.Row + "|" + ad.Column + "|"
}

func (fakeSealer) Seal(_ context.Context, tenant, subject string, ad crypt.AD, plaintext []byte) ([]byte, error) {
	h := sha256.Sum256([]byte(adKey(tenant, subject, ad)))
	out := append([]byte(nil), h[:8]...)
	for i := len(plaintext) - 1; i >= 0; i-- {
		out = append(out, plaintext[i]^0x5a)
	}
	return out, nil
}

func (s fakeSealer) Open(_ context.Context, tenant, subject string, ad crypt.AD, ct []byte) ([]byte, error) {
	if s.erased[subject] {
		return nil, gateway.Errorf(gateway.ESubjectErased, "erased")
	}
	h := sha256.Sum256([]byte(adKey(tenant, subject, ad)))
	if len(ct) < 8 || string(ct[:8]) != string(h[:8]) {
		return nil, errors.New("fakeSealer: wrong associated data")
	}
	out := make([]byte, 0, len(ct)-8)
	for i := len(ct) - 1; i >= 8; i-- {
		out = append(out, ct[i]^0x5a)
	}
	return out, nil
}
