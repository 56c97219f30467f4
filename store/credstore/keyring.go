package credstore

import (
	"context"

	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// Keyring adapts the gateway's keyring to a Sealer: blobs are sealed with the tenant key.
func Keyring(k *crypt.Keyring) Sealer { return keyringSealer{k} }

type keyringSealer struct{ k *crypt.Keyring }

func (s keyringSealer) SealTenant(ctx context.Context, tenant string, ad AD, plaintext []byte) ([]byte, error) {
	return s.k.SealTenant(ctx, tenant, crypt.AD(ad), plaintext)
}

func (s keyringSealer) OpenTenant(ctx context.Context, tenant string, ad AD, ciphertext []byte) ([]byte, error) {
	return s.k.OpenTenant(ctx, tenant, crypt.AD(ad), ciphertext)
}
