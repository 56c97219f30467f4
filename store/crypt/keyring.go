package crypt

import (
	"context"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// WrappedKey is a key as stored: sealed under the key named by KeyID (a master key id for a
// tenant key, a tenant key id for a subject key).
type WrappedKey struct {
	KeyID   string
	Wrapped []byte
}

// KeyStore keeps wrapped keys. store/sql implements it. Create methods insert only when no key
// exists yet and return the stored key, so two processes racing to create one agree on it.
type KeyStore interface {
	// TenantKey returns the tenant's wrapped key; a gateway.ENotFound error when there is none.
	TenantKey(ctx context.Context, tenant string) (WrappedKey, error)
	CreateTenantKey(ctx context.Context, tenant string, k WrappedKey) (WrappedKey, error)
	// SubjectKey returns the subject's wrapped data key; a gateway.ENotFound error when there is none.
	SubjectKey(ctx context.Context, tenant, subject string) (WrappedKey, error)
	CreateSubjectKey(ctx context.Context, tenant, subject string, k WrappedKey) (WrappedKey, error)
}

// Tables and columns named in the associated data of wrapped keys. A KeyStore need not use
// these names for its tables; they only have to stay the same forever.
const (
	tenantKeyTable  = "tenant_keys"
	subjectKeyTable = "subject_keys"
	keyColumn       = "key"
)

// Default cache bounds.
const (
	DefaultTenantCache  = 1024
	DefaultSubjectCache = 65536
)

// Option tunes a Keyring.
type Option func(*options)

type options struct{ tenants, subjects int }

// WithCacheSize bounds how many unwrapped tenant and subject keys the keyring keeps in memory.
func WithCacheSize(tenants, subjects int) Option {
	return func(o *options) { o.tenants, o.subjects = tenants, subjects }
}

// Keyring seals and opens data with the key hierarchy of DESIGN.md §3.6. It is safe for
// concurrent use.
type Keyring struct {
	masters []MasterKey
	byID    map[string]cipher.AEAD
	ks      KeyStore

	tenants  *cache[*tenantKey]
	subjects *cache[*subjectKey]
	tflight  flight[*tenantKey]
	sflight  flight[*subjectKey]
	// epoch grows with every Forget; a load that started before a Forget does not fill the cache.
	epoch atomic.Uint64
}

type tenantKey struct {
	id    string      // tk_…: names the key in what it wraps and seals
	wrap  cipher.AEAD // wraps subject keys
	data  cipher.AEAD // seals tenant-level data
	index []byte      // blind index key
	macs  sync.Pool   // of hash.Hash keyed with index
}

type subjectKey struct {
	id   string // dk_…
	aead cipher.AEAD
}

// New returns a keyring over masters (the first is primary) that keeps its wrapped keys in ks.
func New(masters []MasterKey, ks KeyStore, opts ...Option) (*Keyring, error) {
	if len(masters) == 0 {
		return nil, gateway.Errorf(gateway.EMissingField, "no master keys: the keyring needs at least one")
	}
	if ks == nil {
		return nil, gateway.Errorf(gateway.EMissingField, "no key store")
	}
	o := options{tenants: DefaultTenantCache, subjects: DefaultSubjectCache}
	for _, opt := range opts {
		opt(&o)
	}
	k := &Keyring{
		byID:     make(map[string]cipher.AEAD, len(masters)),
		ks:       ks,
		tenants:  newCache[*tenantKey](o.tenants),
		subjects: newCache[*subjectKey](o.subjects),
	}
	for i, m := range masters {
		if !validKeyID(m.ID) {
			return nil, gateway.Errorf(gateway.EInvalidField, "master key %d: invalid id %q", i+1, m.ID)
		}
		if len(m.Key) != KeySize {
			return nil, gateway.Errorf(gateway.EInvalidField, "master key %s is %d bytes, want %d", m.ID, len(m.Key), KeySize)
		}
		if _, dup := k.byID[m.ID]; dup {
			return nil, gateway.Errorf(gateway.EInvalidField, "master key id %s appears twice", m.ID)
		}
		key := append([]byte(nil), m.Key...)
		k.masters = append(k.masters, MasterKey{ID: m.ID, Key: key})
		k.byID[m.ID] = newAEAD(key)
	}
	return k, nil
}

// PrimaryKeyID is the id of the master key that wraps new tenant keys.
func (k *Keyring) PrimaryKeyID() string { return k.masters[0].ID }

// MasterKeyIDs lists the configured master key ids, primary first.
func (k *Keyring) MasterKeyIDs() []string {
	ids := make([]string, len(k.masters))
	for i, m := range k.masters {
		ids[i] = m.ID
	}
	return ids
}

// DeriveKey returns a 32-byte key for purpose, derived (HKDF-SHA-256) from the primary master
// key: the same purpose always gives the same key, different purposes unrelated keys. Note that
// it changes when the primary master key changes (rotation); see DeriveKeyFrom.
func (k *Keyring) DeriveKey(purpose string) []byte {
	return derive(k.masters[0].Key, infoDerivePfx+purpose)
}

// DeriveKeyFrom is DeriveKey under a named master key, for a consumer that must still open what
// it protected with a key derived from an earlier primary.
func (k *Keyring) DeriveKeyFrom(masterID, purpose string) ([]byte, error) {
	for _, m := range k.masters {
		if m.ID == masterID {
			return derive(m.Key, infoDerivePfx+purpose), nil
		}
	}
	return nil, gateway.WrapError(gateway.ENotFound, ErrKeyNotFound, "no master key %q", masterID)
}

// ShortSubject shortens a blind index for logs: "s_" and its first 12 hex characters.
func ShortSubject(index string) string {
	if len(index) > 12 {
		index = index[:12]
	}
	return "s_" + index
}

// BlindIndex returns the hex HMAC-SHA-256 of identifier under the tenant's index key, creating
// the tenant key on first use. Callers pass the normalised identifier (Address.String()).
func (k *Keyring) BlindIndex(ctx context.Context, tenant, identifier string) (string, error) {
	tk, err := k.tenantKey(ctx, tenant, true)
	if err != nil {
		return "", err
	}
	m := tk.macs.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(identifier))
	var sum [sha256.Size]byte
	out := hex.EncodeToString(m.Sum(sum[:0]))
	tk.macs.Put(m)
	return out, nil
}

// Seal encrypts plaintext for one subject (its blind index) of tenant under the subject's data
// key, created on first use. ad names where the ciphertext will be stored.
func (k *Keyring) Seal(ctx context.Context, tenant, subject string, ad AD, plaintext []byte) ([]byte, error) {
	if subject == "" {
		return nil, gateway.Errorf(gateway.EInternal, "crypt: seal without a subject")
	}
	sk, err := k.subjectKey(ctx, tenant, subject, true)
	if err != nil {
		return nil, err
	}
	return seal(sk.aead, sk.id, tenant, ad, plaintext), nil
}

// Open decrypts what Seal sealed for the same tenant, subject and ad. It does not create keys:
// when the subject's key is gone (erased) the error wraps ErrKeyNotFound and has the code
// subject_erased; a ciphertext that does not authenticate gives an error wrapping ErrDecrypt.
func (k *Keyring) Open(ctx context.Context, tenant, subject string, ad AD, ciphertext []byte) ([]byte, error) {
	p, err := parse(ciphertext)
	if err != nil {
		return nil, errDecrypt(ad.Table+"."+ad.Column, err)
	}
	sk, err := k.subjectKey(ctx, tenant, subject, false)
	if err != nil {
		return nil, err
	}
	if p.keyID != sk.id {
		return nil, gateway.WrapError(gateway.ESubjectErased, ErrKeyNotFound,
			"%s.%s was sealed with data key %s, not the subject's current key (erased, or another subject's data)", ad.Table, ad.Column, p.keyID)
	}
	pt, err := open(sk.aead, p, tenant, ad)
	if err != nil {
		return nil, errDecrypt(ad.Table+"."+ad.Column, err)
	}
	return pt, nil
}

// SealTenant encrypts tenant-level data (channel credentials, webhook secrets) under a key
// derived from the tenant key.
func (k *Keyring) SealTenant(ctx context.Context, tenant string, ad AD, plaintext []byte) ([]byte, error) {
	tk, err := k.tenantKey(ctx, tenant, true)
	if err != nil {
		return nil, err
	}
	return seal(tk.data, tk.id, tenant, ad, plaintext), nil
}

// OpenTenant decrypts what SealTenant sealed.
func (k *Keyring) OpenTenant(ctx context.Context, tenant string, ad AD, ciphertext []byte) ([]byte, error) {
	p, err := parse(ciphertext)
	if err != nil {
		return nil, errDecrypt(ad.Table+"."+ad.Column, err)
	}
	tk, err := k.tenantKey(ctx, tenant, false)
	if err != nil {
		return nil, err
	}
	if p.keyID != tk.id {
		return nil, gateway.WrapError(gateway.ENotFound, ErrKeyNotFound,
			"%s.%s was sealed with tenant key %s, which is no longer held", ad.Table, ad.Column, p.keyID)
	}
	pt, err := open(tk.data, p, tenant, ad)
	if err != nil {
		return nil, errDecrypt(ad.Table+"."+ad.Column, err)
	}
	return pt, nil
}

// Forget drops cached keys: the subject's data key, or with subject "" the tenant key and every
// cached data key of the tenant. Call it after destroying the stored keys (erasure) so nothing
// in memory can still open the data; a load in flight at the time does not refill the cache.
func (k *Keyring) Forget(tenant, subject string) {
	k.epoch.Add(1)
	if subject == "" {
		k.tenants.delete(tenant)
		k.subjects.deletePrefix(tenant + "\x00")
		return
	}
	k.subjects.delete(tenant + "\x00" + subject)
}

// RewrapTenantKey returns wk wrapped by the primary master key (rotation), and whether it changed:
// a key already wrapped by the primary comes back as it is. The tenant key itself, and so
// everything under it, stays the same.
func (k *Keyring) RewrapTenantKey(tenant string, wk WrappedKey) (WrappedKey, bool, error) {
	if wk.KeyID == k.PrimaryKeyID() {
		return wk, false, nil
	}
	raw, err := k.unwrapTenantRaw(tenant, wk)
	if err != nil {
		return WrappedKey{}, false, err
	}
	return k.wrapTenant(tenant, raw), true, nil
}

func (k *Keyring) wrapTenant(tenant string, raw []byte) WrappedKey {
	id := k.masters[0].ID
	return WrappedKey{KeyID: id, Wrapped: seal(k.byID[id], id, tenant, AD{Table: tenantKeyTable, Row: tenant, Column: keyColumn}, raw)}
}

func (k *Keyring) unwrapTenantRaw(tenant string, wk WrappedKey) ([]byte, error) {
	p, err := parse(wk.Wrapped)
	if err != nil {
		return nil, gateway.WrapError(gateway.EInternal, err, "tenant key of %s is malformed", tenant)
	}
	if p.keyID != wk.KeyID {
		return nil, gateway.Errorf(gateway.EInternal, "tenant key of %s: stored under key id %s but sealed by %s", tenant, wk.KeyID, p.keyID)
	}
	aead, ok := k.byID[p.keyID]
	if !ok {
		return nil, gateway.WrapError(gateway.EInternal, ErrKeyNotFound,
			"tenant key of %s is wrapped by master key %s, which is not configured (add it to the master keys, after the primary)", tenant, p.keyID)
	}
	raw, err := open(aead, p, tenant, AD{Table: tenantKeyTable, Row: tenant, Column: keyColumn})
	if err != nil {
		return nil, gateway.WrapError(gateway.EInternal, err, "tenant key of %s does not unwrap with master key %s", tenant, p.keyID)
	}
	if len(raw) != KeySize {
		return nil, gateway.Errorf(gateway.EInternal, "tenant key of %s has %d bytes", tenant, len(raw))
	}
	return raw, nil
}

func newTenantKey(raw []byte) *tenantKey {
	tk := &tenantKey{
		id:    fingerprint("tk_", raw),
		wrap:  newAEAD(derive(raw, infoWrap)),
		data:  newAEAD(derive(raw, infoTenant)),
		index: derive(raw, infoIndex),
	}
	tk.macs.New = func() any { return hmac.New(sha256.New, tk.index) }
	return tk
}

func isNotFound(err error) bool { return gateway.ErrorCode(err) == gateway.ENotFound }

// tenantKey returns the tenant's unwrapped key, from the cache or the key store; when create is
// set and there is none, it makes one.
func (k *Keyring) tenantKey(ctx context.Context, tenant string, create bool) (*tenantKey, error) {
	if tenant == "" {
		return nil, gateway.Errorf(gateway.EInternal, "crypt: empty tenant")
	}
	if tk, ok := k.tenants.get(tenant); ok {
		return tk, nil
	}
	fk := tenant
	if create {
		fk = "+" + tenant
	}
	return k.tflight.do(ctx, fk, func(ctx context.Context) (*tenantKey, error) {
		if tk, ok := k.tenants.get(tenant); ok {
			return tk, nil
		}
		epoch := k.epoch.Load()
		wk, err := k.ks.TenantKey(ctx, tenant)
		if err != nil && isNotFound(err) {
			if !create {
				return nil, gateway.WrapError(gateway.ENotFound, ErrKeyNotFound, "tenant %s has no key (erased or never used)", tenant)
			}
			raw := make([]byte, KeySize)
			rand.Read(raw)
			wk, err = k.ks.CreateTenantKey(ctx, tenant, k.wrapTenant(tenant, raw))
		}
		if err != nil {
			return nil, fmt.Errorf("crypt: tenant key of %s: %w", tenant, err)
		}
		raw, err := k.unwrapTenantRaw(tenant, wk)
		if err != nil {
			return nil, err
		}
		tk := newTenantKey(raw)
		if k.epoch.Load() == epoch {
			k.tenants.put(tenant, tk)
		}
		return tk, nil
	})
}

func (k *Keyring) subjectKey(ctx context.Context, tenant, subject string, create bool) (*subjectKey, error) {
	ck := tenant + "\x00" + subject
	if sk, ok := k.subjects.get(ck); ok {
		return sk, nil
	}
	fk := ck
	if create {
		fk = "+" + ck
	}
	return k.sflight.do(ctx, fk, func(ctx context.Context) (*subjectKey, error) {
		if sk, ok := k.subjects.get(ck); ok {
			return sk, nil
		}
		epoch := k.epoch.Load()
		tk, err := k.tenantKey(ctx, tenant, create)
		if err != nil {
			return nil, err
		}
		ad := AD{Table: subjectKeyTable, Row: subject, Column: keyColumn}
		wk, err := k.ks.SubjectKey(ctx, tenant, subject)
		if err != nil && isNotFound(err) {
			if !create {
				return nil, gateway.WrapError(gateway.ESubjectErased, ErrKeyNotFound, "no data key for subject %s (erased)", ShortSubject(subject))
			}
			raw := make([]byte, KeySize)
			rand.Read(raw)
			wk, err = k.ks.CreateSubjectKey(ctx, tenant, subject, WrappedKey{KeyID: tk.id, Wrapped: seal(tk.wrap, tk.id, tenant, ad, raw)})
		}
		if err != nil {
			return nil, fmt.Errorf("crypt: data key of %s: %w", ShortSubject(subject), err)
		}
		p, err := parse(wk.Wrapped)
		if err != nil {
			return nil, gateway.WrapError(gateway.EInternal, err, "data key of %s is malformed", ShortSubject(subject))
		}
		if p.keyID != tk.id {
			return nil, gateway.WrapError(gateway.EInternal, ErrKeyNotFound,
				"data key of %s is wrapped by tenant key %s, not the tenant's key %s", ShortSubject(subject), p.keyID, tk.id)
		}
		raw, err := open(tk.wrap, p, tenant, ad)
		if err != nil || len(raw) != KeySize {
			return nil, gateway.WrapError(gateway.EInternal, errors.Join(err, ErrDecrypt), "data key of %s does not unwrap", ShortSubject(subject))
		}
		sk := &subjectKey{id: fingerprint("dk_", raw), aead: newAEAD(raw)}
		if k.epoch.Load() == epoch {
			k.subjects.put(ck, sk)
		}
		return sk, nil
	})
}

// cached reports how many tenant and subject keys are cached (tests, metrics).
func (k *Keyring) cached() (tenants, subjects int) { return k.tenants.len(), k.subjects.len() }
