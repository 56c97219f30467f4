package wastore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// deviceTables are the tables that hold one account's device state, in deletion order.
var deviceTables = []string{
	"wa_identity", "wa_session", "wa_prekey", "wa_sender_key",
	"wa_appstate_sync_key", "wa_appstate_version", "wa_appstate_mac",
	"wa_contact", "wa_chat_settings", "wa_msg_secret", "wa_privacy_token",
	"wa_event_buffer", "wa_lid_map", "wa_device",
}

// schema is applied statement by statement; {{BLOB}} becomes BLOB or BYTEA. Every statement is
// idempotent, so Migrate can run at every start on both engines.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS wa_device (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		state {{BLOB}} NOT NULL,
		created_at BIGINT NOT NULL,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (tenant, account)
	)`,
	`CREATE TABLE IF NOT EXISTS wa_identity (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		addr_ix TEXT NOT NULL,
		name_ix TEXT NOT NULL,
		addr {{BLOB}} NOT NULL,
		identity {{BLOB}} NOT NULL,
		PRIMARY KEY (tenant, account, addr_ix)
	)`,
	`CREATE INDEX IF NOT EXISTS wa_identity_name ON wa_identity (tenant, account, name_ix)`,
	`CREATE TABLE IF NOT EXISTS wa_session (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		addr_ix TEXT NOT NULL,
		name_ix TEXT NOT NULL,
		addr {{BLOB}} NOT NULL,
		session {{BLOB}},
		PRIMARY KEY (tenant, account, addr_ix)
	)`,
	`CREATE INDEX IF NOT EXISTS wa_session_name ON wa_session (tenant, account, name_ix)`,
	`CREATE TABLE IF NOT EXISTS wa_prekey (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		key_id BIGINT NOT NULL,
		key {{BLOB}} NOT NULL,
		uploaded INTEGER NOT NULL,
		PRIMARY KEY (tenant, account, key_id)
	)`,
	`CREATE TABLE IF NOT EXISTS wa_sender_key (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		chat_ix TEXT NOT NULL,
		sender_ix TEXT NOT NULL,
		sender_name_ix TEXT NOT NULL,
		chat {{BLOB}} NOT NULL,
		sender {{BLOB}} NOT NULL,
		sender_key {{BLOB}} NOT NULL,
		PRIMARY KEY (tenant, account, chat_ix, sender_ix)
	)`,
	`CREATE INDEX IF NOT EXISTS wa_sender_key_name ON wa_sender_key (tenant, account, sender_name_ix)`,
	`CREATE TABLE IF NOT EXISTS wa_appstate_sync_key (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		key_id TEXT NOT NULL,
		ts BIGINT NOT NULL,
		key_data {{BLOB}} NOT NULL,
		PRIMARY KEY (tenant, account, key_id)
	)`,
	`CREATE TABLE IF NOT EXISTS wa_appstate_version (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		name TEXT NOT NULL,
		state {{BLOB}} NOT NULL,
		PRIMARY KEY (tenant, account, name)
	)`,
	`CREATE TABLE IF NOT EXISTS wa_appstate_mac (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		name TEXT NOT NULL,
		version BIGINT NOT NULL,
		index_ix TEXT NOT NULL,
		value_mac {{BLOB}} NOT NULL,
		PRIMARY KEY (tenant, account, name, version, index_ix)
	)`,
	`CREATE INDEX IF NOT EXISTS wa_appstate_mac_index ON wa_appstate_mac (tenant, account, name, index_ix)`,
	`CREATE TABLE IF NOT EXISTS wa_contact (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		jid_ix TEXT NOT NULL,
		jid {{BLOB}} NOT NULL,
		info {{BLOB}} NOT NULL,
		PRIMARY KEY (tenant, account, jid_ix)
	)`,
	`CREATE TABLE IF NOT EXISTS wa_chat_settings (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		chat_ix TEXT NOT NULL,
		muted_until BIGINT NOT NULL DEFAULT 0,
		pinned INTEGER NOT NULL DEFAULT 0,
		archived INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (tenant, account, chat_ix)
	)`,
	`CREATE TABLE IF NOT EXISTS wa_msg_secret (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		chat_ix TEXT NOT NULL,
		sender_ix TEXT NOT NULL,
		message_id TEXT NOT NULL,
		sender {{BLOB}} NOT NULL,
		secret {{BLOB}} NOT NULL,
		PRIMARY KEY (tenant, account, chat_ix, sender_ix, message_id)
	)`,
	`CREATE TABLE IF NOT EXISTS wa_privacy_token (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		user_ix TEXT NOT NULL,
		token {{BLOB}} NOT NULL,
		ts BIGINT NOT NULL,
		PRIMARY KEY (tenant, account, user_ix)
	)`,
	`CREATE TABLE IF NOT EXISTS wa_event_buffer (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		ciphertext_hash {{BLOB}} NOT NULL,
		plaintext {{BLOB}},
		server_ts BIGINT NOT NULL,
		insert_ts BIGINT NOT NULL,
		PRIMARY KEY (tenant, account, ciphertext_hash)
	)`,
	`CREATE INDEX IF NOT EXISTS wa_event_buffer_age ON wa_event_buffer (tenant, account, insert_ts)`,
	`CREATE TABLE IF NOT EXISTS wa_lid_map (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		lid_ix TEXT NOT NULL,
		pn_ix TEXT NOT NULL,
		lid {{BLOB}} NOT NULL,
		pn {{BLOB}} NOT NULL,
		PRIMARY KEY (tenant, account, lid_ix)
	)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS wa_lid_map_pn ON wa_lid_map (tenant, account, pn_ix)`,
	`CREATE TABLE IF NOT EXISTS wa_account_state (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		state TEXT NOT NULL,
		detail TEXT NOT NULL DEFAULT '',
		banned_until BIGINT NOT NULL DEFAULT 0,
		last_connected BIGINT NOT NULL DEFAULT 0,
		updated_at BIGINT NOT NULL,
		PRIMARY KEY (tenant, account)
	)`,
	// When the account's phone was last active: a table of its own, because Migrate only creates.
	`CREATE TABLE IF NOT EXISTS wa_phone_seen (
		tenant TEXT NOT NULL,
		account TEXT NOT NULL,
		seen_at BIGINT NOT NULL,
		PRIMARY KEY (tenant, account)
	)`,
}

// Migrate creates wastore's tables and indexes if they do not exist. It is idempotent and safe
// to run at every start, on SQLite and on PostgreSQL.
func Migrate(ctx context.Context, db *sql.DB, dialect Dialect) error {
	blob := "BLOB"
	if dialect == Postgres {
		blob = "BYTEA"
	} else if dialect != SQLite {
		return fmt.Errorf("wastore: unknown dialect %q", dialect)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("wastore: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if dialect == Postgres {
		// Replicas starting together must not race on CREATE TABLE IF NOT EXISTS.
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7716200401)"); err != nil {
			return fmt.Errorf("wastore: migrate lock: %w", err)
		}
	}
	for _, stmt := range schema {
		if _, err := tx.ExecContext(ctx, strings.ReplaceAll(stmt, "{{BLOB}}", blob)); err != nil {
			return fmt.Errorf("wastore: migrate: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("wastore: migrate: %w", err)
	}
	return nil
}
