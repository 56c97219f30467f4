package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// The ledger is the sandbox network's memory: an append-only text file, one event per line, with
// ids and masked identifiers only, never content or a full number:
//
//	sent <channel id> <message id> <masked recipient>   the network took the message
//	dup <channel id> <message id>                       a resend of a known channel id, dropped
//	failed <message id> <masked recipient>              a scripted permanent failure
//	delivered <channel id>                              the delivered receipt was reported (sink returned nil)
//	read <channel id>                                   the read receipt was reported
//	inbound <channel id> <masked sender>                an inbound message was reported
//
// Each line is one write(2) on an O_APPEND file, so a killed process leaves at most a torn last
// line, which loading skips. No fsync: the page cache survives a SIGKILL of the process.

// LedgerPath is the ledger file of one sandbox account in dir.
func LedgerPath(dir string, channel gateway.Channel, account string) string {
	return filepath.Join(dir, fmt.Sprintf("sandbox-%s-%s.ledger", channel, account))
}

// Ledger is what a ledger file says.
type Ledger struct {
	// Sent maps each channel id the network took to our message id.
	Sent map[string]string
	// Sends counts the sent lines per message id: more than one means the message reached the
	// person twice under two channel ids (which must never happen).
	Sends map[string]int
	// Delivered and Read hold the channel ids whose receipts were reported.
	Delivered, Read map[string]bool
	Duplicates      int      // resends dropped
	Failed          int      // scripted failures
	Inbound         int      // inbound messages reported
	Order           []string // channel ids in the order they were sent
}

// ReadLedger reads the ledger of one sandbox account; a missing file is an empty ledger.
func ReadLedger(dir string, channel gateway.Channel, account string) (*Ledger, error) {
	return readLedger(LedgerPath(dir, channel, account))
}

func newLedger() *Ledger {
	return &Ledger{Sent: map[string]string{}, Sends: map[string]int{}, Delivered: map[string]bool{}, Read: map[string]bool{}}
}

func readLedger(path string) (*Ledger, error) {
	l, _, err := loadLedger(path)
	return l, err
}

// loadLedger reads a ledger file and reports whether it ends in a torn line (no final newline).
func loadLedger(path string) (l *Ledger, torn bool, err error) {
	l = newLedger()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("sandbox: read ledger: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	// The last element is "" after a final newline, or a torn line left by a killed process.
	torn = lines[len(lines)-1] != ""
	for _, line := range lines[:len(lines)-1] {
		l.apply(line)
	}
	return l, torn, nil
}

// apply adds one line; malformed (torn) lines are skipped.
func (l *Ledger) apply(line string) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return
	}
	switch f[0] {
	case "sent":
		if len(f) < 3 {
			return
		}
		if _, ok := l.Sent[f[1]]; !ok {
			l.Order = append(l.Order, f[1])
		}
		l.Sent[f[1]] = f[2]
		l.Sends[f[2]]++
	case "dup":
		l.Duplicates++
	case "failed":
		l.Failed++
	case "delivered":
		l.Delivered[f[1]] = true
	case "read":
		l.Read[f[1]] = true
	case "inbound":
		l.Inbound++
	}
}
