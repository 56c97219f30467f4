-- Uploaded attachments (issue 4): POST /v1/media, sent by id. The file name and the bytes are
-- sealed with the tenant key; a file expires (expires_at) and is swept.
CREATE TABLE media (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    mime_type   TEXT NOT NULL,
    size        BIGINT NOT NULL,
    filename_ct {{BLOB}},
    data_ct     {{BLOB}} NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX media_expiry ON media (expires_at);
