package wastore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AccountState is the connection state of an account as last recorded, for `switchboard whatsapp
// accounts`, /readyz and a restart that must honour a ban.
type AccountState struct {
	State         string    // connected, disconnected, logged_out, banned, outdated, unlinked …
	Detail        string    // a human-readable reason, never content or identifiers
	BannedUntil   time.Time // zero unless banned
	LastConnected time.Time // zero if never
	UpdatedAt     time.Time
	// LastSeenPhone is when the phone the device is linked to was last active (zero if unknown):
	// WhatsApp unlinks a companion device whose phone stays offline for about 14 days.
	LastSeenPhone time.Time
}

// SaveState records the account's state.
func (c *Container) SaveState(ctx context.Context, s AccountState) error {
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = c.now()
	}
	_, err := c.exec(ctx, `INSERT INTO wa_account_state (tenant, account, state, detail, banned_until, last_connected, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (tenant, account) DO UPDATE SET state=excluded.state, detail=excluded.detail,
			banned_until=excluded.banned_until, last_connected=excluded.last_connected, updated_at=excluded.updated_at`,
		c.tenant, c.account, s.State, s.Detail, unixMilli(s.BannedUntil), unixMilli(s.LastConnected), unixMilli(s.UpdatedAt))
	if err != nil {
		return fmt.Errorf("wastore: save account state: %w", err)
	}
	if s.LastSeenPhone.IsZero() {
		return nil
	}
	_, err = c.exec(ctx, `INSERT INTO wa_phone_seen (tenant, account, seen_at) VALUES ($1, $2, $3)
		ON CONFLICT (tenant, account) DO UPDATE SET seen_at=excluded.seen_at WHERE excluded.seen_at > wa_phone_seen.seen_at`,
		c.tenant, c.account, unixMilli(s.LastSeenPhone))
	if err != nil {
		return fmt.Errorf("wastore: save when the phone was seen: %w", err)
	}
	return nil
}

// LoadState returns the account's recorded state; ok=false when none was recorded.
func (c *Container) LoadState(ctx context.Context) (s AccountState, ok bool, err error) {
	var banned, connected, updated, seen int64
	err = c.queryRow(ctx, `SELECT s.state, s.detail, s.banned_until, s.last_connected, s.updated_at, COALESCE(p.seen_at, 0)
		FROM wa_account_state s LEFT JOIN wa_phone_seen p ON p.tenant = s.tenant AND p.account = s.account
		WHERE s.tenant=$1 AND s.account=$2`,
		c.tenant, c.account).Scan(&s.State, &s.Detail, &banned, &connected, &updated, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return s, false, nil
	} else if err != nil {
		return s, false, fmt.Errorf("wastore: load account state: %w", err)
	}
	s.BannedUntil, s.LastConnected, s.UpdatedAt, s.LastSeenPhone = fromMilli(banned), fromMilli(connected), fromMilli(updated), fromMilli(seen)
	return s, true, nil
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
