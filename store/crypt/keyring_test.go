package crypt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// memStore is an in-memory KeyStore that counts creations and can hold loads at a gate, so tests
// can make many callers arrive before the first load finishes.
type memStore struct {
	mu       sync.Mutex
	tenants  map[string]WrappedKey
	subjects map[string]WrappedKey
	creates  atomic.Int64
	loads    atomic.Int64
	gate     chan struct{} // when set, loads wait for it to close
	arrived  chan struct{} // closed by the first load
	once     sync.Once
}

func newMemStore() *memStore {
	return &memStore{tenants: map[string]WrappedKey{}, subjects: map[string]WrappedKey{}, arrived: make(chan struct{})}
}

func (m *memStore) wait(ctx context.Context) error {
	m.loads.Add(1)
	m.once.Do(func() { close(m.arrived) })
	m.mu.Lock()
	g := m.gate
	m.mu.Unlock()
	if g == nil {
		return nil
	}
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *memStore) TenantKey(ctx context.Context, tenant string) (WrappedKey, error) {
	if err := m.wait(ctx); err != nil {
		return WrappedKey{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.tenants[tenant]
	if !ok {
		return WrappedKey{}, gateway.Errorf(gateway.ENotFound, "no tenant key")
	}
	return k, nil
}

func (m *memStore) CreateTenantKey(_ context.Context, tenant string, k WrappedKey) (WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.tenants[tenant]; ok {
		return old, nil
	}
	m.creates.Add(1)
	m.tenants[tenant] = k
	return k, nil
}

func (m *memStore) SubjectKey(ctx context.Context, tenant, subject string) (WrappedKey, error) {
	if err := m.wait(ctx); err != nil {
		return WrappedKey{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.subjects[tenant+"/"+subject]
	if !ok {
		return WrappedKey{}, gateway.Errorf(gateway.ENotFound, "no subject key")
	}
	return k, nil
}

func (m *memStore) CreateSubjectKey(_ context.Context, tenant, subject string, k WrappedKey) (WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.subjects[tenant+"/"+subject]; ok {
		return old, nil
	}
	m.creates.Add(1)
	m.subjects[tenant+"/"+subject] = k
	return k, nil
}

func (m *memStore) deleteSubject(tenant, subject string) {
	m.mu.Lock()
	delete(m.subjects, tenant+"/"+subject)
	m.mu.Unlock()
}

func testMaster(id string, b byte) MasterKey {
	return MasterKey{ID: id, Key: bytes.Repeat([]byte{b}, KeySize)}
}

func newTestKeyring(t testing.TB, ks KeyStore, masters ...MasterKey) *Keyring {
	t.Helper()
	if len(masters) == 0 {
		masters = []MasterKey{testMaster("mk_a", 1)}
	}
	k, err := New(masters, ks)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var testAD = AD{Table: "messages", Row: "msg_1", Column: "content"}

func TestSealOpen(t *testing.T) {
	ctx := context.Background()
	k := newTestKeyring(t, newMemStore())
	subj, err := k.BlindIndex(ctx, "acme", "+4915112345678")
	if err != nil {
		t.Fatal(err)
	}
	ct, err := k.Seal(ctx, "acme", subj, testAD, []byte("hello invoice"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("hello")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	id, err := KeyIDOf(ct)
	if err != nil || !strings.HasPrefix(id, "dk_") {
		t.Fatalf("key id %q, %v", id, err)
	}
	pt, err := k.Open(ctx, "acme", subj, testAD, ct)
	if err != nil || string(pt) != "hello invoice" {
		t.Fatalf("open: %q %v", pt, err)
	}
	// Two seals of the same text differ (random nonces).
	ct2, _ := k.Seal(ctx, "acme", subj, testAD, []byte("hello invoice"))
	if bytes.Equal(ct, ct2) {
		t.Fatal("two seals are identical")
	}
	// Empty plaintext round-trips.
	ct3, _ := k.Seal(ctx, "acme", subj, testAD, nil)
	if pt, err := k.Open(ctx, "acme", subj, testAD, ct3); err != nil || len(pt) != 0 {
		t.Fatalf("empty: %q %v", pt, err)
	}
}

func TestOpenRefuses(t *testing.T) {
	ctx := context.Background()
	ms := newMemStore()
	k := newTestKeyring(t, ms)
	subjA, _ := k.BlindIndex(ctx, "acme", "+4915112345678")
	subjB, _ := k.BlindIndex(ctx, "acme", "+4915199999999")
	ct, err := k.Seal(ctx, "acme", subjA, testAD, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	// Make sure B has a key, and tenant "other" has keys for the same subject string.
	if _, err := k.Seal(ctx, "acme", subjB, testAD, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Seal(ctx, "other", subjA, testAD, []byte("x")); err != nil {
		t.Fatal(err)
	}
	tampered := func(i int) []byte {
		c := append([]byte(nil), ct...)
		c[i] ^= 0x01
		return c
	}
	tests := []struct {
		name    string
		tenant  string
		subject string
		ad      AD
		ct      []byte
		want    error
	}{
		{"other row", "acme", subjA, AD{"messages", "msg_2", "content"}, ct, ErrDecrypt},
		{"other column", "acme", subjA, AD{"messages", "msg_1", "metadata"}, ct, ErrDecrypt},
		{"other table", "acme", subjA, AD{"contacts", "msg_1", "content"}, ct, ErrDecrypt},
		{"other subject", "acme", subjB, testAD, ct, ErrKeyNotFound},
		{"other tenant", "other", subjA, testAD, ct, ErrKeyNotFound},
		{"unknown tenant", "nobody", subjA, testAD, ct, ErrKeyNotFound},
		{"tampered body", "acme", subjA, testAD, tampered(len(ct) - 1), ErrDecrypt},
		{"tampered nonce", "acme", subjA, testAD, tampered(len(ct) - 20), ErrDecrypt},
		{"tampered version", "acme", subjA, testAD, tampered(0), ErrDecrypt},
		{"tampered key id", "acme", subjA, testAD, tampered(3), ErrKeyNotFound},
		{"truncated", "acme", subjA, testAD, ct[:10], ErrDecrypt},
		{"empty", "acme", subjA, testAD, nil, ErrDecrypt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := k.Open(ctx, tt.tenant, tt.subject, tt.ad, tt.ct)
			if err == nil {
				t.Fatalf("opened: %q", pt)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := k.Open(ctx, "nobody", subjA, testAD, ct); err == nil {
		t.Fatal("open created nothing but opened")
	}
	if _, ok := ms.tenants["nobody"]; ok {
		t.Fatal("Open created a tenant key")
	}
}

func TestTenantSealOpen(t *testing.T) {
	ctx := context.Background()
	k := newTestKeyring(t, newMemStore())
	ad := AD{Table: "credentials", Row: "teams/ops", Column: "secret"}
	ct, err := k.SealTenant(ctx, "acme", ad, []byte("client-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := k.OpenTenant(ctx, "acme", ad, ct); err != nil || string(pt) != "client-secret" {
		t.Fatalf("%q %v", pt, err)
	}
	if _, err := k.SealTenant(ctx, "other", ad, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := k.OpenTenant(ctx, "other", ad, ct); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("other tenant: %v", err)
	}
	if _, err := k.OpenTenant(ctx, "acme", AD{Table: "credentials", Row: "teams/x", Column: "secret"}, ct); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("other row: %v", err)
	}
	// A subject ciphertext is not a tenant ciphertext.
	subj, _ := k.BlindIndex(ctx, "acme", "x")
	sct, _ := k.Seal(ctx, "acme", subj, ad, []byte("x"))
	if _, err := k.OpenTenant(ctx, "acme", ad, sct); err == nil {
		t.Fatal("tenant open of a subject ciphertext")
	}
}

func TestBlindIndex(t *testing.T) {
	ctx := context.Background()
	ms := newMemStore()
	k := newTestKeyring(t, ms)
	a1, _ := k.BlindIndex(ctx, "acme", "+4915112345678")
	a2, _ := k.BlindIndex(ctx, "acme", "+4915112345678")
	b, _ := k.BlindIndex(ctx, "acme", "+4915112345679")
	o, _ := k.BlindIndex(ctx, "other", "+4915112345678")
	if a1 != a2 || len(a1) != 64 {
		t.Fatalf("not stable: %s %s", a1, a2)
	}
	if a1 == b || a1 == o {
		t.Fatal("index collides across identifiers or tenants")
	}
	// A second keyring over the same store and masters (another replica) agrees.
	k2 := newTestKeyring(t, ms)
	if x, _ := k2.BlindIndex(ctx, "acme", "+4915112345678"); x != a1 {
		t.Fatal("another keyring computes another index")
	}
	if s := ShortSubject(a1); len(s) != 14 || !strings.HasPrefix(s, "s_") || s[2:] != a1[:12] {
		t.Fatalf("short subject %q", s)
	}
}

func TestRotationReadiness(t *testing.T) {
	ctx := context.Background()
	ms := newMemStore()
	old, neu := testMaster("mk_old", 1), testMaster("mk_new", 2)
	k1 := newTestKeyring(t, ms, old)
	subj, _ := k1.BlindIndex(ctx, "acme", "+4915112345678")
	ct, err := k1.Seal(ctx, "acme", subj, testAD, []byte("before rotation"))
	if err != nil {
		t.Fatal(err)
	}
	if ms.tenants["acme"].KeyID != "mk_old" {
		t.Fatalf("tenant key wrapped by %s", ms.tenants["acme"].KeyID)
	}

	// The new key is primary, the old one listed second: the old tenant key still opens.
	k2 := newTestKeyring(t, ms, neu, old)
	if pt, err := k2.Open(ctx, "acme", subj, testAD, ct); err != nil || string(pt) != "before rotation" {
		t.Fatalf("after adding a primary: %q %v", pt, err)
	}
	// New tenants get keys wrapped by the new primary.
	if _, err := k2.BlindIndex(ctx, "beta", "x"); err != nil {
		t.Fatal(err)
	}
	if ms.tenants["beta"].KeyID != "mk_new" {
		t.Fatalf("new tenant key wrapped by %s", ms.tenants["beta"].KeyID)
	}
	// Without the old key, the old tenant key cannot be opened: the error says which key is missing.
	k3 := newTestKeyring(t, ms, neu)
	if _, err := k3.Open(ctx, "acme", subj, testAD, ct); err == nil || !strings.Contains(err.Error(), "mk_old") {
		t.Fatalf("without the old key: %v", err)
	}
	// Rewrap under the new primary; then the old key can go and the content stays readable.
	rw, changed, err := k2.RewrapTenantKey("acme", ms.tenants["acme"])
	if err != nil || !changed || rw.KeyID != "mk_new" {
		t.Fatalf("rewrap: %v %v %s", err, changed, rw.KeyID)
	}
	if _, changed, _ := k2.RewrapTenantKey("acme", rw); changed {
		t.Fatal("rewrap of a primary-wrapped key changed it")
	}
	ms.tenants["acme"] = rw
	k4 := newTestKeyring(t, ms, neu)
	if pt, err := k4.Open(ctx, "acme", subj, testAD, ct); err != nil || string(pt) != "before rotation" {
		t.Fatalf("after rewrap: %q %v", pt, err)
	}
	if x, _ := k4.BlindIndex(ctx, "acme", "+4915112345678"); x != subj {
		t.Fatal("blind index changed with rotation")
	}
}

func TestForget(t *testing.T) {
	ctx := context.Background()
	ms := newMemStore()
	k := newTestKeyring(t, ms)
	subj, _ := k.BlindIndex(ctx, "acme", "+4915112345678")
	other, _ := k.BlindIndex(ctx, "acme", "+4915199999999")
	ct, _ := k.Seal(ctx, "acme", subj, testAD, []byte("to be erased"))
	ct2, _ := k.Seal(ctx, "acme", other, testAD, []byte("kept"))
	if tn, sn := k.cached(); tn != 1 || sn != 2 {
		t.Fatalf("cached %d %d", tn, sn)
	}
	// Erasure: the stored key goes, then Forget: nothing can open the data anymore.
	ms.deleteSubject("acme", subj)
	if _, err := k.Open(ctx, "acme", subj, testAD, ct); err != nil {
		t.Fatal("cache should still hold the key before Forget")
	}
	k.Forget("acme", subj)
	_, err := k.Open(ctx, "acme", subj, testAD, ct)
	if !errors.Is(err, ErrKeyNotFound) || gateway.ErrorCode(err) != gateway.ESubjectErased {
		t.Fatalf("after Forget: %v (%s)", err, gateway.ErrorCode(err))
	}
	// A new key for the subject does not open old data.
	if _, err := k.Seal(ctx, "acme", subj, testAD, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open(ctx, "acme", subj, testAD, ct); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("new key opened old data: %v", err)
	}
	if pt, err := k.Open(ctx, "acme", other, testAD, ct2); err != nil || string(pt) != "kept" {
		t.Fatalf("other subject: %q %v", pt, err)
	}
	k.Forget("acme", "")
	if tn, sn := k.cached(); tn != 0 || sn != 0 {
		t.Fatalf("after tenant Forget cached %d %d", tn, sn)
	}
}

func TestConcurrentFirstUseCreatesOneKey(t *testing.T) {
	ctx := context.Background()
	ms := newMemStore()
	ms.gate = make(chan struct{})
	k := newTestKeyring(t, ms)
	const n = 64
	var wg sync.WaitGroup
	var started sync.WaitGroup
	errs := make(chan error, n)
	cts := make(chan []byte, n)
	started.Add(n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			ct, err := k.Seal(ctx, "acme", "subject-1", testAD, []byte("x"))
			errs <- err
			cts <- ct
		}()
	}
	started.Wait()
	// Wait until the first load is held at the gate, then let every load through.
	<-ms.arrived
	ms.mu.Lock()
	close(ms.gate)
	ms.gate = nil
	ms.mu.Unlock()
	wg.Wait()
	close(errs)
	close(cts)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]bool{}
	for ct := range cts {
		id, _ := KeyIDOf(ct)
		ids[id] = true
	}
	if len(ids) != 1 {
		t.Fatalf("%d data keys used", len(ids))
	}
	if c := ms.creates.Load(); c != 2 { // one tenant key, one data key
		t.Fatalf("%d keys created, want 2", c)
	}
}

func TestCacheBound(t *testing.T) {
	ctx := context.Background()
	k, err := New([]MasterKey{testMaster("mk_a", 1)}, newMemStore(), WithCacheSize(2, 8))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := k.Seal(ctx, "acme", "s"+string(rune('a'+i)), testAD, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, sn := k.cached(); sn > 8 {
		t.Fatalf("%d subject keys cached, bound 8", sn)
	}
}

func TestDeriveKey(t *testing.T) {
	k := newTestKeyring(t, newMemStore(), testMaster("mk_a", 1), testMaster("mk_b", 2))
	a, b := k.DeriveKey("jetstream"), k.DeriveKey("jetstream")
	if len(a) != 32 || !bytes.Equal(a, b) {
		t.Fatal("not stable")
	}
	if bytes.Equal(a, k.DeriveKey("other")) {
		t.Fatal("purposes share a key")
	}
	from, err := k.DeriveKeyFrom("mk_a", "jetstream")
	if err != nil || !bytes.Equal(from, a) {
		t.Fatal("DeriveKeyFrom primary differs")
	}
	if old, _ := k.DeriveKeyFrom("mk_b", "jetstream"); bytes.Equal(old, a) {
		t.Fatal("two masters derive the same key")
	}
	if _, err := k.DeriveKeyFrom("mk_x", "jetstream"); err == nil {
		t.Fatal("unknown master")
	}
}

func TestParseMasterKeys(t *testing.T) {
	good := FormatMasterKey(testMaster("mk_a", 1))
	second := FormatMasterKey(testMaster("mk_b", 2))
	tests := []struct {
		name    string
		in      string
		ids     []string
		wantErr string
	}{
		{"one", good, []string{"mk_a"}, ""},
		{"two with comments", "# keys\n\n" + good + "\n  " + second + "  \n", []string{"mk_a", "mk_b"}, ""},
		{"raw base64", "k1:" + strings.TrimRight(strings.SplitN(good, ":", 2)[1], "="), []string{"k1"}, ""},
		{"empty", "# nothing\n", nil, "no master keys"},
		{"no colon", "abc", nil, "line 1"},
		{"bad id", "a b:" + strings.SplitN(good, ":", 2)[1], nil, "key id"},
		{"bad base64", "mk:@@@@", nil, "not valid base64"},
		{"short key", "mk:AAAA", nil, "3 bytes"},
		{"duplicate", good + "\n" + good, nil, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ParseMasterKeys(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, k := range keys {
				ids = append(ids, k.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.ids, ",") {
				t.Fatalf("ids %v", ids)
			}
		})
	}
	if _, err := ParseMasterKeys("mk:" + strings.Repeat("A", 43) + "x"); err != nil && strings.Contains(err.Error(), strings.Repeat("A", 43)) {
		t.Fatal("error echoes key material")
	}
}

func TestMasterKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.keys")
	k, err := GenerateMasterKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.ID, "mk_") || len(k.Key) != KeySize {
		t.Fatalf("key %v", k)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	if _, err := GenerateMasterKeyFile(path); gateway.ErrorCode(err) != gateway.EConflict {
		t.Fatalf("overwrite: %v", err)
	}
	keys, err := LoadMasterKeys(path)
	if err != nil || len(keys) != 1 || keys[0].ID != k.ID || !bytes.Equal(keys[0].Key, k.Key) {
		t.Fatalf("load: %v %v", keys, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644} {
		os.Chmod(path, mode)
		if _, err := LoadMasterKeys(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("mode %o accepted: %v", mode, err)
		}
	}
	if _, err := LoadMasterKeys(filepath.Join(dir, "missing")); gateway.ErrorCode(err) != gateway.ENotFound {
		t.Fatalf("missing: %v", err)
	}
	if s := k.String(); strings.Contains(s, FormatMasterKey(k)[len(k.ID)+1:]) {
		t.Fatal("String shows key material")
	}
}

func TestNewRefuses(t *testing.T) {
	ms := newMemStore()
	if _, err := New(nil, ms); err == nil {
		t.Fatal("no masters")
	}
	if _, err := New([]MasterKey{{ID: "a", Key: []byte("short")}}, ms); err == nil {
		t.Fatal("short key")
	}
	if _, err := New([]MasterKey{testMaster("a", 1), testMaster("a", 2)}, ms); err == nil {
		t.Fatal("duplicate id")
	}
	if _, err := New([]MasterKey{testMaster("a", 1)}, nil); err == nil {
		t.Fatal("no key store")
	}
}

func BenchmarkBlindIndex(b *testing.B) {
	ctx := context.Background()
	k := newTestKeyring(b, newMemStore())
	if _, err := k.BlindIndex(ctx, "acme", "+4915112345678"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := k.BlindIndex(ctx, "acme", "+4915112345678"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSealOpenWarm(b *testing.B) {
	ctx := context.Background()
	k := newTestKeyring(b, newMemStore())
	subj, _ := k.BlindIndex(ctx, "acme", "+4915112345678")
	msg := []byte(`{"text":"Your invoice 2026-1142 is ready: 129.00 EUR, due on 1 December."}`)
	if _, err := k.Seal(ctx, "acme", subj, testAD, msg); err != nil {
		b.Fatal(err)
	}
	b.Run("Seal", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := k.Seal(ctx, "acme", subj, testAD, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	ct, _ := k.Seal(ctx, "acme", subj, testAD, msg)
	b.Run("Open", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := k.Open(ctx, "acme", subj, testAD, ct); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
