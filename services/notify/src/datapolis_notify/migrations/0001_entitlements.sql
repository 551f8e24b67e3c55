-- What notify must know to decide a delivery, kept from the other services'
-- events: catalog's datasets (datapolis.catalog.events) and consent's
-- agreements and data-subject consents (datapolis.consent.events).
-- Catalog and consent are the authorities; these rows are their projection,
-- each event applied once (inbox) and never over a newer one (an agreement's
-- or consent's row keeps the ledger sequence of the change it shows).
--
-- Every process that delivers also holds these rows in memory, loaded from a
-- snapshot of these tables and kept current by reading the topics from the
-- offsets stored with the snapshot (entitlement_offsets).

CREATE TABLE datasets (
    dataset_id     TEXT        PRIMARY KEY,
    slug           TEXT        NOT NULL,
    publisher_id   TEXT        NOT NULL,
    access_level   TEXT        NOT NULL CHECK (access_level IN ('open', 'shared', 'personal')),
    topic_name     TEXT        NOT NULL,
    key_field      TEXT,
    subject_field  TEXT,
    theme          TEXT,
    -- The current (highest) schema version and its top-level fields.
    schema_version INT,
    fields         TEXT[]      NOT NULL DEFAULT '{}',
    registered_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at     TIMESTAMPTZ
);
CREATE INDEX datasets_topic ON datasets (topic_name);
CREATE INDEX datasets_slug ON datasets (slug);

-- One row per agreement, in the state of its latest change.
CREATE TABLE agreements (
    agreement_id    TEXT        PRIMARY KEY,
    dataset_id      TEXT        NOT NULL,
    publisher_id    TEXT        NOT NULL,
    consumer_id     TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN
        ('requested', 'granted', 'refused', 'revoked', 'terminated', 'expired')),
    purposes        TEXT[]      NOT NULL DEFAULT '{}',
    -- The fields the consumer may receive (granted or amended terms).
    fields          TEXT[]      NOT NULL DEFAULT '{}',
    valid_from      TIMESTAMPTZ,
    valid_until     TIMESTAMPTZ,
    ledger_sequence BIGINT      NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX agreements_consumer_dataset ON agreements (consumer_id, dataset_id);
CREATE INDEX agreements_publisher ON agreements (publisher_id);

-- One row per data-subject consent, in the state of its latest change.
CREATE TABLE consents (
    consent_id      TEXT        PRIMARY KEY,
    dataset_id      TEXT        NOT NULL,
    subject_id      TEXT        NOT NULL,
    consumer_id     TEXT        NOT NULL,
    agreement_id    TEXT        NOT NULL,
    purpose         TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('granted', 'withdrawn', 'expired')),
    valid_from      TIMESTAMPTZ,
    valid_until     TIMESTAMPTZ,
    ledger_sequence BIGINT      NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX consents_lookup ON consents (dataset_id, consumer_id, subject_id);

-- The next offset to read, per topic partition, for the rows above: written
-- in the transaction that applies an event, so a snapshot of the tables and
-- these offsets agree.
CREATE TABLE entitlement_offsets (
    topic       TEXT   NOT NULL,
    partition   INT    NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);
