package sql

import (
	"context"
	dbsql "database/sql"
	"sync/atomic"
	"time"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// op is one write for the group-commit writer. run does its work inside the batch transaction
// and records its outcome in variables it closes over; it returns an error only when the
// transaction itself is in trouble (a failed statement). Outcomes such as "not found" are results,
// not errors. run may be called more than once (the batch is retried op by op after a failure),
// so it must set every result it reports on each call, and it must never call the keyring or any
// other DB method that writes (the writer would wait for itself).
type op struct {
	ctx  context.Context
	name string
	run  func(ctx context.Context, tx *wtx) error
	done chan error
}

// WriteStats counts the writer's work since Open.
type WriteStats struct {
	Batches   int64 // transactions committed or attempted for a batch
	Ops       int64 // writes taken from the queue
	Fallbacks int64 // batches that failed and were retried write by write
}

type writeStats struct{ batches, ops, fallbacks atomic.Int64 }

// WriteStats reports the group-commit writer's counters (average batch = Ops / Batches).
func (db *DB) WriteStats() WriteStats {
	return WriteStats{Batches: db.stats.batches.Load(), Ops: db.stats.ops.Load(), Fallbacks: db.stats.fallbacks.Load()}
}

// batchTimeout bounds one group-commit transaction.
const batchTimeout = 30 * time.Second

func errClosed() error { return gateway.Errorf(gateway.EUnavailable, "store is closed") }

// write queues run for the writer and waits for its commit. When ctx ends first, write returns
// its error, but the op may still be committed if the writer has already taken it: callers make
// their writes idempotent (idempotency keys, ON CONFLICT) so a retry is harmless.
func (db *DB) write(ctx context.Context, name string, run func(context.Context, *wtx) error) error {
	o := &op{ctx: ctx, name: name, run: run, done: make(chan error, 1)}
	select {
	case db.ops <- o:
	case <-ctx.Done():
		return dbErr(name, ctx.Err())
	case <-db.quit:
		return errClosed()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return dbErr(name, ctx.Err())
	case <-db.stopped:
		select {
		case err := <-o.done:
			return err
		default:
			return errClosed()
		}
	}
}

// writeLoop is the writer goroutine: it takes the first queued op, gathers more up to batchSize
// (lingering up to batchWait when set), and commits them in one transaction. On Close it commits
// what is still queued, then stops.
func (db *DB) writeLoop() {
	defer close(db.stopped)
	batch := make([]*op, 0, db.batchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case o := <-db.ops:
			batch = append(batch[:0], o)
		case <-db.quit:
			for {
				batch = db.drain(batch[:0])
				if len(batch) == 0 {
					return
				}
				db.commit(batch)
			}
		}
		if db.batchWait > 0 {
			timer.Reset(db.batchWait)
		linger:
			for len(batch) < db.batchSize {
				select {
				case o := <-db.ops:
					batch = append(batch, o)
				case <-timer.C:
					break linger
				case <-db.quit:
					break linger
				}
			}
			timer.Stop()
		}
		batch = db.drain(batch)
		db.commit(batch)
		clear(batch)
	}
}

// drain adds queued ops to batch, without waiting, up to batchSize.
func (db *DB) drain(batch []*op) []*op {
	for len(batch) < db.batchSize {
		select {
		case o := <-db.ops:
			batch = append(batch, o)
		default:
			return batch
		}
	}
	return batch
}

// commit runs a batch in one transaction. If anything fails, it rolls back and runs each op in a
// transaction of its own, so one failing op fails only its own caller.
func (db *DB) commit(batch []*op) {
	live := batch[:0:0]
	for _, o := range batch {
		if err := o.ctx.Err(); err != nil {
			o.done <- dbErr(o.name, err)
			continue
		}
		live = append(live, o)
	}
	if len(live) == 0 {
		return
	}
	db.stats.batches.Add(1)
	db.stats.ops.Add(int64(len(live)))
	err := db.runTx(live)
	if err == nil {
		db.wakeCheckpointer()
		for _, o := range live {
			o.done <- nil
		}
		return
	}
	if len(live) == 1 {
		live[0].done <- dbErr(live[0].name, err)
		return
	}
	db.stats.fallbacks.Add(1)
	db.log.Warn().Err(err).Int("ops", len(live)).Msg("group commit failed; retrying its writes one by one")
	for _, o := range live {
		if err := db.runTx([]*op{o}); err != nil {
			o.done <- dbErr(o.name, err)
		} else {
			o.done <- nil
		}
	}
}

func (db *DB) runTx(ops []*op) error {
	// On SQLite the busy timeout bounds the batch instead (see stmtContext).
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	ctx = db.stmtContext(ctx)
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	w := &wtx{db: db, tx: tx}
	for _, o := range ops {
		if err := o.run(ctx, w); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// hotQueries are prepared once on SQLite's writer connection (PostgreSQL's driver caches
// prepared statements by itself).
func hotQueries() []string {
	return []string{
		insertMessage, insertEvent, selectIdempotent, selectClaim, updateClaim, selectByChannel, selectForStatus,
		updateStatus,
	}
}

// prepareHot readies the hot statements; it runs before the writer starts, and the map is only
// read afterwards.
func (db *DB) prepareHot(ctx context.Context) error {
	if db.pg {
		return nil
	}
	qs := hotQueries()
	db.stmts = make(map[string]*dbsql.Stmt, len(qs))
	for _, q := range qs {
		st, err := db.writer.PrepareContext(ctx, q)
		if err != nil {
			return dbErr("prepare", err)
		}
		db.stmts[q] = st
	}
	return nil
}

// wtx is the writer's transaction, with the hot statements prepared. Queries are written with
// ? placeholders.
type wtx struct {
	db *DB
	tx *dbsql.Tx
}

func (w *wtx) exec(ctx context.Context, query string, args ...any) (dbsql.Result, error) {
	if st, ok := w.db.stmts[query]; ok {
		return w.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return w.tx.ExecContext(ctx, w.db.q(query), args...)
}

func (w *wtx) queryRow(ctx context.Context, query string, args ...any) *dbsql.Row {
	if st, ok := w.db.stmts[query]; ok {
		return w.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return w.tx.QueryRowContext(ctx, w.db.q(query), args...)
}
