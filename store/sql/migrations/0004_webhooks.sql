-- Webhook endpoints created through the API (issue 8), and the delivery log of every endpoint.

-- secrets_ct is the JSON list of the endpoint's whsec_ secrets, sealed with the tenant key under
-- tenant | webhooks | <id> | secret. disabled_at is 0 while the endpoint is enabled.
CREATE TABLE webhooks (
    tenant          TEXT NOT NULL,
    id              TEXT NOT NULL,
    url             TEXT NOT NULL,
    events          TEXT NOT NULL DEFAULT '',
    allow_private   INTEGER NOT NULL DEFAULT 0,
    secrets_ct      {{BLOB}} NOT NULL,
    created_at      BIGINT NOT NULL,
    disabled_at     BIGINT NOT NULL DEFAULT 0,
    disabled_reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, id)
);

-- One row per HTTP attempt: ids, numbers and an error class, never content or addresses.
-- Rows older than the retry period are deleted (retention).
CREATE TABLE webhook_attempts (
    seq         {{SEQ}},
    tenant      TEXT NOT NULL,
    webhook     TEXT NOT NULL,
    event       TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    message_id  TEXT NOT NULL DEFAULT '',
    attempt     INTEGER NOT NULL,
    status_code INTEGER NOT NULL DEFAULT 0,
    latency_ms  BIGINT NOT NULL DEFAULT 0,
    error       TEXT NOT NULL DEFAULT '',
    at          BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (tenant, webhook, seq);
CREATE INDEX webhook_attempts_at ON webhook_attempts (at);
