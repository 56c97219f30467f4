-- Switchboard schema, version 1. One file for both engines: {{BLOB}}, {{SEQ}} and {{ID}} are
-- replaced per engine (BLOB / BYTEA; INTEGER PRIMARY KEY / BIGINT identity; TEXT / TEXT COLLATE "C",
-- so ids sort bytewise, as ULIDs are meant to, on both). Every timestamp is an
-- int64 count of microseconds since the Unix epoch, UTC.

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

-- Wrapped keys (DESIGN.md §3.6). key_id names the key that wrapped this one: a master key id
-- for tenant keys, a tenant key id for subject keys. Rotation finds its work by key_id.
CREATE TABLE tenant_keys (
    tenant     TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    wrapped    {{BLOB}} NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tenant_keys_key_id ON tenant_keys (key_id);

CREATE TABLE subject_keys (
    tenant     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    wrapped    {{BLOB}} NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, subject)
);

-- Messages: peer, content and metadata are ciphertexts (AD tenant|messages|id|column), sealed
-- under the data key of the peer's blind index (peer_index). peer_masked is safe to log.
CREATE TABLE messages (
    id                 {{ID}} PRIMARY KEY,
    tenant             TEXT NOT NULL,
    direction          TEXT NOT NULL,
    channel            TEXT NOT NULL,
    account            TEXT NOT NULL,
    peer_index         TEXT NOT NULL,
    peer_ct            {{BLOB}} NOT NULL,
    peer_masked        TEXT NOT NULL,
    content_ct         {{BLOB}},
    metadata_ct        {{BLOB}},
    status             TEXT NOT NULL,
    error_code         TEXT NOT NULL DEFAULT '',
    error_message      TEXT NOT NULL DEFAULT '',
    channel_message_id TEXT,
    idempotency_key    TEXT,
    request_hash       TEXT NOT NULL DEFAULT '',
    hops               INTEGER NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX messages_tenant_created ON messages (tenant, created_at DESC, id DESC);
CREATE INDEX messages_tenant_status_created ON messages (tenant, status, created_at DESC, id DESC);
CREATE INDEX messages_tenant_peer ON messages (tenant, peer_index, created_at DESC);
CREATE INDEX messages_accepted ON messages (id) WHERE status = 'accepted';
CREATE UNIQUE INDEX messages_idempotency ON messages (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX messages_channel_message_id ON messages (tenant, channel, account, channel_message_id) WHERE channel_message_id IS NOT NULL;

-- Status history: one row per distinct event (message, status, participant).
CREATE TABLE status_events (
    seq                {{SEQ}},
    message_id         {{ID}} NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    tenant             TEXT NOT NULL,
    status             TEXT NOT NULL,
    previous           TEXT NOT NULL DEFAULT '',
    at                 BIGINT NOT NULL,
    channel_message_id TEXT NOT NULL DEFAULT '',
    participant        TEXT NOT NULL DEFAULT '',
    error_code         TEXT NOT NULL DEFAULT '',
    error_message      TEXT NOT NULL DEFAULT '',
    UNIQUE (message_id, status, participant)
);
