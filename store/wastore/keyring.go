package wastore

import (
	"context"

	"github.com/switchboard-gateway/switchboard/store/crypt"
)

// KeyringSealer adapts the keyring to Sealer: tenant-level sealing with wastore's associated data,
// and the tenant's blind index.
func KeyringSealer(k *crypt.Keyring) Sealer { return keyringSealer{k} }

type keyringSealer struct{ k *crypt.Keyring }

func (s keyringSealer) SealTenant(ctx context.Context, tenant string, ad AD, plaintext []byte) ([]byte, error) {
	return s.k.SealTenant(ctx, tenant, crypt.AD(ad), plaintext)
}

func (s keyringSealer) OpenTenant(ctx context.Context, tenant string, ad AD, ciphertext []byte) ([]byte, error) {
	return s.k.OpenTenant(ctx, tenant, crypt.AD(ad), ciphertext)
}

func (s keyringSealer) BlindIndex(ctx context.Context, tenant, identifier string) (string, error) {
	return s.k.BlindIndex(ctx, tenant, identifier)
}
