-- Privacy operations (issue 7). The wrapped keys moved to the key vault (vault.go): tenant_keys
-- and subject_keys of 0001 stay empty.

-- Erasure jobs. subject holds the blind index only while the job runs; a finished job keeps its
-- counts per kind (report, JSON) and no identifier.
CREATE TABLE erasures (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    subject     TEXT,
    state       TEXT NOT NULL,
    actor       TEXT NOT NULL DEFAULT '',
    report      TEXT NOT NULL DEFAULT '{}',
    error_code  TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    claimed_at  BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX erasures_open ON erasures (state, created_at);

-- Restriction of processing: data kept, nothing sent, until lifted.
CREATE TABLE restrictions (
    tenant     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    actor      TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, subject)
);

-- The audit log of admin and privacy operations: append-only (nothing updates or deletes it).
CREATE TABLE audit_log (
    seq      {{SEQ}},
    at       BIGINT NOT NULL,
    tenant   TEXT NOT NULL,
    actor    TEXT NOT NULL,
    ip       TEXT NOT NULL DEFAULT '',
    action   TEXT NOT NULL,
    target   TEXT NOT NULL DEFAULT '',
    detail   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_tenant ON audit_log (tenant, seq);

-- Usage counts for billing: messages per tenant, UTC day, channel and direction, with no
-- subject. Rows that erasure or retention delete are counted here first, so the counts survive
-- (live messages are counted from the messages table).
CREATE TABLE usage_daily (
    tenant    TEXT NOT NULL,
    day       BIGINT NOT NULL,
    channel   TEXT NOT NULL,
    direction TEXT NOT NULL,
    count     BIGINT NOT NULL,
    PRIMARY KEY (tenant, day, channel, direction)
);
