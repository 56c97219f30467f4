package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// APIKeySecretPrefix starts every API key secret, so a leaked key is recognisable (secret
// scanners) and a wrong credential is refused without a store lookup.
const APIKeySecretPrefix = "sbk_"

// keyAlphabet is lower-case base32 (RFC 4648 letters), easy to read aloud and to double-click.
const keyAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

// apiKeySecretLen is len(sbk_) + 32 random bytes in unpadded base32.
const apiKeySecretLen = len(APIKeySecretPrefix) + 52

// maxSecretLen bounds what the auth path hashes and looks up.
const maxSecretLen = 256

// maxCachedKeys bounds the key cache.
const maxCachedKeys = 10000

// NewAPIKeySecret returns a new API key secret: "sbk_" and 32 random bytes (256 bits) in
// lower-case unpadded base32, 56 characters in all. Show it once; store only its hash
// (store.Tenants.CreateAPIKey).
func NewAPIKeySecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return APIKeySecretPrefix + base32.NewEncoding(keyAlphabet).WithPadding(base32.NoPadding).EncodeToString(b[:])
}

// ValidAPIKeySecret reports whether s has the form NewAPIKeySecret produces.
func ValidAPIKeySecret(s string) bool {
	if len(s) != apiKeySecretLen || !strings.HasPrefix(s, APIKeySecretPrefix) {
		return false
	}
	for _, c := range s[len(APIKeySecretPrefix):] {
		if !strings.ContainsRune(keyAlphabet, c) {
			return false
		}
	}
	return true
}

// APIKeyDisplayPrefix is the part of a secret kept in clear (gateway.APIKey.Prefix) so a person
// can tell keys apart in a list: "sbk_" and 8 more characters, 40 bits, not enough to guess
// the rest.
func APIKeyDisplayPrefix(secret string) string {
	n := len(APIKeySecretPrefix) + 8
	if len(secret) < n {
		return secret
	}
	return secret[:n]
}

// authenticate resolves the bearer token to an API key. Missing, malformed and unknown keys
// are all unauthorized; a failing key store is its own error (503/500), so an outage is not
// mistaken for a bad key.
func (s *Server) authenticate(r *http.Request) (gateway.APIKey, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return gateway.APIKey{}, gateway.Errorf(gateway.EUnauthorized, "an API key is required: send Authorization: Bearer sbk_…")
	}
	scheme, secret, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return gateway.APIKey{}, gateway.Errorf(gateway.EUnauthorized, "the Authorization header must be Bearer <api key>")
	}
	secret = strings.TrimSpace(secret)
	if !strings.HasPrefix(secret, APIKeySecretPrefix) || len(secret) > maxSecretLen {
		return gateway.APIKey{}, gateway.Errorf(gateway.EUnauthorized, "invalid API key")
	}
	sum := sha256.Sum256([]byte(secret))
	now := s.now()
	if k, ok := s.keys.get(sum, now); ok {
		return k, nil
	}
	k, err := s.deps.Keys.APIKeyBySecret(r.Context(), secret)
	if err != nil {
		if gateway.ErrorCode(err) == gateway.ENotFound {
			return gateway.APIKey{}, gateway.Errorf(gateway.EUnauthorized, "invalid API key")
		}
		return gateway.APIKey{}, err
	}
	if k.Tenant == "" {
		return gateway.APIKey{}, gateway.Errorf(gateway.EInternal, "API key %s has no tenant", k.ID)
	}
	s.keys.put(sum, k, now)
	return k, nil
}

// keyCache remembers resolved API keys for a short time, keyed by the SHA-256 of the secret
// (never the secret itself), so the hot path does not hit the store on every request. A revoked
// key keeps working for at most the TTL.
type keyCache struct {
	ttl time.Duration // <= 0: disabled
	max int

	mu sync.RWMutex
	m  map[[sha256.Size]byte]cachedKey
}

type cachedKey struct {
	key     gateway.APIKey
	expires time.Time
}

func newKeyCache(ttl time.Duration, max int) *keyCache {
	return &keyCache{ttl: ttl, max: max, m: make(map[[sha256.Size]byte]cachedKey)}
}

func (c *keyCache) get(sum [sha256.Size]byte, now time.Time) (gateway.APIKey, bool) {
	if c.ttl <= 0 {
		return gateway.APIKey{}, false
	}
	c.mu.RLock()
	e, ok := c.m[sum]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return gateway.APIKey{}, false
	}
	return e.key, true
}

// ForgetTenantKeys drops the tenant's keys from the cache (its keys were deleted by a tenant
// erasure), so they stop working at once in this process; other replicas' caches expire.
func (s *Server) ForgetTenantKeys(tenant string) {
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	for sum, e := range s.keys.m {
		if e.key.Tenant == tenant {
			delete(s.keys.m, sum)
		}
	}
}

func (c *keyCache) put(sum [sha256.Size]byte, k gateway.APIKey, now time.Time) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for s, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, s)
			}
		}
		// Still full: drop arbitrary entries; they are only a cache.
		for s := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, s)
		}
	}
	c.m[sum] = cachedKey{key: k, expires: now.Add(c.ttl)}
}
