package api_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
)

// In-memory fakes of the small interfaces the API needs. The real store and bus are wired
// behind them in gateway/server's integration tests.

// fakeIntake stores accepted messages in memory and honours idempotency keys per tenant, as
// store.Messages.CreateMessage does.
type fakeIntake struct {
	// hook, when set, runs first; an error from it is returned as Accept's error (policy
	// refusals, outages, blocking until the deadline).
	hook func(ctx context.Context, nm store.NewMessage) error

	mu    sync.Mutex
	msgs  []*gateway.Message
	byKey map[string]store.NewMessage
	calls int
}

func newFakeIntake() *fakeIntake { return &fakeIntake{byKey: map[string]store.NewMessage{}} }

func (f *fakeIntake) Accept(ctx context.Context, nm store.NewMessage) (*gateway.Message, string, bool, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.hook != nil {
		if err := f.hook(ctx, nm); err != nil {
			return nil, "", false, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m := nm.Message
	if k := m.IdempotencyKey; k != "" {
		if prev, ok := f.byKey[m.Tenant+"\x00"+k]; ok {
			return prev.Message, prev.RequestHash, false, nil
		}
		f.byKey[m.Tenant+"\x00"+k] = nm
	}
	f.msgs = append(f.msgs, m)
	return m, "", true, nil
}

func (f *fakeIntake) stored() []*gateway.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.msgs)
}

// noopIntake accepts everything and keeps nothing: for the benchmark.
type noopIntake struct{}

func (noopIntake) Accept(_ context.Context, nm store.NewMessage) (*gateway.Message, string, bool, error) {
	return nm.Message, "", true, nil
}

// fakeMessages is a tenant-scoped message reader over a map.
type fakeMessages struct {
	mu      sync.Mutex
	msgs    map[string]*gateway.Message
	history map[string][]gateway.StatusEvent
	filters []store.MessageFilter
}

func newFakeMessages() *fakeMessages {
	return &fakeMessages{msgs: map[string]*gateway.Message{}, history: map[string][]gateway.StatusEvent{}}
}

func (f *fakeMessages) add(m *gateway.Message, events ...gateway.StatusEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs[m.ID] = m
	f.history[m.ID] = events
}

func (f *fakeMessages) Message(_ context.Context, tenant, id string, withContent bool) (*gateway.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.msgs[id]
	if !ok || m.Tenant != tenant {
		return nil, gateway.Errorf(gateway.ENotFound, "no message %s", id)
	}
	c := *m
	if !withContent {
		c.Content = gateway.Content{}
	}
	return &c, nil
}

func (f *fakeMessages) ListMessages(_ context.Context, tenant string, flt store.MessageFilter) ([]*gateway.Message, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, flt)
	var all []*gateway.Message
	for _, m := range f.msgs {
		if m.Tenant != tenant ||
			(flt.Status != "" && m.Status != flt.Status) ||
			(flt.Channel != "" && m.Channel != flt.Channel) ||
			(flt.Direction != "" && m.Direction != flt.Direction) ||
			(!flt.Since.IsZero() && m.CreatedAt.Before(flt.Since)) ||
			(flt.Cursor != "" && m.ID >= flt.Cursor) {
			continue
		}
		c := *m
		c.Content = gateway.Content{}
		all = append(all, &c)
	}
	slices.SortFunc(all, func(a, b *gateway.Message) int { return strings.Compare(b.ID, a.ID) })
	limit := flt.Limit
	if limit == 0 {
		limit = 50
	}
	if len(all) > limit {
		return all[:limit], all[limit-1].ID, nil
	}
	return all, "", nil
}

func (f *fakeMessages) History(_ context.Context, tenant, id string) ([]gateway.StatusEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, ok := f.msgs[id]; !ok || m.Tenant != tenant {
		return nil, gateway.Errorf(gateway.ENotFound, "no message %s", id)
	}
	return slices.Clone(f.history[id]), nil
}

// fakeKeys resolves secrets from a map and counts lookups.
type fakeKeys struct {
	keys    map[string]gateway.APIKey
	lookups atomic.Int64
}

func (f *fakeKeys) APIKeyBySecret(_ context.Context, secret string) (gateway.APIKey, error) {
	f.lookups.Add(1)
	k, ok := f.keys[secret]
	if !ok {
		return gateway.APIKey{}, gateway.Errorf(gateway.ENotFound, "no such key")
	}
	return k, nil
}

// fakeDirectory: tenant → channel → accounts; the first account is the default.
type fakeDirectory map[string]map[gateway.Channel][]string

func (d fakeDirectory) HasAccount(tenant string, ch gateway.Channel, account string) bool {
	return slices.Contains(d[tenant][ch], account)
}

func (d fakeDirectory) DefaultAccount(tenant string, ch gateway.Channel) (string, bool) {
	if accts := d[tenant][ch]; len(accts) > 0 {
		return accts[0], true
	}
	return "", false
}

// fakeSandbox records injections.
type fakeSandbox struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeSandbox) Inject(_ context.Context, tenant string, ch gateway.Channel, account, from, text string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, strings.Join([]string{tenant, string(ch), account, from, text}, "|"))
	return "sbx_1", nil
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logLines collects log lines for tests; Write never blocks the server.
type logLines struct{ ch chan string }

func (l logLines) Write(p []byte) (int, error) {
	select {
	case l.ch <- string(p):
	default:
	}
	return len(p), nil
}
