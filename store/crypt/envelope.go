package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// Ciphertext layout, version 1:
//
//	version (1 byte) | len(keyID) (1 byte) | keyID | nonce (12 bytes) | AES-256-GCM ciphertext and tag
//
// The header (version and key id) is authenticated too: it is the start of the associated data,
// followed by length-prefixed tenant, table, row and column.
const (
	version1  = 1
	nonceSize = 12
	tagSize   = 16
)

// Overhead is how many bytes sealing adds to a plaintext, not counting the key id it carries
// (a ciphertext is len(plaintext) + Overhead + len(keyID) bytes).
const Overhead = 2 + nonceSize + tagSize

// ErrKeyNotFound is wrapped by errors about a key that is not there: never created, erased, or
// not the key the ciphertext was sealed with (the subject was erased and has a new key since).
var ErrKeyNotFound = errors.New("crypt: key not found")

// ErrDecrypt is wrapped by errors about a ciphertext that does not open: tampered with, moved to
// another row or column, or sealed for another tenant.
var ErrDecrypt = errors.New("crypt: ciphertext does not authenticate")

// AD is the associated data of a ciphertext: where it is stored. Together with the tenant it
// binds the ciphertext to one cell, so a ciphertext copied to another row, column or tenant does
// not open.
type AD struct {
	Table, Row, Column string
}

func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		// Only a wrong key size gets here, and every key is KeySize bytes by construction.
		panic("crypt: " + err.Error())
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		panic("crypt: " + err.Error())
	}
	return gcm
}

func appendLP(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func header(keyID string) []byte {
	h := make([]byte, 0, 2+len(keyID))
	h = append(h, version1, byte(len(keyID)))
	return append(h, keyID...)
}

func additionalData(hdr []byte, tenant string, ad AD) []byte {
	b := make([]byte, 0, len(hdr)+len(tenant)+len(ad.Table)+len(ad.Row)+len(ad.Column)+8)
	b = append(b, hdr...)
	b = appendLP(b, tenant)
	b = appendLP(b, ad.Table)
	b = appendLP(b, ad.Row)
	return appendLP(b, ad.Column)
}

// seal encrypts plaintext under aead, labelled with keyID.
func seal(aead cipher.AEAD, keyID, tenant string, ad AD, plaintext []byte) []byte {
	hdr := header(keyID)
	out := make([]byte, len(hdr)+nonceSize, len(hdr)+nonceSize+len(plaintext)+tagSize)
	copy(out, hdr)
	nonce := out[len(hdr):]
	rand.Read(nonce)
	return aead.Seal(out, nonce, plaintext, additionalData(hdr, tenant, ad))
}

// parsed is a ciphertext split into its parts.
type parsed struct {
	hdr, nonce, body []byte
	keyID            string
}

func parse(ct []byte) (parsed, error) {
	if len(ct) < 2 {
		return parsed{}, fmt.Errorf("%w: too short", ErrDecrypt)
	}
	if ct[0] != version1 {
		return parsed{}, fmt.Errorf("%w: unknown version %d", ErrDecrypt, ct[0])
	}
	n := int(ct[1])
	if len(ct) < 2+n+nonceSize+tagSize {
		return parsed{}, fmt.Errorf("%w: too short", ErrDecrypt)
	}
	return parsed{
		hdr:   ct[:2+n],
		keyID: string(ct[2 : 2+n]),
		nonce: ct[2+n : 2+n+nonceSize],
		body:  ct[2+n+nonceSize:],
	}, nil
}

// KeyIDOf returns the id of the key a ciphertext or wrapped key was sealed with, without opening
// it: the master key id of a wrapped tenant key, the tenant key id of a wrapped data key, the data
// key id of sealed data.
func KeyIDOf(ct []byte) (string, error) {
	p, err := parse(ct)
	if err != nil {
		return "", err
	}
	return p.keyID, nil
}

func open(aead cipher.AEAD, p parsed, tenant string, ad AD) ([]byte, error) {
	pt, err := aead.Open(nil, p.nonce, p.body, additionalData(p.hdr, tenant, ad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// HKDF info strings: one purpose each, so no two uses share a key.
const (
	infoKeyID     = "switchboard/v1/key-id"
	infoWrap      = "switchboard/v1/subject-key-wrap"
	infoTenant    = "switchboard/v1/tenant-data"
	infoIndex     = "switchboard/v1/blind-index"
	infoDerivePfx = "switchboard/v1/derive/"
)

func derive(secret []byte, info string) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, info, KeySize)
	if err != nil {
		panic("crypt: hkdf: " + err.Error()) // only for absurd lengths
	}
	return k
}

// fingerprint names a key without revealing anything about it.
func fingerprint(prefix string, key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(infoKeyID))
	return prefix + hex.EncodeToString(m.Sum(nil)[:8])
}

func errDecrypt(what string, err error) error {
	return gateway.WrapError(gateway.EInternal, err, "%s does not decrypt", what)
}
