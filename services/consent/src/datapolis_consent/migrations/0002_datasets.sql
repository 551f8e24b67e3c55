-- Consent's copy of what catalog announced about datasets: who publishes each
-- one, its access level, its subject and key fields, and the fields of its
-- current schema version. Catalog is the authority; these rows are rebuilt
-- from datapolis.catalog.events, each event applied once through the inbox.
CREATE TABLE datasets (
    dataset_id     TEXT        PRIMARY KEY,
    slug           TEXT        NOT NULL,
    publisher_id   TEXT        NOT NULL,
    access_level   TEXT        NOT NULL CHECK (access_level IN ('open', 'shared', 'personal')),
    key_field      TEXT,
    subject_field  TEXT,
    -- The current (highest) schema version and its fields; NULL and empty
    -- until the first version is known.
    schema_version INT,
    fields         TEXT[]      NOT NULL DEFAULT '{}',
    field_paths    TEXT[]      NOT NULL DEFAULT '{}',
    registered_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at     TIMESTAMPTZ
);
-- A retired dataset frees its slug for a new one, so several rows may share
-- a slug. Not unique even among live rows: the two datasets' events travel on
-- different partitions, and the new one may be applied before the old one's
-- retirement.
CREATE INDEX datasets_slug ON datasets (slug);

-- The fields of every schema version, kept so that a version announced
-- before its dataset (or re-announced) still yields the right current one.
CREATE TABLE dataset_schema_versions (
    dataset_id  TEXT        NOT NULL,
    version     INT         NOT NULL,
    major       INT         NOT NULL,
    fields      TEXT[]      NOT NULL,
    field_paths TEXT[]      NOT NULL,
    added_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, version)
);
