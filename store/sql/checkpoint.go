package sql

import (
	"context"
	dbsql "database/sql"
	"time"
)

// SQLite WAL checkpoints. A checkpoint copies committed pages from the WAL into the database file
// and fsyncs both; run by the writer connection (SQLite's default, every 1,000 pages) it stalls
// the group commits queued behind it. The checkpointer runs them on a connection of its own
// instead, which SQLite allows beside a writer: PASSIVE mode takes no lock that a writer or a
// reader needs. The writer keeps a far threshold as a backstop, so the WAL stays bounded if the
// checkpointer falls behind.
const (
	// writerCheckpointPages is the writer's own wal_autocheckpoint: reached only when the
	// checkpointer cannot keep up (about 40 MB of WAL with 4 KiB pages).
	writerCheckpointPages = 10000
	// walSizeLimit truncates the WAL file after a checkpoint has reset it (journal_size_limit).
	walSizeLimit = 64 << 20
	// checkpointGap is the shortest time between two checkpoints: a page that many commits
	// change is then copied once per gap, not once per commit (measured: 200 ms beat 0, 50 ms
	// and 1 s in BenchmarkCreateMessage).
	checkpointGap = 200 * time.Millisecond
)

// wakeCheckpointer tells the checkpointer that the writer committed.
func (db *DB) wakeCheckpointer() {
	select {
	case db.checkpointWake <- struct{}{}: // nil channel without a checkpointer: never ready
	default:
	}
}

// checkpointLoop runs a PASSIVE checkpoint after commits, at most one per checkpointGap, until
// Close. A commit during the gap leaves its wake-up queued, so the last commits of a burst are
// checkpointed too. The last connection to close checkpoints what is left (SQLite does that).
func (db *DB) checkpointLoop(conn *dbsql.DB) {
	defer close(db.checkpointStopped)
	gap := time.NewTimer(checkpointGap)
	gap.Stop()
	defer gap.Stop()
	for {
		select {
		case <-db.checkpointWake:
		case <-db.checkpointQuit:
			return
		}
		var busy, walFrames, copied int64
		err := conn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &walFrames, &copied)
		if err != nil {
			db.log.Warn().Err(err).Msg("WAL checkpoint failed; the writer checkpoints by itself past its threshold")
		}
		if err == nil && db.onCheckpoint != nil {
			db.onCheckpoint(walFrames, copied)
		}
		gap.Reset(checkpointGap)
		select {
		case <-gap.C:
		case <-db.checkpointQuit:
			return
		}
	}
}
