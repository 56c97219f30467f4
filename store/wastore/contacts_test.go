package wastore

import (
	"context"
	"testing"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
)

// TestContactNames: push and business names report whether they changed and from what; the
// batch updates set names and redacted phones on every contact they list.
func TestContactNames(t *testing.T) {
	ctx := context.Background()
	for _, e := range engines(t) {
		t.Run(e.name, func(t *testing.T) {
			_, c := e.container(t)
			ann := types.JID{User: "4915100000001", Server: types.DefaultUserServer}
			bob := types.JID{User: "2000000002", Server: types.HiddenUserServer}
			for _, tt := range []struct {
				name     string
				put      func(context.Context, types.JID, string) (bool, string, error)
				value    string
				changed  bool
				previous string
			}{
				{"push name set", c.PutPushName, "Ann", true, ""},
				{"push name again", c.PutPushName, "Ann", false, ""},
				{"push name changed", c.PutPushName, "Annie", true, "Ann"},
				{"business name set", c.PutBusinessName, "Ann's Shop", true, ""},
				{"business name again", c.PutBusinessName, "Ann's Shop", false, ""},
			} {
				changed, previous, err := tt.put(ctx, ann, tt.value)
				if err != nil || changed != tt.changed || previous != tt.previous {
					t.Errorf("%s: changed %v previous %q err %v, want %v %q", tt.name, changed, previous, err, tt.changed, tt.previous)
				}
			}
			if err := c.PutAllContactNames(ctx, []store.ContactEntry{{JID: ann, FirstName: "Ann", FullName: "Ann Example"}, {JID: bob, FullName: "Bob"}}); err != nil {
				t.Fatal(err)
			}
			if err := c.PutManyRedactedPhones(ctx, []store.RedactedPhoneEntry{{JID: bob, RedactedPhone: "+49∙∙∙∙∙∙∙∙02"}}); err != nil {
				t.Fatal(err)
			}
			for _, tt := range []struct {
				who  types.JID
				want types.ContactInfo
			}{
				{ann, types.ContactInfo{Found: true, FirstName: "Ann", FullName: "Ann Example", PushName: "Annie", BusinessName: "Ann's Shop"}},
				{bob, types.ContactInfo{Found: true, FullName: "Bob", RedactedPhone: "+49∙∙∙∙∙∙∙∙02"}},
			} {
				if got, err := c.GetContact(ctx, tt.who); err != nil || got != tt.want {
					t.Errorf("contact %s = %+v, %v; want %+v", tt.who, got, err, tt.want)
				}
			}
		})
	}
}
