-- Current state of every agreement: a projection of the ledger, written in
-- the transaction that appends the ledger row (see datapolis_consent.agreements).
-- The ledger is the record; this table is what the API reads.
CREATE TABLE agreements (
    agreement_id        TEXT        PRIMARY KEY,
    dataset_id          TEXT        NOT NULL,
    publisher_org_id    TEXT        NOT NULL,
    consumer_org_id     TEXT        NOT NULL,
    project_name        TEXT        NOT NULL CHECK (project_name <> ''),
    project_description TEXT        NOT NULL,
    purposes            TEXT[]      NOT NULL,
    requested_fields    TEXT[]      NOT NULL,
    -- NULL until granted; the publisher may narrow the request.
    granted_fields      TEXT[],
    valid_from          TIMESTAMPTZ NOT NULL,
    valid_until         TIMESTAMPTZ NOT NULL CHECK (valid_until > valid_from),
    status              TEXT        NOT NULL CHECK (status IN
        ('requested', 'granted', 'refused', 'revoked', 'terminated', 'expired')),
    -- Why it was refused, revoked, terminated or expired (the last reason).
    reason              TEXT,
    requested_at        TIMESTAMPTZ NOT NULL,
    decided_at          TIMESTAMPTZ,
    ended_at            TIMESTAMPTZ,
    updated_at          TIMESTAMPTZ NOT NULL,
    -- The ledger row of the last change.
    ledger_sequence     BIGINT      NOT NULL,
    ledger_hash         TEXT        NOT NULL
);
CREATE INDEX agreements_consumer ON agreements (consumer_org_id, requested_at);
CREATE INDEX agreements_publisher ON agreements (publisher_org_id, requested_at);
CREATE INDEX agreements_dataset ON agreements (dataset_id) WHERE status IN ('requested', 'granted');
-- What the expiry task looks for.
CREATE INDEX agreements_expiring ON agreements (valid_until) WHERE status = 'granted';
