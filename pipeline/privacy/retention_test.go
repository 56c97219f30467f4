package privacy

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

func totalUsage(t *testing.T, db *storesql.DB, tenant string) int64 {
	t.Helper()
	us, err := db.Usage(context.Background(), tenant, time.Unix(0, 0), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, u := range us {
		n += u.Count
	}
	return n
}

// TestRetentionSweep with a fake clock: content goes after content_days, whole messages after
// metadata_days, inbound after inbound_days; usage counts stay the same.
func TestRetentionSweep(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	put := func(dir gateway.Direction, age time.Duration, text string) string {
		m := &gateway.Message{Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales", Peer: addr(t, alice),
			Content: gateway.Content{Text: text}, CreatedAt: now.Add(-age)}
		var err error
		if dir == gateway.Inbound {
			m.ChannelMessageID = "wamid." + text
			_, err = e.db.CreateInbound(ctx, m)
		} else {
			_, _, _, err = e.db.CreateMessage(ctx, store.NewMessage{Message: m})
		}
		if err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	old := put(gateway.Outbound, 40*day, "old")
	mid := put(gateway.Outbound, 10*day, "mid")
	fresh := put(gateway.Outbound, time.Hour, "fresh")
	oldIn := put(gateway.Inbound, 25*day, "old-in")
	newIn := put(gateway.Inbound, 2*day, "new-in")
	before := totalUsage(t, e.db, "acme")

	var reports []SweepReport
	sw, err := NewSweeper(SweeperConfig{
		Store: e.db,
		Policies: func() map[string]Retention {
			return map[string]Retention{"acme": {Content: 7 * day, Metadata: 30 * day, Inbound: 20 * day}}
		},
		Batch:   1, // several batches per kind
		Clock:   func() time.Time { return now },
		OnSweep: func(_ string, r SweepReport) { reports = append(reports, r) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.SweepOnce(ctx); err != nil {
		t.Fatal(err)
	}
	want := SweepReport{Messages: 1, Inbound: 1, Contents: 1, StatusEvents: 2} // mid's content; newIn is 2 days old
	if len(reports) != 1 || reports[0] != want {
		t.Fatalf("reports %+v, want %+v", reports, want)
	}
	cases := []struct {
		id, text string
		gone     bool
	}{
		{old, "", true}, {oldIn, "", true}, {mid, "", false}, {fresh, "fresh", false}, {newIn, "new-in", false},
	}
	for _, c := range cases {
		m, err := e.db.Message(ctx, "acme", c.id, true)
		if c.gone {
			if gateway.ErrorCode(err) != gateway.ENotFound {
				t.Fatalf("message %s should be gone: %v", c.id, err)
			}
			continue
		}
		if err != nil || m.Content.Text != c.text {
			t.Fatalf("message %s: %v %q, want %q", c.id, err, m.Content.Text, c.text)
		}
	}
	if after := totalUsage(t, e.db, "acme"); after != before || before != 5 {
		t.Fatalf("usage %d before, %d after", before, after)
	}
	// A second sweep (another replica, or the next hour) finds nothing more.
	reports = nil
	if err := sw.SweepOnce(ctx); err != nil || reports[0] != (SweepReport{}) {
		t.Fatalf("second sweep: %+v %v", reports, err)
	}
}

// TestErasureKeepsUsage: billing counts survive an erasure.
func TestErasureKeepsUsage(t *testing.T) {
	e := newEnv(t)
	for range 3 {
		e.send(t, "acme", alice, "x")
	}
	e.receive(t, "acme", alice, "y")
	before := totalUsage(t, e.db, "acme")
	e.erase(t, "acme", alice)
	if after := totalUsage(t, e.db, "acme"); after != before || before != 4 {
		t.Fatalf("usage %d before, %d after", before, after)
	}
}
