-- Consent registry (DESIGN.md §3.5). Subjects appear only as their blind index (HMAC of the
-- normalised identifier); the identifier itself and the evidence note are ciphertexts sealed
-- under the subject's data key (AD tenant|consent_events|<id>|subject and …|note).

-- The current state per tenant, channel, subject and category ('' = the plain, channel-wide entry).
CREATE TABLE consents (
    tenant     TEXT NOT NULL,
    channel    TEXT NOT NULL,
    subject    TEXT NOT NULL,
    category   TEXT NOT NULL DEFAULT '',
    state      TEXT NOT NULL,
    source     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, channel, subject, category)
);

-- Append-only evidence. inbound_message_id is set for keywords: one row per inbound message.
CREATE TABLE consent_events (
    seq                {{SEQ}},
    id                 {{ID}} NOT NULL UNIQUE,
    tenant             TEXT NOT NULL,
    channel            TEXT NOT NULL,
    subject            TEXT NOT NULL,
    category           TEXT NOT NULL DEFAULT '',
    state              TEXT NOT NULL,
    source             TEXT NOT NULL,
    actor              TEXT NOT NULL DEFAULT '',
    at                 BIGINT NOT NULL,
    inbound_message_id TEXT,
    subject_ct         {{BLOB}} NOT NULL,
    note_ct            {{BLOB}}
);
CREATE INDEX consent_events_subject ON consent_events (tenant, channel, subject, at);
CREATE UNIQUE INDEX consent_events_inbound ON consent_events (tenant, inbound_message_id) WHERE inbound_message_id IS NOT NULL;

-- The reply window: when each subject last wrote on a channel.
CREATE TABLE consent_windows (
    tenant          TEXT NOT NULL,
    channel         TEXT NOT NULL,
    subject         TEXT NOT NULL,
    last_inbound_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, channel, subject)
);

-- The opt-out confirmation: the one message (by id, which only the keyword handler creates)
-- allowed to reach a subject after their STOP.
CREATE TABLE consent_bypass (
    tenant             TEXT NOT NULL,
    message_id         {{ID}} NOT NULL,
    subject            TEXT NOT NULL,
    inbound_message_id TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    PRIMARY KEY (tenant, message_id)
);
CREATE UNIQUE INDEX consent_bypass_inbound ON consent_bypass (tenant, inbound_message_id);
