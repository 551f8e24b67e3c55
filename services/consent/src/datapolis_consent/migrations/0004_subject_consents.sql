-- Current state of every data-subject consent: a projection of the ledger,
-- written in the transaction that appends the ledger row (see
-- datapolis_consent.subjects). The ledger is the record; this table is what
-- the API reads.
CREATE TABLE subject_consents (
    consent_id       TEXT        PRIMARY KEY,
    dataset_id       TEXT        NOT NULL,
    subject_id       TEXT        NOT NULL,
    -- The issuer of the subject token that granted it: a subject id is
    -- pseudonymous per issuer.
    issuer           TEXT        NOT NULL,
    consumer_org_id  TEXT        NOT NULL,
    -- The agreement the consent was granted within.
    agreement_id     TEXT        NOT NULL REFERENCES agreements (agreement_id),
    purpose          TEXT        NOT NULL,
    valid_from       TIMESTAMPTZ NOT NULL,
    valid_until      TIMESTAMPTZ NOT NULL CHECK (valid_until > valid_from),
    status           TEXT        NOT NULL CHECK (status IN ('granted', 'withdrawn', 'expired')),
    granted_at       TIMESTAMPTZ NOT NULL,
    ended_at         TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL,
    -- The ledger row of the last change.
    ledger_sequence  BIGINT      NOT NULL,
    ledger_hash      TEXT        NOT NULL
);
CREATE INDEX subject_consents_subject ON subject_consents (dataset_id, subject_id, granted_at);
-- What the expiry task looks for.
CREATE INDEX subject_consents_expiring ON subject_consents (valid_until) WHERE status = 'granted';
