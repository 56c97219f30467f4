package sql

import (
	"context"
	"testing"
	"time"
)

// TestConcurrentDeletionCountsUsageOnce: two replicas delete the same messages at once (retention
// sweepers on every replica, or a sweep beside an erasure). On PostgreSQL the second transaction
// waits for the first; the message must then count once in the usage totals, not twice. SQLite
// has a single writer, so the interleaving cannot happen there.
func TestConcurrentDeletionCountsUsageOnce(t *testing.T) {
	forEach(t, func(t *testing.T, e *env) {
		if e.engine != Postgres {
			return
		}
		ctx := context.Background()
		m := newMsg(t, "acme", "+4915112345678", "counted once")
		create(t, e.db, m)
		other, _ := e.open(t)
		defer other.Close()
		ids := []any{m.ID}

		tx1, err := e.db.writer.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx1.Rollback()
		if n, _, err := deleteMessages(ctx, &wtx{db: e.db, tx: tx1}, ids); err != nil || n != 1 {
			t.Fatalf("first deletion: %d %v", n, err)
		}

		tx2, err := other.writer.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx2.Rollback()
		var pid int
		if err := tx2.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		type result struct {
			n   int64
			err error
		}
		second := make(chan result, 1)
		go func() {
			n, _, err := deleteMessages(ctx, &wtx{db: other, tx: tx2}, ids)
			second <- result{n, err}
		}()
		// No event says "blocked on a row lock": ask PostgreSQL, with a deadline.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var wait string
			if err := e.db.reader.QueryRowContext(ctx, "SELECT COALESCE(wait_event_type, '') FROM pg_stat_activity WHERE pid = $1", pid).Scan(&wait); err != nil {
				t.Fatal(err)
			}
			if wait == "Lock" {
				break
			}
			select {
			case r := <-second:
				t.Fatalf("the second deletion did not wait for the first: %d %v", r.n, r.err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("the second deletion never waited for the first")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := tx1.Commit(); err != nil {
			t.Fatal(err)
		}
		r := <-second
		if r.err != nil || r.n != 0 {
			t.Fatalf("second deletion: %d %v, want nothing deleted", r.n, r.err)
		}
		if err := tx2.Commit(); err != nil {
			t.Fatal(err)
		}
		if n := count(t, e.db, "SELECT CAST(COALESCE(SUM(count), 0) AS INTEGER) FROM usage_daily WHERE tenant = ?", "acme"); n != 1 {
			t.Fatalf("usage counts the message %d times", n)
		}
	})
}
