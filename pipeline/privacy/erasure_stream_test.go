package privacy

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchboard-gateway/switchboard/gateway"
	"github.com/switchboard-gateway/switchboard/gateway/bus"
	"github.com/switchboard-gateway/switchboard/store"
	storesql "github.com/switchboard-gateway/switchboard/store/sql"
)

func openBus(t *testing.T) *bus.Bus {
	t.Helper()
	b, err := bus.Open(t.Context(), bus.Config{Embedded: &bus.Embedded{StoreDir: filepath.Join(t.TempDir(), "nats")}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// queued lists the Nats-Msg-Ids held by a stream.
func queued(t *testing.T, b *bus.Bus, stream string) []string {
	t.Helper()
	st, err := b.JetStream().Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := uint64(1); ; seq++ {
		raw, err := st.GetMsg(t.Context(), seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return ids
		}
		if err != nil {
			t.Fatal(err)
		}
		seq = raw.Sequence
		ids = append(ids, raw.Header.Get(nats.MsgIdHdr))
	}
}

// TestErasurePurgesStreams: the erased subject's pending messages are deleted from SEND and
// DISPATCH (another subject's and another tenant's stay), end rejected subject_erased, and an
// adapter consuming the dispatch queue afterwards never gets them.
func TestErasurePurgesStreams(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	b := openBus(t)
	svc, err := New(Config{Store: e.db, Indexer: e.kr, Bus: e.bus, Streams: b})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	var aliceIDs, keep []string
	for range 3 {
		sendID, dispatchID := e.send(t, "acme", alice, "alice waits"), e.send(t, "acme", alice, "alice queued")
		aliceIDs = append(aliceIDs, sendID, dispatchID)
		bobID, betaID := e.send(t, "acme", bob, "bob waits"), e.send(t, "beta", alice, "beta's alice")
		keep = append(keep, bobID, betaID)
		for _, p := range []struct{ subject, id string }{
			{bus.SendSubject("acme"), sendID},
			{bus.DispatchSubject("whatsapp", "acme", "sales"), dispatchID},
			{bus.DispatchSubject("whatsapp", "acme", "sales"), bobID},
			{bus.SendSubject("beta"), betaID},
		} {
			if err := b.Publish(ctx, p.subject, p.id, []byte(`{"message_id":"`+p.id+`"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}

	job := e.erase(t, "acme", alice)
	if job.Report[ReportStreamMessages] != 6 || job.Report[storesql.ReportPendingStopped] != 6 {
		t.Fatalf("report %v", job.Report)
	}
	left := append(queued(t, b, bus.StreamSend), queued(t, b, bus.StreamDispatch)...)
	for _, id := range aliceIDs {
		if slices.Contains(left, id) {
			t.Errorf("erased subject's message %s still in a stream", id)
		}
	}
	for _, id := range keep {
		if !slices.Contains(left, id) {
			t.Errorf("message %s of another subject was purged", id)
		}
	}
	rejected := e.bus.erasedRejections()
	for _, id := range aliceIDs {
		if !rejected[id] {
			t.Errorf("message %s has no final rejected status", id)
		}
	}

	// The account's adapter runner drains its queue: only bob's messages reach it, in order, so
	// when the last one arrives nothing of alice's came before it.
	got := make(chan string, 16)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(cctx, bus.ConsumerConfig{Durable: "adapter", FilterSubject: bus.DispatchSubject("whatsapp", "acme", "sales")},
			func(_ context.Context, m *bus.Msg) error { got <- m.MsgID; return nil })
	}()
	defer func() { cancel(); <-done }()
	var sent []string
	for len(sent) < 3 {
		select {
		case id := <-got:
			sent = append(sent, id)
		case <-t.Context().Done():
			t.Fatal("the adapter never got the remaining messages")
		}
	}
	for _, id := range sent {
		if slices.Contains(aliceIDs, id) {
			t.Fatalf("the adapter got erased message %s", id)
		}
	}
}

// cancelingBus stands for a process that dies right after the rows are deleted: its first
// status publish cancels the job's context and fails.
type cancelingBus struct{ cancel context.CancelFunc }

func (c cancelingBus) Publish(context.Context, string, string, []byte) error {
	c.cancel()
	return context.Canceled
}

// TestErasureResumesAfterCrash: a job that stops between the deletion of the rows and the final
// `rejected` events is taken over and finishes: every pending message still gets its final
// status, and the report counts the first run's work.
func TestErasureResumesAfterCrash(t *testing.T) {
	e := newEnv(t)
	var pending []string
	for range 5 {
		pending = append(pending, e.send(t, "acme", alice, "waiting"))
	}
	e.optOut(t, "acme", alice)

	ctx, cancel := context.WithCancel(context.Background())
	crashing, err := New(Config{Store: e.db, Indexer: e.kr, Bus: cancelingBus{cancel}})
	if err != nil {
		t.Fatal(err)
	}
	job, err := crashing.RequestErasure(ctx, "acme", testActor, addr(t, alice))
	if err != nil {
		t.Fatal(err)
	}
	if worked, err := crashing.RunOnce(ctx); !worked || !errors.Is(err, context.Canceled) {
		t.Fatalf("the crashing run: worked=%v err=%v", worked, err)
	}
	bg := context.Background()
	if j, err := e.db.Erasure(bg, "acme", job.ID); err != nil || j.State != store.ErasureRunning {
		t.Fatalf("after the crash: %+v %v", j, err)
	}
	var msgs, recorded int
	if err := e.db.SQL().QueryRowContext(bg, "SELECT COUNT(*) FROM messages").Scan(&msgs); err != nil || msgs != 0 {
		t.Fatalf("messages left after the crash: %d %v", msgs, err)
	}
	if err := e.db.SQL().QueryRowContext(bg, "SELECT COUNT(*) FROM erasure_pending").Scan(&recorded); err != nil || recorded != 5 {
		t.Fatalf("pending messages recorded: %d %v", recorded, err)
	}
	if len(e.bus.events) != 0 {
		t.Fatalf("events before the restart: %v", e.bus.events)
	}

	// The restarted process takes the stale job over (Stale: at once).
	restarted, err := New(Config{Store: e.db, Indexer: e.kr, Bus: e.bus, Stale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if worked, err := restarted.RunOnce(bg); !worked || err != nil {
		t.Fatalf("the resumed run: worked=%v err=%v", worked, err)
	}
	j, err := e.db.Erasure(bg, "acme", job.ID)
	if err != nil || j.State != store.ErasureDone {
		t.Fatalf("after the restart: %+v %v", j, err)
	}
	if j.Report[storesql.ReportMessages] != 5 || j.Report[storesql.ReportPendingStopped] != 5 ||
		j.Report[storesql.ReportKeys] != 1 || j.Report[storesql.ReportSuppressions] != 1 {
		t.Fatalf("report %v", j.Report)
	}
	final := e.bus.erasedRejections()
	for _, id := range pending {
		if !final[id] {
			t.Errorf("message %s never got its final status", id)
		}
	}
	var left int
	if err := e.db.SQL().QueryRowContext(bg, "SELECT COUNT(*) FROM erasure_pending").Scan(&left); err != nil || left != 0 {
		t.Fatalf("erasure_pending rows left: %d %v", left, err)
	}
}

// erasedRejections are the ids of the messages published as rejected subject_erased.
func (b *fakeBus) erasedRejections() map[string]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]bool{}
	for _, ev := range b.events {
		if ev.Status == gateway.StatusRejected && ev.Error != nil && ev.Error.Code == gateway.ESubjectErased {
			out[ev.MessageID] = true
		}
	}
	return out
}
