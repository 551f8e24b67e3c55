-- Ingest's copy of what catalog announced about datasets (catalog is the
-- authority; these rows are rebuilt from datapolis.catalog.events).
CREATE TABLE datasets (
    dataset_id    TEXT        PRIMARY KEY,
    slug          TEXT        NOT NULL,
    publisher_id  TEXT        NOT NULL,
    access_level  TEXT        NOT NULL,
    key_field     TEXT,
    subject_field TEXT,
    topic_name    TEXT        NOT NULL,
    retired_at    TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX datasets_slug ON datasets (slug);

-- Every schema version; the highest is the one records are validated against
-- and its topic the one they are written to.
CREATE TABLE schema_versions (
    dataset_id  TEXT        NOT NULL,
    version     INT         NOT NULL,
    major       INT         NOT NULL,
    topic_name  TEXT        NOT NULL,
    json_schema JSONB       NOT NULL,
    added_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, version)
);
