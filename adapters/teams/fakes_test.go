package teams

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	_ "modernc.org/sqlite"

	"github.com/switchboard-gateway/switchboard/adapters"
	"github.com/switchboard-gateway/switchboard/adapters/teams/teamsfake"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/gatewaytest"
	"github.com/switchboard-gateway/switchboard/store/credstore"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	"github.com/switchboard-gateway/switchboard/store/crypt/crypttest"
)

const (
	testTenantID  = teamsfake.TenantID
	testClientID  = teamsfake.ClientID
	serviceUserID = teamsfake.ServiceUserID
)

type fakeMessage = teamsfake.Message

// ---------------------------------------------------------------------------------------------
// Store: credstore over a SQLite file with the real keyring.

type testDB struct {
	path string
	kr   *crypt.Keyring
}

func newTestDB(t *testing.T) *testDB {
	return &testDB{path: filepath.Join(t.TempDir(), "switchboard.db"), kr: crypttest.NewKeyring(t)}
}

// open is one "process start": a new *sql.DB over the same file.
func (d *testDB) open(t *testing.T) *credstore.Store {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+d.path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := credstore.New(db, credstore.SQLite, credstore.Keyring(d.kr))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// assertNotInFiles checks the database file and its WAL for plaintexts.
func (d *testDB) assertNotInFiles(t *testing.T, needles ...string) {
	t.Helper()
	found := false
	for _, p := range []string{d.path, d.path + "-wal"} {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		found = true
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s contains %q in plaintext", filepath.Base(p), n)
			}
		}
	}
	if !found {
		t.Fatal("no database file to check")
	}
}

// ---------------------------------------------------------------------------------------------
// A fake clock, a recording sink, and the environment tying them together.

type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []clockWaiter
	changed chan struct{}
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC), changed: make(chan struct{}, 1)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, clockWaiter{c.now.Add(d), ch})
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return ch
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
}

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// BlockUntil waits until n timers are pending.
func (c *fakeClock) BlockUntil(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.waiters)
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-c.changed:
		case <-timeout:
			t.Fatalf("fake clock: %d timers pending, want %d", got, n)
		}
	}
}

type recordingSink struct {
	mu      sync.Mutex
	inbound []gateway.InboundEvent
	failAt  int // fail the failAt-th Inbound call (1-based); 0 never
	calls   int
	got     chan gateway.InboundEvent
}

func newSink() *recordingSink { return &recordingSink{got: make(chan gateway.InboundEvent, 100)} }

func (s *recordingSink) Status(context.Context, adapters.Receipt) error { return nil }

func (s *recordingSink) Inbound(_ context.Context, ev gateway.InboundEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.failAt != 0 && s.calls == s.failAt {
		return errors.New("bus unavailable")
	}
	s.inbound = append(s.inbound, ev)
	s.got <- ev
	return nil
}

func (s *recordingSink) events() []gateway.InboundEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]gateway.InboundEvent(nil), s.inbound...)
}

type env struct {
	auth  *teamsfake.Authority
	graph *teamsfake.Graph
	db    *testDB
	clock *fakeClock
	logs  *gatewaytest.LogBuffer
}

func newEnv(t *testing.T) *env {
	a := teamsfake.NewAuthority(t)
	return &env{auth: a, graph: teamsfake.NewGraph(t, a), db: newTestDB(t), clock: newFakeClock(), logs: &gatewaytest.LogBuffer{}}
}

func (e *env) config() Config {
	return Config{
		Tenant: "acme", Account: "ops",
		TenantID: testTenantID, ClientID: testClientID,
		AuthorityURL: e.auth.URL(), GraphURL: e.graph.URL(),
		HTTPClient: e.auth.Client(), // trusts the fake authority's certificate
		Clock:      e.clock,
		Log:        zerolog.New(e.logs),
	}
}

// adapter starts an adapter on a new database connection (a new "process").
func (e *env) adapter(t *testing.T, mod func(*Config), hub *Notifications) *Adapter {
	t.Helper()
	cfg := e.config()
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg, e.db.open(t), hub)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// login runs the device-code login once against the fake authority.
func (e *env) login(t *testing.T) {
	t.Helper()
	a := e.adapter(t, nil, nil)
	if _, err := a.Auth().Login(context.Background(), func(DeviceCode) {}); err != nil {
		t.Fatalf("login: %v", err)
	}
}
