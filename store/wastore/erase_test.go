package wastore

import (
	"context"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
)

// TestEraseContact: erasing a phone number removes its sessions and identity keys (under the
// number and under its LID), sender keys, contact entry, chat settings, message secrets, privacy
// token and LID mapping, and nothing of another contact.
func TestEraseContact(t *testing.T) {
	ctx := context.Background()
	for _, e := range engines(t) {
		t.Run(e.name, func(t *testing.T) {
			db, c := e.container(t)
			fill := func(phone, lidUser string) (types.JID, types.JID) {
				pn := types.JID{User: phone, Server: types.DefaultUserServer}
				lid := types.JID{User: lidUser, Server: types.HiddenUserServer}
				steps := []func() error{
					func() error { return c.PutSession(ctx, pn.SignalAddressUser()+":0", []byte("s")) },
					func() error { return c.PutSession(ctx, lid.SignalAddressUser()+":3", []byte("s")) },
					func() error { return c.PutIdentity(ctx, pn.SignalAddressUser()+":0", [32]byte{1}) },
					func() error {
						return c.PutSenderKey(ctx, "120363000000000001@g.us", pn.SignalAddressUser()+":0", []byte("sk"))
					},
					func() error { _, _, err := c.PutPushName(ctx, pn, "Name"); return err },
					func() error { return c.PutMutedUntil(ctx, pn, time.Now().Add(time.Hour)) },
					func() error { return c.PutMessageSecret(ctx, pn, pn, "3EB0"+phone, []byte("secret")) },
					func() error {
						return c.PutPrivacyTokens(ctx, store.PrivacyToken{User: pn, Token: []byte("tok"), Timestamp: time.Now()})
					},
					func() error { return c.LIDs().PutLIDMapping(ctx, lid, pn) },
				}
				for i, step := range steps {
					if err := step(); err != nil {
						t.Fatalf("fill %s step %d: %v", phone, i, err)
					}
				}
				return pn, lid
			}
			alicePN, aliceLID := fill("4915100000001", "3000000001")
			bobPN, _ := fill("4915100000002", "3000000002")
			before := map[string]int{}
			for _, table := range deviceTables {
				var n int
				if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
					t.Fatal(err)
				}
				before[table] = n
			}

			n, err := c.EraseContact(ctx, "+"+alicePN.User)
			if err != nil || n != 9 {
				t.Fatalf("erased %d rows: %v", n, err)
			}
			for table, was := range before {
				var now int
				if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&now); err != nil {
					t.Fatal(err)
				}
				if now != was/2 {
					t.Errorf("%s: %d rows, was %d (want only the other contact's)", table, now, was)
				}
			}
			if lid, _ := c.LIDs().GetLIDForPN(ctx, alicePN); !lid.IsEmpty() {
				t.Error("the LID mapping survived in the cache")
			}
			if s, _ := c.GetSession(ctx, aliceLID.SignalAddressUser()+":3"); s != nil {
				t.Error("the LID session survived")
			}
			if ci, _ := c.GetContact(ctx, alicePN); ci.Found {
				t.Error("the contact survived in the cache")
			}
			if ci, _ := c.GetContact(ctx, bobPN); !ci.Found || ci.PushName != "Name" {
				t.Errorf("the other contact: %+v", ci)
			}
			if _, err := c.EraseContact(ctx, "120363000000000001@g.us"); err == nil {
				t.Error("a group JID was taken for a phone number")
			}
		})
	}
}
