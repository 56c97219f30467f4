package sql

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

func TestContactTags(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		ann, bob := mustAddr(t, gateway.WhatsApp, "+4915112345678"), mustAddr(t, gateway.WhatsApp, "+4915112345679")
		if err := e.db.UpdateTags(ctx, "acme", ann, []string{"vip", "reminders", "vip"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := e.db.UpdateTags(ctx, "acme", ann, []string{"new"}, []string{"vip", "absent"}); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			tenant string
			who    gateway.Address
			want   []string
		}{
			{"acme", ann, []string{"new", "reminders"}},
			{"acme", bob, []string{}},
			{"other", ann, []string{}}, // per tenant
		} {
			got, err := e.db.Tags(ctx, tt.tenant, tt.who)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("%s %s: tags %v, want %v", tt.tenant, tt.who.Masked(), got, tt.want)
			}
		}
		// Keyed by the blind index: the number itself is in no column.
		if n := count(t, e.db, "SELECT COUNT(*) FROM contact_tags WHERE subject LIKE '%4915112345678%'"); n != 0 {
			t.Fatalf("%d tag rows hold the number", n)
		}
	})
}

// TestErasureDeletesTags: erasing a subject deletes its tags (and only its tags); erasing the
// tenant deletes every automation row of the tenant.
func TestErasureDeletesTags(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		ann, bob := mustAddr(t, gateway.WhatsApp, "+4915112345678"), mustAddr(t, gateway.WhatsApp, "+4915112345679")
		for _, a := range []gateway.Address{ann, bob} {
			if err := e.db.UpdateTags(ctx, "acme", a, []string{"vip", "reminders"}, nil); err != nil {
				t.Fatal(err)
			}
		}
		index, err := e.kr.BlindIndex(ctx, "acme", ann.String())
		if err != nil {
			t.Fatal(err)
		}
		job, err := e.db.CreateErasure(ctx, "acme", index, "cli")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.db.EraseSubjectRows(ctx, "acme", index, job.ID); err != nil {
			t.Fatal(err)
		}
		if tags, _ := e.db.Tags(ctx, "acme", ann); len(tags) != 0 {
			t.Fatalf("erased subject still tagged %v", tags)
		}
		if tags, _ := e.db.Tags(ctx, "acme", bob); len(tags) != 2 {
			t.Fatalf("other subject's tags %v", tags)
		}
		done, err := e.db.Erasure(ctx, "acme", job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if done.Report[ReportTags] != 2 {
			t.Fatalf("report %v: want %s 2", done.Report, ReportTags)
		}

		if err := e.db.SetFired(ctx, "acme", "daily", time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := e.db.MarkActionDone(ctx, "acme", "automation:x:r:0", time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.EraseTenant(ctx, "acme", ""); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"contact_tags", "automation_fired", "automation_actions"} {
			if n := count(t, e.db, "SELECT COUNT(*) FROM "+table+" WHERE tenant = 'acme'"); n != 0 {
				t.Errorf("%s: %d rows left after the tenant erasure", table, n)
			}
		}
	})
}

func TestFiredAtAndActions(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		if _, ok, err := e.db.LastFired(ctx, "acme", "daily"); err != nil || ok {
			t.Fatalf("never fired: ok %v err %v", ok, err)
		}
		t1 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
		for _, at := range []time.Time{t1, t1.Add(-24 * time.Hour)} { // an older one does not win
			if err := e.db.SetFired(ctx, "acme", "daily", at); err != nil {
				t.Fatal(err)
			}
		}
		// Another process on the same database sees it.
		other, _ := e.open(t)
		defer other.Close()
		if at, ok, err := other.LastFired(ctx, "acme", "daily"); err != nil || !ok || !at.Equal(t1) {
			t.Fatalf("fired-at %s %v %v, want %s", at, ok, err, t1)
		}
		if done, _ := e.db.ActionDone(ctx, "acme", "a1"); done {
			t.Fatal("not done yet")
		}
		for range 2 {
			if err := e.db.MarkActionDone(ctx, "acme", "a1", t1); err != nil {
				t.Fatal(err)
			}
		}
		if done, _ := other.ActionDone(ctx, "acme", "a1"); !done {
			t.Fatal("done action not seen")
		}
	})
}

func TestLastOutbound(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		peer := mustAddr(t, gateway.WhatsApp, "+4915112345678")
		if _, err := e.db.LastOutbound(ctx, "acme", gateway.WhatsApp, "sales", peer); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("none yet: %v", err)
		}
		first := newMsg(t, "acme", "+4915112345678", "one")
		first.CreatedAt = time.Now().UTC()
		create(t, e.db, first)
		second := newMsg(t, "acme", "+4915112345678", "two")
		second.Hops, second.Metadata = 2, map[string]string{"automation": "fwd", "cause": "msg_x"}
		second.CreatedAt = first.CreatedAt.Add(time.Second)
		create(t, e.db, second)
		got, err := e.db.LastOutbound(ctx, "acme", gateway.WhatsApp, first.Account, peer)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != second.ID || got.Hops != 2 || got.Metadata["cause"] != "msg_x" {
			t.Fatalf("last outbound %s hops %d meta %v", got.ID, got.Hops, got.Metadata)
		}
	})
}
