-- Privacy, second part (issue 7).

-- An admin API key may erase its whole tenant (POST /v1/erasures {"tenant": true}).
ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;

-- An erasure job erases one subject or, with whole_tenant, the tenant.
ALTER TABLE erasures ADD COLUMN whole_tenant INTEGER NOT NULL DEFAULT 0;

-- The outbound messages an erasure deleted before they left the gateway, written in the same
-- transaction as the deletion, so a job resumed after a crash still purges them from the streams
-- and ends them rejected subject_erased. Removed when the job is done; no subject in here.
CREATE TABLE erasure_pending (
    erasure_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    channel    TEXT NOT NULL,
    account    TEXT NOT NULL,
    hops       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (erasure_id, message_id)
);
