// Package crypt is Switchboard's keyring (DESIGN.md §3.6): master keys (KEKs) from a file or the
// environment wrap per-tenant keys, which wrap per-subject data keys (DEKs). Data is sealed with
// AES-256-GCM under associated data that binds each ciphertext to tenant | table | row | column,
// identifiers are looked up through a blind index (HMAC-SHA-256 under a per-tenant index key), and
// erasing a subject or tenant is a matter of destroying its key (crypto-shredding).
//
// Wrapped keys live in a KeyStore (implemented by store/sql); unwrapped keys are cached in memory,
// bounded, and dropped by Forget.
package crypt

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// KeySize is the size of every key: master keys, tenant keys, data keys (AES-256).
const KeySize = 32

// MasterKey is a key-encryption key with a stable id. Ids are written into everything a master
// key wraps, so rotation can tell which key opens what.
type MasterKey struct {
	ID  string
	Key []byte // KeySize bytes
}

// String never shows the key material.
func (m MasterKey) String() string { return "MasterKey(" + m.ID + ")" }

// GoString never shows the key material.
func (m MasterKey) GoString() string { return m.String() }

// ParseMasterKeys parses master keys from text: one "id:base64key" per line, blank lines and
// '#' comments ignored. The first key is the primary: it wraps new tenant keys. The others are
// kept to open what older keys wrapped (rotation).
func ParseMasterKeys(s string) ([]MasterKey, error) {
	var keys []MasterKey
	seen := map[string]bool{}
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n := i + 1
		id, b64, ok := strings.Cut(line, ":")
		id, b64 = strings.TrimSpace(id), strings.TrimSpace(b64)
		if !ok || id == "" || b64 == "" {
			return nil, gateway.Errorf(gateway.EInvalidField, "master keys line %d: want id:base64key", n)
		}
		if !validKeyID(id) {
			return nil, gateway.Errorf(gateway.EInvalidField, "master keys line %d: key id %q: use letters, digits, '_', '-' and '.', at most 64", n, id)
		}
		if seen[id] {
			return nil, gateway.Errorf(gateway.EInvalidField, "master keys line %d: key id %q appears twice", n, id)
		}
		key, err := decodeKey(b64)
		if err != nil {
			// Never echo the key text: it may be a real key with a typo.
			return nil, gateway.Errorf(gateway.EInvalidField, "master keys line %d: key %s: not valid base64", n, id)
		}
		if len(key) != KeySize {
			return nil, gateway.Errorf(gateway.EInvalidField, "master keys line %d: key %s is %d bytes, want %d", n, id, len(key), KeySize)
		}
		seen[id] = true
		keys = append(keys, MasterKey{ID: id, Key: key})
	}
	if len(keys) == 0 {
		return nil, gateway.Errorf(gateway.EMissingField, "no master keys found: want lines of id:base64key (32 bytes)")
	}
	return keys, nil
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

func validKeyID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}

// LoadMasterKeys reads a master key file (see ParseMasterKeys). It refuses a file that group or
// others may read or write: chmod 600 it.
func LoadMasterKeys(path string) ([]MasterKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, gateway.WrapError(gateway.ENotFound, err, "master key file %s does not exist", path)
		}
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, gateway.Errorf(gateway.EInvalidField, "master key file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, gateway.Errorf(gateway.EForbidden, "master key file %s has mode %04o: group and others must have no access (chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	keys, err := ParseMasterKeys(string(data))
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return keys, nil
}

// NewMasterKey returns a fresh random master key with an id like mk_20261122_3f9a (the date of
// creation and a random suffix, so two keys made on one day differ).
func NewMasterKey(now time.Time) MasterKey {
	key := make([]byte, KeySize)
	rand.Read(key)
	suffix := make([]byte, 2)
	rand.Read(suffix)
	return MasterKey{ID: "mk_" + now.UTC().Format("20060102") + "_" + hex.EncodeToString(suffix), Key: key}
}

// FormatMasterKey returns the "id:base64key" line of k, as master key files hold it.
func FormatMasterKey(k MasterKey) string {
	return k.ID + ":" + base64.StdEncoding.EncodeToString(k.Key)
}

// GenerateMasterKeyFile writes a new master key file at path with mode 0600 and returns its key.
// It never overwrites an existing file.
func GenerateMasterKeyFile(path string) (MasterKey, error) {
	k := NewMasterKey(time.Now())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return MasterKey{}, gateway.WrapError(gateway.EConflict, err, "master key file %s already exists; not overwriting it", path)
		}
		return MasterKey{}, fmt.Errorf("create master key file: %w", err)
	}
	text := "# Switchboard master keys: one id:base64key per line, the first is primary.\n" +
		"# Losing this file makes every stored message unreadable. Keep a copy somewhere safe.\n" +
		FormatMasterKey(k) + "\n"
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		os.Remove(path)
		return MasterKey{}, fmt.Errorf("write master key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return MasterKey{}, fmt.Errorf("sync master key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return MasterKey{}, fmt.Errorf("close master key file: %w", err)
	}
	return k, nil
}
