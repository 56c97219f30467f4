package sql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/store"
	"github.com/switchboard-gateway/switchboard/store/crypt"
)

func TestCreateAndGet(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		m := newMsg(t, "acme", "+4915112345678", "Your invoice is ready")
		m.Content.Media = &gateway.Media{URL: "https://files.example/i.pdf", MIMEType: "application/pdf"}
		m.IdempotencyKey = "idem-1"
		m.Hops = 1
		create(t, e.db, m)
		if m.Status != gateway.StatusAccepted || m.Direction != gateway.Outbound || m.CreatedAt.IsZero() {
			t.Fatalf("defaults not filled in: %+v", m)
		}

		got, err := e.db.Message(ctx, "acme", m.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
		if !got.CreatedAt.Equal(m.CreatedAt) || got.CreatedAt.Location() != time.UTC {
			t.Fatalf("created_at %v, want %v UTC", got.CreatedAt, m.CreatedAt)
		}

		noContent, err := e.db.Message(ctx, "acme", m.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		if noContent.Content.Text != "" || noContent.Content.Media != nil {
			t.Fatal("content returned without withContent")
		}
		if noContent.Peer != m.Peer || noContent.Metadata["order"] != "42" {
			t.Fatalf("peer or metadata missing: %+v", noContent)
		}

		h, err := e.db.History(ctx, "acme", m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 1 || h[0].Status != gateway.StatusAccepted || h[0].Channel != gateway.WhatsApp || h[0].Account != "sales" {
			t.Fatalf("history %+v", h)
		}

		if _, err := e.db.Message(ctx, "acme", "msg_missing", false); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("missing: %v", err)
		}

		// A second message with the same id is a conflict, not an overwrite.
		dup := *m
		dup.IdempotencyKey = ""
		if _, _, _, err := e.db.CreateMessage(ctx, store.NewMessage{Message: &dup}); gateway.ErrorCode(err) != gateway.EConflict {
			t.Fatalf("duplicate id: %v", err)
		}
	})
}

func TestCreateRefusesBadInput(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		tests := []struct {
			name string
			m    *gateway.Message
			code string
		}{
			{"nil", nil, gateway.EInternal},
			{"no tenant", &gateway.Message{Channel: gateway.WhatsApp, Peer: mustAddr(t, gateway.WhatsApp, "+4915112345678")}, gateway.EMissingField},
			{"bad channel", &gateway.Message{Tenant: "acme", Channel: "sms", Peer: mustAddr(t, gateway.WhatsApp, "+4915112345678")}, gateway.EUnknownChannel},
			{"no peer", &gateway.Message{Tenant: "acme", Channel: gateway.WhatsApp}, gateway.EMissingField},
			{"bad status", &gateway.Message{Tenant: "acme", Channel: gateway.WhatsApp, Peer: mustAddr(t, gateway.WhatsApp, "+4915112345678"), Status: "lost"}, gateway.EInvalidField},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, _, created, err := e.db.CreateMessage(ctx, store.NewMessage{Message: tt.m})
				if created || gateway.ErrorCode(err) != tt.code {
					t.Fatalf("created=%v err=%v, want %s", created, err, tt.code)
				}
			})
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM messages"); n != 0 {
			t.Fatalf("%d messages stored", n)
		}
	})
}

func TestListAndCursor(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		base := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
		var all []*gateway.Message
		for i := range 23 {
			m := newMsg(t, "acme", "+4915112345678", fmt.Sprintf("text %d", i))
			// Several messages share a timestamp, so the id must break ties.
			m.CreatedAt = base.Add(time.Duration(i/3) * time.Second)
			if i%4 == 0 {
				m.Channel, m.Account, m.Peer = gateway.Teams, "ops", mustAddr(t, gateway.Teams, "teams:user:"+fmt.Sprint(1000+i))
			}
			create(t, e.db, m)
			all = append(all, m)
		}
		other := newMsg(t, "beta", "+4915112345678", "other tenant")
		create(t, e.db, other)
		apply(t, e.db, ev(all[5], gateway.StatusQueued, base.Add(time.Hour)), ev(all[6], gateway.StatusQueued, base.Add(time.Hour)))

		// Newest first: created_at desc, then id desc.
		want := append([]*gateway.Message(nil), all...)
		sort.Slice(want, func(i, j int) bool {
			if !want[i].CreatedAt.Equal(want[j].CreatedAt) {
				return want[i].CreatedAt.After(want[j].CreatedAt)
			}
			return want[i].ID > want[j].ID
		})
		var got []*gateway.Message
		cursor := ""
		for pages := 0; ; pages++ {
			page, next, err := e.db.ListMessages(ctx, "acme", store.MessageFilter{Limit: 5, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
			got = append(got, page...)
			if next == "" {
				break
			}
			cursor = next
		}
		if len(got) != len(all) {
			t.Fatalf("listed %d, want %d", len(got), len(all))
		}
		for i := range got {
			if got[i].ID != want[i].ID {
				t.Fatalf("position %d: %s, want %s", i, got[i].ID, want[i].ID)
			}
			if got[i].Content.Text != "" {
				t.Fatal("list returned content")
			}
			if got[i].Peer.IsZero() || got[i].Tenant != "acme" {
				t.Fatalf("list item %+v", got[i])
			}
		}

		filters := []struct {
			name string
			f    store.MessageFilter
			n    int
		}{
			{"status", store.MessageFilter{Status: gateway.StatusQueued}, 2},
			{"channel", store.MessageFilter{Channel: gateway.Teams}, 6},
			{"direction", store.MessageFilter{Direction: gateway.Inbound}, 0},
			{"since", store.MessageFilter{Since: base.Add(6 * time.Second)}, 5},
			{"combined", store.MessageFilter{Channel: gateway.WhatsApp, Status: gateway.StatusAccepted}, 15},
		}
		for _, ft := range filters {
			t.Run(ft.name, func(t *testing.T) {
				ms, next, err := e.db.ListMessages(ctx, "acme", ft.f)
				if err != nil || next != "" || len(ms) != ft.n {
					t.Fatalf("%d messages, next %q, err %v; want %d", len(ms), next, err, ft.n)
				}
			})
		}

		bad := []struct {
			name  string
			f     store.MessageFilter
			field string
		}{
			{"cursor", store.MessageFilter{Cursor: "not-a-cursor"}, "cursor"},
			{"limit", store.MessageFilter{Limit: 501}, "limit"},
			{"negative limit", store.MessageFilter{Limit: -1}, "limit"},
			{"status", store.MessageFilter{Status: "lost"}, "status"},
			{"channel", store.MessageFilter{Channel: "sms"}, "channel"},
		}
		for _, bt := range bad {
			t.Run("bad "+bt.name, func(t *testing.T) {
				if _, _, err := e.db.ListMessages(ctx, "acme", bt.f); gateway.ErrorField(err) != bt.field {
					t.Fatalf("err %v, want field %s", err, bt.field)
				}
			})
		}
	})
}

func TestIdempotency(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		first := newMsg(t, "acme", "+4915112345678", "once")
		first.IdempotencyKey = "order-7"
		if _, _, created, err := e.db.CreateMessage(ctx, store.NewMessage{Message: first, RequestHash: "hash-a"}); err != nil || !created {
			t.Fatalf("first: %v %v", created, err)
		}
		replay := newMsg(t, "acme", "+4915112345678", "twice")
		replay.IdempotencyKey = "order-7"
		existing, hash, created, err := e.db.CreateMessage(ctx, store.NewMessage{Message: replay, RequestHash: "hash-b"})
		if err != nil || created {
			t.Fatalf("replay: %v %v", created, err)
		}
		if existing.ID != first.ID || hash != "hash-a" || existing.Content.Text != "once" {
			t.Fatalf("replay returned %s %q %q", existing.ID, hash, existing.Content.Text)
		}
		// The same key in another tenant is another message.
		beta := newMsg(t, "beta", "+4915112345678", "beta")
		beta.IdempotencyKey = "order-7"
		if _, _, created, err := e.db.CreateMessage(ctx, store.NewMessage{Message: beta}); err != nil || !created {
			t.Fatalf("other tenant: %v %v", created, err)
		}

		// Many concurrent requests with one key: one row, every caller sees the same id.
		const n = 32
		var wg sync.WaitGroup
		ids := make([]string, n)
		createdN := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := newMsg(t, "acme", "+4915112345678", "race")
				m.IdempotencyKey = "race-key"
				ex, _, c, err := e.db.CreateMessage(ctx, store.NewMessage{Message: m, RequestHash: "same"})
				errs[i], createdN[i] = err, c
				if c {
					ids[i] = m.ID
				} else if ex != nil {
					ids[i] = ex.ID
				}
			}()
		}
		wg.Wait()
		winners := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			if createdN[i] {
				winners++
			}
			if ids[i] != ids[0] || ids[i] == "" {
				t.Fatalf("caller %d saw %q, caller 0 %q", i, ids[i], ids[0])
			}
		}
		if winners != 1 {
			t.Fatalf("%d callers created the message", winners)
		}
		if c := count(t, e.db, "SELECT COUNT(*) FROM messages WHERE tenant = ? AND idempotency_key = ?", "acme", "race-key"); c != 1 {
			t.Fatalf("%d rows for one key", c)
		}
	})
}

func TestIdempotencyAcrossProcesses(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		db2, _ := e.open(t)
		defer db2.Close()
		const n = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				db := e.db
				if i%2 == 1 {
					db = db2
				}
				m := newMsg(t, "acme", "+4915112345678", "race")
				m.IdempotencyKey = "cross"
				_, _, c, err := db.CreateMessage(ctx, store.NewMessage{Message: m})
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				if c {
					created++
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if created != 1 {
			t.Fatalf("%d created", created)
		}
	})
}

func TestStatusMonotonic(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		m := newMsg(t, "acme", "+4915112345678", "status")
		create(t, e.db, m)
		t0 := m.CreatedAt
		at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

		steps := []struct {
			name      string
			ev        gateway.StatusEvent
			previous  gateway.Status
			advanced  bool
			duplicate bool
			current   gateway.Status
		}{
			{"queued", ev(m, gateway.StatusQueued, at(1)), gateway.StatusAccepted, true, false, gateway.StatusQueued},
			{"sent", ev(m, gateway.StatusSent, at(2)), gateway.StatusQueued, true, false, gateway.StatusSent},
			{"read before delivered", ev(m, gateway.StatusRead, at(4)), gateway.StatusSent, true, false, gateway.StatusRead},
			{"late delivered", ev(m, gateway.StatusDelivered, at(3)), gateway.StatusRead, false, false, gateway.StatusRead},
			{"duplicate read", ev(m, gateway.StatusRead, at(5)), gateway.StatusRead, false, true, gateway.StatusRead},
			{"failed after delivery", ev(m, gateway.StatusFailed, at(6)), gateway.StatusRead, false, false, gateway.StatusRead},
			{"queued again", ev(m, gateway.StatusQueued, at(7)), gateway.StatusRead, false, true, gateway.StatusRead},
		}
		for _, st := range steps {
			a := apply(t, e.db, st.ev)[0]
			if a.Event.Previous != st.previous || a.Advanced != st.advanced || a.Duplicate != st.duplicate || a.Missing {
				t.Fatalf("%s: %+v", st.name, a)
			}
			if a.Masked != "+49******5678" || len(a.Subject) != 14 || !a.CreatedAt.Equal(m.CreatedAt) {
				t.Fatalf("%s: log fields %q %q %v", st.name, a.Masked, a.Subject, a.CreatedAt)
			}
			if a.Event.Channel != gateway.WhatsApp || a.Event.Account != "sales" {
				t.Fatalf("%s: channel/account not filled in: %+v", st.name, a.Event)
			}
			got, err := e.db.Message(ctx, "acme", m.ID, false)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != st.current {
				t.Fatalf("%s: status %s, want %s", st.name, got.Status, st.current)
			}
		}
		h, err := e.db.History(ctx, "acme", m.ID)
		if err != nil {
			t.Fatal(err)
		}
		var seq []gateway.Status
		for _, x := range h {
			seq = append(seq, x.Status)
		}
		want := []gateway.Status{"accepted", "queued", "sent", "delivered", "read", "failed"}
		if !reflect.DeepEqual(seq, want) {
			t.Fatalf("history %v, want %v", seq, want)
		}
		if h[3].Previous != gateway.StatusRead {
			t.Fatalf("late delivered recorded previous %q", h[3].Previous)
		}

		// A failure before delivery ends the message, with its error; nothing moves it afterwards.
		f := newMsg(t, "acme", "+4915112345678", "fails")
		create(t, e.db, f)
		fail := ev(f, gateway.StatusFailed, time.Time{})
		fail.Error = &gateway.ErrorDetail{Code: gateway.EChannelError, Message: "not on whatsapp"}
		as := apply(t, e.db, ev(f, gateway.StatusSent, time.Time{}), fail, ev(f, gateway.StatusDelivered, time.Time{}))
		if !as[0].Advanced || !as[1].Advanced || as[1].Event.Previous != gateway.StatusSent || as[2].Advanced {
			t.Fatalf("failure batch %+v", as)
		}
		got, _ := e.db.Message(ctx, "acme", f.ID, false)
		if got.Status != gateway.StatusFailed || got.ErrorCode != gateway.EChannelError || got.ErrorMessage != "not on whatsapp" {
			t.Fatalf("failed message %+v", got)
		}
		fh, _ := e.db.History(ctx, "acme", f.ID)
		if fh[2].Error == nil || fh[2].Error.Code != gateway.EChannelError {
			t.Fatalf("failed event %+v", fh[2])
		}

		// Group receipts without a recipient count (a message sent before counts existed): one
		// history row per participant; the first advances.
		g := newMsg(t, "acme", "+4915112345678", "group")
		create(t, e.db, g)
		d1, d2 := ev(g, gateway.StatusDelivered, time.Time{}), ev(g, gateway.StatusDelivered, time.Time{})
		d1.Participant, d2.Participant = "p1", "p2"
		as = apply(t, e.db, d1, d2, d1)
		if !as[0].Advanced || as[1].Advanced || as[1].Duplicate || !as[2].Duplicate {
			t.Fatalf("group receipts %+v", as)
		}

		// Unknown message, another tenant's message: Missing, nothing written.
		other := ev(m, gateway.StatusRead, time.Time{})
		other.Tenant = "beta"
		as = apply(t, e.db, gateway.StatusEvent{MessageID: "msg_nope", Tenant: "acme", Status: gateway.StatusSent}, other)
		if !as[0].Missing || !as[1].Missing {
			t.Fatalf("missing %+v", as)
		}
		if _, err := e.db.ApplyStatus(ctx, []gateway.StatusEvent{{MessageID: m.ID, Tenant: "acme", Status: "lost"}}); gateway.ErrorCode(err) != gateway.EInvalidField {
			t.Fatalf("unknown status: %v", err)
		}
	})
}

// A group message reaches delivered, then read, only when every member it went to has; each
// member's receipt stays in the history, and one member's error fails nothing.
func TestGroupStatusIsTheLeastAdvancedMember(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		g := newMsg(t, "acme", "+4915112345678", "group")
		create(t, e.db, g)
		sent := ev(g, gateway.StatusSent, time.Time{})
		sent.Recipients = 3
		receipt := func(s gateway.Status, p string) gateway.StatusEvent {
			r := ev(g, s, time.Time{})
			r.Participant = p
			return r
		}
		steps := []struct {
			name     string
			ev       gateway.StatusEvent
			advanced bool
			current  gateway.Status
		}{
			{"sent to three members", sent, true, gateway.StatusSent},
			{"p1 delivered", receipt(gateway.StatusDelivered, "p1"), false, gateway.StatusSent},
			{"p2 read (so delivered too)", receipt(gateway.StatusRead, "p2"), false, gateway.StatusSent},
			{"p3 errs", receipt(gateway.StatusFailed, "p3"), false, gateway.StatusSent},
			{"p3 delivered: all have it", receipt(gateway.StatusDelivered, "p3"), true, gateway.StatusDelivered},
			{"p3 played: p1 has not read", receipt(gateway.StatusPlayed, "p3"), false, gateway.StatusDelivered},
			{"p1 read: all have read", receipt(gateway.StatusRead, "p1"), true, gateway.StatusRead},
		}
		for _, st := range steps {
			a := apply(t, e.db, st.ev)[0]
			if a.Advanced != st.advanced || a.Duplicate || a.Missing || (a.Advanced && a.Event.Status != st.current) {
				t.Fatalf("%s: %+v", st.name, a)
			}
			got, err := e.db.Message(ctx, "acme", g.ID, false)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != st.current {
				t.Fatalf("%s: status %s, want %s", st.name, got.Status, st.current)
			}
		}
		h, err := e.db.History(ctx, "acme", g.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 1+len(steps) {
			t.Fatalf("history has %d events, want every member's receipt: %+v", len(h), h)
		}
	})
}

func TestChannelMessageIDs(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		m := newMsg(t, "acme", "+4915112345678", "claim")
		create(t, e.db, m)
		if id, err := e.db.ClaimChannelMessageID(ctx, "acme", m.ID, ""); err != nil || id != "" {
			t.Fatalf("read before claim: %q %v", id, err)
		}
		if id, err := e.db.ClaimChannelMessageID(ctx, "acme", m.ID, "WAMID.1"); err != nil || id != "WAMID.1" {
			t.Fatalf("claim: %q %v", id, err)
		}
		// A retry proposes a new id and gets the first one back.
		if id, err := e.db.ClaimChannelMessageID(ctx, "acme", m.ID, "WAMID.2"); err != nil || id != "WAMID.1" {
			t.Fatalf("reclaim: %q %v", id, err)
		}
		if id, err := e.db.MessageIDByChannelID(ctx, "acme", gateway.WhatsApp, "sales", "WAMID.1"); err != nil || id != m.ID {
			t.Fatalf("lookup: %q %v", id, err)
		}
		for _, c := range []struct{ tenant, account, cmid string }{{"beta", "sales", "WAMID.1"}, {"acme", "other", "WAMID.1"}, {"acme", "sales", "WAMID.2"}, {"acme", "sales", ""}} {
			if _, err := e.db.MessageIDByChannelID(ctx, c.tenant, gateway.WhatsApp, c.account, c.cmid); gateway.ErrorCode(err) != gateway.ENotFound {
				t.Fatalf("lookup %v: %v", c, err)
			}
		}
		if _, err := e.db.ClaimChannelMessageID(ctx, "acme", "msg_nope", "X"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("claim missing: %v", err)
		}
		// Another message cannot take the same id on the same account.
		m2 := newMsg(t, "acme", "+4915112345678", "second")
		create(t, e.db, m2)
		if _, err := e.db.ClaimChannelMessageID(ctx, "acme", m2.ID, "WAMID.1"); gateway.ErrorCode(err) != gateway.EConflict {
			t.Fatalf("claim taken id: %v", err)
		}
		// A channel that assigns ids: the sent event records it.
		sent := ev(m2, gateway.StatusSent, time.Time{})
		sent.ChannelMessageID = "WAMID.9"
		apply(t, e.db, sent)
		if id, err := e.db.MessageIDByChannelID(ctx, "acme", gateway.WhatsApp, "sales", "WAMID.9"); err != nil || id != m2.ID {
			t.Fatalf("id from sent event: %q %v", id, err)
		}
		// Two messages of one batch naming the same new channel id: the first keeps it.
		m3, m4 := newMsg(t, "acme", "+4915112345678", "third"), newMsg(t, "acme", "+4915112345678", "fourth")
		create(t, e.db, m3)
		create(t, e.db, m4)
		s3, s4 := ev(m3, gateway.StatusSent, time.Time{}), ev(m4, gateway.StatusSent, time.Time{})
		s3.ChannelMessageID, s4.ChannelMessageID = "WAMID.10", "WAMID.10"
		if as := apply(t, e.db, s3, s4); !as[0].Advanced || !as[1].Advanced {
			t.Fatalf("batch %+v", as)
		}
		if id, err := e.db.MessageIDByChannelID(ctx, "acme", gateway.WhatsApp, "sales", "WAMID.10"); err != nil || id != m3.ID {
			t.Fatalf("id claimed twice in one batch: %q %v", id, err)
		}
	})
}

func TestCreateInbound(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		in := func() *gateway.Message {
			return &gateway.Message{
				Tenant: "acme", Channel: gateway.WhatsApp, Account: "sales",
				Peer:             mustAddr(t, gateway.WhatsApp, "+4915112345678"),
				Content:          gateway.Content{Text: "STOP", Extra: map[string]string{"name": "Ada"}},
				ChannelMessageID: "WAIN.1",
			}
		}
		m := in()
		created, err := e.db.CreateInbound(ctx, m)
		if err != nil || !created {
			t.Fatalf("first: %v %v", created, err)
		}
		if m.Direction != gateway.Inbound || m.Status != gateway.StatusReceived || m.ID == "" {
			t.Fatalf("defaults %+v", m)
		}
		again := in()
		if created, err := e.db.CreateInbound(ctx, again); err != nil || created {
			t.Fatalf("redelivery: %v %v", created, err)
		}
		// The same message redelivered with its id set by the runner.
		same := in()
		same.ID, same.ChannelMessageID = m.ID, ""
		if created, err := e.db.CreateInbound(ctx, same); err != nil || created {
			t.Fatalf("same id: %v %v", created, err)
		}
		got, err := e.db.Message(ctx, "acme", m.ID, true)
		if err != nil || got.Content.Text != "STOP" || got.Content.Extra["name"] != "Ada" || got.Direction != gateway.Inbound {
			t.Fatalf("got %+v %v", got, err)
		}
		ins, _, _ := e.db.ListMessages(ctx, "acme", store.MessageFilter{Direction: gateway.Inbound})
		if len(ins) != 1 {
			t.Fatalf("%d inbound", len(ins))
		}
		h, _ := e.db.History(ctx, "acme", m.ID)
		if len(h) != 1 || h[0].Status != gateway.StatusReceived {
			t.Fatalf("history %+v", h)
		}
		if u, _ := e.db.Unfinished(ctx, "", 0); len(u) != 0 {
			t.Fatalf("inbound counted as unfinished: %+v", u)
		}
	})
}

func TestUnfinished(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		var accepted []string
		for i := range 7 {
			tenant := "acme"
			if i%2 == 1 {
				tenant = "beta"
			}
			m := newMsg(t, tenant, "+4915112345678", "u")
			m.Hops = i
			create(t, e.db, m)
			if i%3 == 0 {
				apply(t, e.db, ev(m, gateway.StatusQueued, time.Time{}))
				continue
			}
			accepted = append(accepted, m.ID)
		}
		sort.Strings(accepted) // ids of one millisecond are not ordered among themselves
		var got []string
		after := ""
		for {
			page, err := e.db.Unfinished(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, d := range page {
				if d.Channel != gateway.WhatsApp || d.Account != "sales" || d.Tenant == "" {
					t.Fatalf("dispatch %+v", d)
				}
				got = append(got, d.MessageID)
			}
			after = page[len(page)-1].MessageID
		}
		if !reflect.DeepEqual(got, accepted) {
			t.Fatalf("unfinished %v, want %v", got, accepted)
		}
	})
}

func TestTenantIsolation(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		m := newMsg(t, "acme", "+4915112345678", "acme only")
		create(t, e.db, m)
		if _, err := e.db.ClaimChannelMessageID(ctx, "acme", m.ID, "WAMID.A"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.Message(ctx, "beta", m.ID, true); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("beta read acme's message: %v", err)
		}
		if _, err := e.db.History(ctx, "beta", m.ID); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("beta read acme's history: %v", err)
		}
		if _, err := e.db.ClaimChannelMessageID(ctx, "beta", m.ID, "X"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("beta claimed: %v", err)
		}
		if _, err := e.db.MessageIDByChannelID(ctx, "beta", gateway.WhatsApp, "sales", "WAMID.A"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("beta resolved: %v", err)
		}
		if ms, _, _ := e.db.ListMessages(ctx, "beta", store.MessageFilter{}); len(ms) != 0 {
			t.Fatalf("beta listed %d", len(ms))
		}
		if a := apply(t, e.db, gateway.StatusEvent{MessageID: m.ID, Tenant: "beta", Status: gateway.StatusRead}); !a[0].Missing {
			t.Fatal("beta applied a status")
		}
		// The same number has another blind index in another tenant.
		b := newMsg(t, "beta", "+4915112345678", "beta")
		create(t, e.db, b)
		ia, ib := "", ""
		e.db.reader.QueryRow(e.db.q("SELECT peer_index FROM messages WHERE id = ?"), m.ID).Scan(&ia)
		e.db.reader.QueryRow(e.db.q("SELECT peer_index FROM messages WHERE id = ?"), b.ID).Scan(&ib)
		if ia == "" || ia == ib {
			t.Fatalf("blind indexes %q %q", ia, ib)
		}
	})
}

// TestCiphertextBoundToRow moves a ciphertext from one row to another in the database and checks
// that it no longer opens.
func TestCiphertextBoundToRow(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		a := newMsg(t, "acme", "+4915112345678", "message A")
		b := newMsg(t, "acme", "+4915112345678", "message B")
		create(t, e.db, a)
		create(t, e.db, b)
		if _, err := e.db.writer.Exec(e.db.q("UPDATE messages SET content_ct = (SELECT content_ct FROM messages WHERE id = ?) WHERE id = ?"), a.ID, b.ID); err != nil {
			t.Fatal(err)
		}
		_, err := e.db.Message(ctx, "acme", b.ID, true)
		if !errors.Is(err, crypt.ErrDecrypt) {
			t.Fatalf("moved ciphertext: %v", err)
		}
		if _, err := e.db.Message(ctx, "acme", b.ID, false); err != nil {
			t.Fatalf("without content the message still reads: %v", err)
		}
	})
}

func TestNoPlaintextAtRest(t *testing.T) {
	for _, es := range engines() {
		if es.name != SQLite {
			continue
		}
		cfg, dir := es.cfg(t)
		e := &env{engine: es.name, cfg: cfg, dir: dir}
		db, _ := e.open(t)
		ctx := context.Background()
		const text = "Zebra-Quokka-7731 invoice secret"
		const number = "+4915112345678"
		m := newMsg(t, "acme", number, text)
		m.Metadata = map[string]string{"customer": "Quokka Industries"}
		m.Content.Media = &gateway.Media{URL: "https://files.example/quokka.pdf"}
		create(t, db, m)
		in := &gateway.Message{Tenant: "acme", Channel: gateway.Teams, Account: "ops",
			Peer: mustAddr(t, gateway.Teams, "teams:user:8f1c2d3e-aaaa-bbbb-cccc-0123456789ab"), Content: gateway.Content{Text: text}, ChannelMessageID: "c1"}
		if _, err := db.CreateInbound(ctx, in); err != nil {
			t.Fatal(err)
		}
		apply(t, db, ev(m, gateway.StatusSent, time.Time{}))
		// Read the files while the store is open (WAL holds the data) and again after Close.
		check := func(when string) {
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) == 0 {
				t.Fatal("no files")
			}
			sawID := false // the check reads the real data: the message id is stored in the clear
			for _, de := range entries {
				data, err := os.ReadFile(filepath.Join(dir, de.Name()))
				if err != nil {
					t.Fatal(err)
				}
				sawID = sawID || bytes.Contains(data, []byte(m.ID))
				for _, needle := range []string{text, "Zebra-Quokka", number, "15112345678", "Quokka Industries", "quokka.pdf", "8f1c2d3e-aaaa"} {
					if bytes.Contains(data, []byte(needle)) {
						t.Errorf("%s: %s contains %q", when, de.Name(), needle)
					}
				}
			}
			if !sawID {
				t.Fatalf("%s: no file holds the message id; the check reads the wrong files", when)
			}
		}
		check("open")
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		check("closed")
		// And it was there: reopened, the message reads back.
		db2, _ := e.open(t)
		defer db2.Close()
		got, err := db2.Message(ctx, "acme", m.ID, true)
		if err != nil || got.Content.Text != text || got.Peer.Value != number {
			t.Fatalf("reopened: %+v %v", got, err)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		secret := "sbk_" + "0123456789abcdefghijklmnopqrstuv"
		k, err := e.db.CreateAPIKey(ctx, "acme", "ci", secret)
		if err != nil {
			t.Fatal(err)
		}
		if k.Tenant != "acme" || k.Name != "ci" || len(k.ID) < 8 || k.ID[:4] != "key_" || k.Prefix != secret[:10] {
			t.Fatalf("key %+v", k)
		}
		got, err := e.db.APIKeyBySecret(ctx, secret)
		if err != nil || got.ID != k.ID || got.Tenant != "acme" || !got.CreatedAt.Equal(k.CreatedAt) {
			t.Fatalf("by secret: %+v %v", got, err)
		}
		if _, err := e.db.APIKeyBySecret(ctx, secret+"x"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("wrong secret: %v", err)
		}
		if _, err := e.db.CreateAPIKey(ctx, "beta", "dup", secret); gateway.ErrorCode(err) != gateway.EConflict {
			t.Fatalf("duplicate secret: %v", err)
		}
		if _, err := e.db.CreateAPIKey(ctx, "acme", "short", "sbk_x"); gateway.ErrorCode(err) != gateway.EInvalidField {
			t.Fatalf("short secret: %v", err)
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM api_keys WHERE hash = ? OR prefix = ?", secret, secret); n != 0 {
			t.Fatal("secret stored in the clear")
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM tenants WHERE id = ?", "acme"); n != 1 {
			t.Fatal("tenant not ensured")
		}
		if err := e.db.RevokeAPIKey(ctx, "beta", k.ID); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("other tenant revoked: %v", err)
		}
		if err := e.db.RevokeAPIKey(ctx, "acme", k.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.APIKeyBySecret(ctx, secret); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("revoked key found: %v", err)
		}
		if err := e.db.EnsureTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if err := e.db.EnsureTenant(ctx, "gamma"); err != nil {
			t.Fatal(err)
		}
		if n := count(t, e.db, "SELECT COUNT(*) FROM tenants"); n != 2 {
			t.Fatalf("%d tenants", n)
		}
	})
}

func TestKeyStore(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		if _, err := e.db.TenantKey(ctx, "acme"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("absent tenant key: %v", err)
		}
		k1 := crypt.WrappedKey{KeyID: "mk_1", Wrapped: []byte{1, 2, 3}}
		k2 := crypt.WrappedKey{KeyID: "mk_2", Wrapped: []byte{4, 5, 6}}
		if got, err := e.db.CreateTenantKey(ctx, "acme", k1); err != nil || !reflect.DeepEqual(got, k1) {
			t.Fatalf("create: %+v %v", got, err)
		}
		if got, err := e.db.CreateTenantKey(ctx, "acme", k2); err != nil || !reflect.DeepEqual(got, k1) {
			t.Fatalf("second create must return the first key: %+v %v", got, err)
		}
		if got, err := e.db.TenantKey(ctx, "acme"); err != nil || !reflect.DeepEqual(got, k1) {
			t.Fatalf("read: %+v %v", got, err)
		}
		if _, err := e.db.SubjectKey(ctx, "acme", "s1"); gateway.ErrorCode(err) != gateway.ENotFound {
			t.Fatalf("absent subject key: %v", err)
		}
		if got, _ := e.db.CreateSubjectKey(ctx, "acme", "s1", k1); !reflect.DeepEqual(got, k1) {
			t.Fatal("subject create")
		}
		if got, _ := e.db.CreateSubjectKey(ctx, "acme", "s1", k2); !reflect.DeepEqual(got, k1) {
			t.Fatal("second subject create must return the first key")
		}
		if got, _ := e.db.SubjectKey(ctx, "beta", "s1"); got.KeyID != "" {
			t.Fatal("subject key leaks across tenants")
		}
	})
}

// TestConcurrentFirstUse: a burst of sends to a new recipient, from two processes, makes one
// data key.
func TestConcurrentFirstUse(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		db2, _ := e.open(t)
		defer db2.Close()
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				db := e.db
				if i%2 == 1 {
					db = db2
				}
				_, _, _, err := db.CreateMessage(context.Background(), store.NewMessage{Message: newMsg(t, "acme", "+4915112345678", "burst")})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if n := vaultCount(t, e.db, "subject"); n != 1 {
			t.Fatalf("%d subject keys", n)
		}
		if n := vaultCount(t, e.db, "tenant"); n != 1 {
			t.Fatalf("%d tenant keys", n)
		}
		// Both processes read everything.
		ms, _, err := db2.ListMessages(context.Background(), "acme", store.MessageFilter{Limit: 100})
		if err != nil || len(ms) != 64 {
			t.Fatalf("%d listed, %v", len(ms), err)
		}
	})
}

func TestMigrationsConcurrentAndIdempotent(t *testing.T) {
	for _, es := range engines() {
		t.Run(es.name, func(t *testing.T) {
			cfg, _ := es.cfg(t)
			dbs := make([]*DB, 4)
			errs := make([]error, 4)
			var wg sync.WaitGroup
			for i := range dbs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					dbs[i], errs[i] = Open(context.Background(), cfg, zerolog.Nop())
				}()
			}
			wg.Wait()
			for i := range dbs {
				if errs[i] != nil {
					t.Fatalf("open %d: %v", i, errs[i])
				}
				defer dbs[i].Close()
			}
			ms, err := dbs[0].migrations()
			if err != nil {
				t.Fatal(err)
			}
			if n := count(t, dbs[0], "SELECT COUNT(*) FROM schema_migrations"); n != len(ms) {
				t.Fatalf("%d migration rows, want %d", n, len(ms))
			}
			// A database from a newer binary is refused.
			if _, err := dbs[0].writer.Exec(dbs[0].q("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"), 9999, "future", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(context.Background(), cfg, zerolog.Nop()); err == nil {
				t.Fatal("opened a database with a newer schema")
			}
		})
	}
}

// TestGroupCommitIsolation puts a failing write into a batch with good ones: only it fails.
func TestGroupCommitIsolation(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		// Create the keys first, so the batch below holds exactly the nine writes; then open a
		// store whose writer waits (up to a minute) until it has nine.
		create(t, e.db, newMsg(t, "acme", "+4915112345678", "warm"))
		cfg := e.cfg
		cfg.BatchSize, cfg.BatchWait = 9, time.Minute
		db, _, err := OpenEncrypted(ctx, cfg, testMasters(), zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, _, errs[i] = db.CreateMessage(ctx, store.NewMessage{Message: newMsg(t, "acme", "+4915112345678", "batch")})
			}()
		}
		wg.Add(1)
		var badErr error
		go func() {
			defer wg.Done()
			badErr = db.write(ctx, "bad", func(ctx context.Context, tx *wtx) error {
				_, err := tx.exec(ctx, "INSERT INTO no_such_table VALUES (1)")
				return err
			})
		}()
		wg.Wait()
		if badErr == nil {
			t.Fatal("bad write succeeded")
		}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("good write %d failed with the bad one: %v", i, err)
			}
		}
		if n := count(t, db, "SELECT COUNT(*) FROM messages"); n != 9 {
			t.Fatalf("%d messages", n)
		}
		if st := db.WriteStats(); st.Fallbacks != 1 || st.Ops != 9 {
			t.Fatalf("the bad write was not batched with the others: %+v", st)
		}
	})
}

func TestCloseAndCancel(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, _, err := e.db.CreateMessage(cancelled, store.NewMessage{Message: newMsg(t, "acme", "+4915112345678", "x")}); err == nil {
			t.Fatal("cancelled context wrote")
		}
		// Writes queued when Close is called are committed; later ones are refused.
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, _, err := e.db.CreateMessage(ctx, store.NewMessage{Message: newMsg(t, "acme", "+4915112345678", "x")})
				if err != nil && gateway.ErrorCode(err) != gateway.EUnavailable {
					t.Errorf("write during close: %v", err)
				}
			}()
		}
		wg.Wait()
		if err := e.db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Close(); err != nil {
			t.Fatal("second Close:", err)
		}
		if _, err := e.db.ApplyStatus(ctx, []gateway.StatusEvent{{MessageID: "m", Tenant: "acme", Status: gateway.StatusSent}}); gateway.ErrorCode(err) != gateway.EUnavailable {
			t.Fatalf("write after close: %v", err)
		}
	})
}

func TestOpenRefusesBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, c := range []Config{{Driver: "mysql", DSN: "x"}, {Driver: SQLite}, {Driver: Postgres}} {
		if _, err := Open(ctx, c, zerolog.Nop()); err == nil {
			t.Fatalf("%+v opened", c)
		}
	}
	db, err := Open(ctx, Config{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "x.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, _, _, err := db.CreateMessage(ctx, store.NewMessage{Message: newMsg(t, "acme", "+4915112345678", "x")}); err == nil {
		t.Fatal("wrote without a keyring")
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}
