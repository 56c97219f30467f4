-- Automations (issue 6): contact tags, the fired-at record of schedules, finished actions.

-- Tags a tenant's automations put on a contact, keyed by the contact's blind index only. Erasing
-- the subject deletes them.
CREATE TABLE contact_tags (
    tenant     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    tag        TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, subject, tag)
);

-- The occurrence a schedule rule last fired, shared by every replica.
CREATE TABLE automation_fired (
    tenant   TEXT NOT NULL,
    rule     TEXT NOT NULL,
    fired_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, rule)
);

-- Actions that are not messages (webhook, consent, tag) once done, by their action id (event,
-- rule, action index), so a redelivered event does not repeat them. No subject is named.
CREATE TABLE automation_actions (
    tenant    TEXT NOT NULL,
    action_id TEXT NOT NULL,
    done_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, action_id)
);
