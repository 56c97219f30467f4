package store

import "time"

// ErasureState is where an erasure job stands.
type ErasureState string

const (
	ErasurePending ErasureState = "pending"
	ErasureRunning ErasureState = "running"
	ErasureDone    ErasureState = "done"
	ErasureFailed  ErasureState = "failed"
)

// Erasure is one erasure job. Its report counts what was removed per kind and never names the
// subject.
type Erasure struct {
	ID          string
	Tenant      string
	WholeTenant bool // the job erases the whole tenant, not one subject
	State       ErasureState
	Actor       string // API key id, or "cli"
	Report      map[string]int64
	ErrorCode   string
	CreatedAt   time.Time
	FinishedAt  time.Time // zero until done or failed
}

// Actor is who asked for an operation: the API key's id (or "cli") and the client's IP.
type Actor struct {
	KeyID string
	IP    string
}

// AuditEntry is one line of the append-only audit log of admin and privacy operations. Target
// names a subject only in its short form (crypt.ShortSubject), as the logs do.
type AuditEntry struct {
	Seq    int64
	At     time.Time
	Tenant string
	Actor  Actor
	Action string // erasure_requested, export, restriction_set, restriction_lifted, key_rotated …
	Target string
	Detail string // the erasure id, a count …: never content or identifiers
}
