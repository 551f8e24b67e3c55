-- Idempotency-Key of HTTP batches: the first answer, replayed to a retry with
-- the same key and body until expires_at. A row without a response is a
-- request in progress; its lease lets a retry take over after a crash.
CREATE TABLE idempotency_keys (
    org_id          TEXT        NOT NULL,
    dataset_id      TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    request_hash    TEXT        NOT NULL,
    response        BYTEA,
    leased_until    TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, dataset_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
