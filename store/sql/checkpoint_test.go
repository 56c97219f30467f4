package sql

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A group commit never waits for a WAL checkpoint below the writer's far threshold: a connection
// of its own checkpoints after commits, and copies everything once the writes stop.
func TestCheckpointsRunBesideTheWriter(t *testing.T) {
	type report struct{ walFrames, copied int64 }
	reports := make(chan report, 1024)
	cfg := Config{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "switchboard.db"),
		onCheckpoint: func(walFrames, copied int64) {
			select {
			case reports <- report{walFrames, copied}:
			default:
			}
		}}
	db, _, err := OpenEncrypted(context.Background(), cfg, testMasters(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	for pragma, want := range map[string]int64{"wal_autocheckpoint": writerCheckpointPages, "journal_size_limit": walSizeLimit} {
		var got int64
		if err := db.writer.QueryRow("PRAGMA " + pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("writer %s = %d, want %d", pragma, got, want)
		}
	}

	// More than SQLite's default threshold of 1,000 pages, which the writer would have
	// checkpointed by itself.
	text := strings.Repeat("Your invoice is ready. ", 200)
	for i := range 2000 {
		create(t, db, newMsg(t, "acme", fmt.Sprintf("+49151%08d", 10000000+i%50), text))
	}
	guard := time.NewTimer(30 * time.Second) // a bound on the wait, not a timed assertion
	defer guard.Stop()
	var most int64
	for {
		select {
		case r := <-reports:
			most = max(most, r.walFrames)
			if r.walFrames > 0 && r.copied == r.walFrames {
				return
			}
		case <-guard.C:
			t.Fatalf("no background checkpoint copied the whole WAL (largest WAL seen: %d frames)", most)
		}
	}
}
