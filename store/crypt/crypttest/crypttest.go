// Package crypttest holds what tests in other packages need of the keyring: an in-memory key
// store and a real keyring over it.
package crypttest

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// KeyStore is crypt.KeyStore in memory (store/sql implements it over the database).
type KeyStore struct {
	mu   sync.Mutex
	keys map[string]crypt.WrappedKey
}

// NewKeyStore returns an empty key store.
func NewKeyStore() *KeyStore {
	return &KeyStore{keys: map[string]crypt.WrappedKey{}}
}

func (m *KeyStore) get(k string) (crypt.WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w, ok := m.keys[k]; ok {
		return w, nil
	}
	return crypt.WrappedKey{}, gateway.Errorf(gateway.ENotFound, "no key")
}

// create keeps the first key written under k, as the database's insert-or-read does.
func (m *KeyStore) create(k string, w crypt.WrappedKey) (crypt.WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.keys[k]; ok {
		return old, nil
	}
	m.keys[k] = w
	return w, nil
}

// TenantKey implements crypt.KeyStore.
func (m *KeyStore) TenantKey(_ context.Context, tenant string) (crypt.WrappedKey, error) {
	return m.get("tenant:" + tenant)
}

// CreateTenantKey implements crypt.KeyStore.
func (m *KeyStore) CreateTenantKey(_ context.Context, tenant string, w crypt.WrappedKey) (crypt.WrappedKey, error) {
	return m.create("tenant:"+tenant, w)
}

// SubjectKey implements crypt.KeyStore.
func (m *KeyStore) SubjectKey(_ context.Context, tenant, subject string) (crypt.WrappedKey, error) {
	return m.get("subject:" + tenant + "/" + subject)
}

// CreateSubjectKey implements crypt.KeyStore.
func (m *KeyStore) CreateSubjectKey(_ context.Context, tenant, subject string, w crypt.WrappedKey) (crypt.WrappedKey, error) {
	return m.create("subject:"+tenant+"/"+subject, w)
}

// NewKeyring returns the real keyring over a fresh in-memory key store with a random master key.
func NewKeyring(t testing.TB) *crypt.Keyring {
	t.Helper()
	mk := crypt.MasterKey{ID: "mk_test", Key: make([]byte, crypt.KeySize)}
	if _, err := rand.Read(mk.Key); err != nil {
		t.Fatal(err)
	}
	kr, err := crypt.New([]crypt.MasterKey{mk}, NewKeyStore())
	if err != nil {
		t.Fatal(err)
	}
	return kr
}
