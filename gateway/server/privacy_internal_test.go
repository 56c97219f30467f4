package server

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.mau.fi/whatsmeow/types"

	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/pipeline/privacy"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/wastore"
)

// TestErasureRemovesWhatsAppSessions: erasing a phone number through the gateway's privacy
// service removes its Signal session and LID mapping from the device store of every whatsmeow
// account of the tenant, and the job's report counts them; another contact's stay.
func TestErasureRemovesWhatsAppSessions(t *testing.T) {
	ctx := context.Background()
	src := strings.ReplaceAll(`
data_dir: DATA
tenants:
  - id: demo
    channels:
      whatsapp:
        accounts: [{name: sales, driver: whatsmeow}, {name: support, driver: whatsmeow}, {name: test, driver: sandbox}]
`, "DATA", t.TempDir())
	cfg, err := config.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	db, kr, err := OpenStore(ctx, cfg, true, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := &Server{cfg: cfg, db: db, keyring: kr}
	if err := wastore.Migrate(ctx, db.SQL(), wastore.SQLite); err != nil {
		t.Fatal(err)
	}
	containers := map[string]*wastore.Container{}
	for _, account := range []string{"sales", "support"} {
		c, err := wastore.New(db.SQL(), wastore.SQLite, wastore.KeyringSealer(kr), "demo", account, wastore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		containers[account] = c
		for _, user := range []string{"4915112345678", "4915112345679"} {
			if err := c.PutSession(ctx, user+":0", []byte("session")); err != nil {
				t.Fatal(err)
			}
			lid := types.JID{User: "3" + user[4:], Server: types.HiddenUserServer}
			if err := c.LIDs().PutLIDMapping(ctx, lid, types.JID{User: user, Server: types.DefaultUserServer}); err != nil {
				t.Fatal(err)
			}
		}
	}

	svc, err := privacy.New(privacy.Config{Store: db, Indexer: kr, Contacts: waContacts{s}})
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := gateway.ParseAddress(gateway.WhatsApp, "+4915112345678")
	job, err := svc.RequestErasure(ctx, "demo", store.Actor{KeyID: "key_1"}, subject)
	if err != nil {
		t.Fatal(err)
	}
	if worked, err := svc.RunOnce(ctx); !worked || err != nil {
		t.Fatalf("RunOnce: %v %v", worked, err)
	}
	if job, err = svc.Erasure(ctx, "demo", job.ID); err != nil || job.State != store.ErasureDone || job.Report[privacy.ReportChannelState] != 4 {
		t.Fatalf("job %+v %v", job, err)
	}
	for account, c := range containers {
		if s, _ := c.GetSession(ctx, "4915112345678:0"); s != nil {
			t.Errorf("%s: the erased contact's session survived", account)
		}
		if s, _ := c.GetSession(ctx, "4915112345679:0"); s == nil {
			t.Errorf("%s: another contact's session was erased", account)
		}
	}
}
