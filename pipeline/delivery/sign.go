package delivery

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// SecretPrefix starts every endpoint secret, as in the Standard Webhooks specification.
const SecretPrefix = "whsec_"

// Secret is the key of one endpoint secret (the bytes after whsec_, base64-decoded).
type Secret []byte

// ParseSecret decodes "whsec_<base64>". The key must be 24 to 64 bytes.
func ParseSecret(s string) (Secret, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), SecretPrefix)
	if !ok {
		return nil, gateway.FieldErrorf(gateway.EInvalidField, "secret", "a webhook secret starts with %s", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, gateway.FieldErrorf(gateway.EInvalidField, "secret", "a webhook secret is %s followed by base64", SecretPrefix)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, gateway.FieldErrorf(gateway.EInvalidField, "secret", "a webhook secret holds 24 to 64 bytes, not %d", len(key))
	}
	return Secret(key), nil
}

// NewSecret returns a fresh random secret in its whsec_ form.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// Sign returns the webhook-signature header value: one "v1,<base64 HMAC-SHA256>" per secret,
// separated by spaces, each over "<id>.<unix seconds>.<body>". Two active secrets (a rotation)
// give two signatures; a receiver accepts the message when any of them verifies.
func Sign(secrets []Secret, id string, ts time.Time, body []byte) string {
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		mac := hmac.New(sha256.New, s)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(strconv.FormatInt(ts.Unix(), 10)))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}
