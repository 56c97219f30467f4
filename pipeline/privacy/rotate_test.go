package privacy

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

// TestRotationUnderLoad: 1,000 sends to 20 tenants while the tenant keys are rewrapped under a
// new primary master key; afterwards nothing depends on the old master key and every message
// opens with the new key alone.
func TestRotationUnderLoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := storesql.Config{Driver: storesql.SQLite, DSN: filepath.Join(dir, "switchboard.db")}
	oldKey := crypt.MasterKey{ID: "mk_old", Key: bytes.Repeat([]byte{1}, crypt.KeySize)}
	newKey := crypt.MasterKey{ID: "mk_new", Key: bytes.Repeat([]byte{2}, crypt.KeySize)}
	const tenants, sends = 20, 1000
	tenant := func(i int) string { return fmt.Sprintf("t%02d", i%tenants) }

	db, _, err := storesql.OpenEncrypted(ctx, cfg, []crypt.MasterKey{oldKey}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var ids []struct{ tenant, id, text string }
	var mu sync.Mutex
	sendTo := func(db *storesql.DB, i int) error {
		text := fmt.Sprintf("message %d", i)
		m := &gateway.Message{Tenant: tenant(i), Channel: gateway.WhatsApp, Account: "sales",
			Peer: gateway.Address{Channel: gateway.WhatsApp, Kind: gateway.KindPhone, Value: fmt.Sprintf("+49151123%05d", i%50)}, Content: gateway.Content{Text: text}}
		if _, _, _, err := db.CreateMessage(ctx, store.NewMessage{Message: m}); err != nil {
			return err
		}
		mu.Lock()
		ids = append(ids, struct{ tenant, id, text string }{m.Tenant, m.ID, text})
		mu.Unlock()
		return nil
	}
	for i := range tenants {
		if err := sendTo(db, i); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	// Every replica now has the new key first and the old one after it.
	db, kr, err := storesql.OpenEncrypted(ctx, cfg, []crypt.MasterKey{newKey, oldKey}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := tenants + w; i < tenants+sends; i += 8 {
				if err := sendTo(db, i); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	rotated, err := db.RotateTenantKeys(ctx, kr)
	wg.Wait()
	if err != nil || rotated != tenants {
		t.Fatalf("rotated %d of %d tenant keys: %v", rotated, tenants, err)
	}
	if n, err := db.TenantKeysUnder(ctx, oldKey.ID); err != nil || n != 0 {
		t.Fatalf("%d tenant keys still under the old master key (%v): not retirable", n, err)
	}
	db.Close()

	db, _, err = storesql.OpenEncrypted(ctx, cfg, []crypt.MasterKey{newKey}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if len(ids) != tenants+sends {
		t.Fatalf("%d messages stored", len(ids))
	}
	for _, m := range ids {
		got, err := db.Message(ctx, m.tenant, m.id, true)
		if err != nil || got.Content.Text != m.text {
			t.Fatalf("message %s of %s after rotation: %v", m.id, m.tenant, err)
		}
	}
}
