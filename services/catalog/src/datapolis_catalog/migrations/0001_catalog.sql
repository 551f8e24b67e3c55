-- The catalog's registry: organisations, datasets, schema versions, their
-- Kafka topics and live stats. api_keys, outbox and inbox come from the shared
-- migrations applied before this one.

CREATE TABLE organisations (
    org_id        TEXT        PRIMARY KEY,
    name          TEXT        NOT NULL,
    kind          TEXT        NOT NULL
        CHECK (kind IN ('public-authority', 'company', 'association', 'research', 'other')),
    contact_email TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX organisations_name ON organisations (lower(name));

-- A label helps an organisation tell its keys apart (never the secret).
ALTER TABLE api_keys ADD COLUMN label TEXT;

-- Accent folding for search: "electricite" finds "électricité". translate()
-- is immutable, unlike unaccent(), so it may feed a generated column.
CREATE FUNCTION catalog_fold(value TEXT) RETURNS TEXT
LANGUAGE SQL IMMUTABLE PARALLEL SAFE RETURN translate(
    lower(coalesce(value, '')),
    'àâäáãåçéèêëíìîïñóòôöõúùûüýÿœæ',
    'aaaaaaceeeeiiiinooooouuuuyyoa'
);

-- Titles are French or English, so the document is indexed with both
-- stemmers (on folded text): "consommation" and "consumption" both find
-- their plurals, and exact tokens (codes, place names) still match.
CREATE FUNCTION catalog_search_document(title TEXT, description TEXT, keywords TEXT[])
RETURNS tsvector
LANGUAGE SQL IMMUTABLE PARALLEL SAFE RETURN
    setweight(to_tsvector('pg_catalog.french'::regconfig, catalog_fold(title)), 'A')
    || setweight(to_tsvector('pg_catalog.english'::regconfig, catalog_fold(title)), 'A')
    || setweight(to_tsvector('pg_catalog.simple'::regconfig,
                             catalog_fold(array_to_string(keywords, ' '))), 'B')
    || setweight(to_tsvector('pg_catalog.french'::regconfig, catalog_fold(description)), 'C')
    || setweight(to_tsvector('pg_catalog.english'::regconfig, catalog_fold(description)), 'C');

CREATE TABLE datasets (
    dataset_id       TEXT        PRIMARY KEY,
    slug             TEXT        NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    title            TEXT        NOT NULL,
    description      TEXT        NOT NULL DEFAULT '',
    publisher_id     TEXT        NOT NULL REFERENCES organisations (org_id),
    theme            TEXT        NOT NULL,
    keywords         TEXT[]      NOT NULL DEFAULT '{}',
    licence          TEXT        NOT NULL,
    access_level     TEXT        NOT NULL CHECK (access_level IN ('open', 'shared', 'personal')),
    key_field        TEXT,
    subject_field    TEXT,
    update_frequency TEXT,
    spatial_coverage TEXT,
    retention_days   INT         NOT NULL CHECK (retention_days > 0),
    partitions       INT         NOT NULL CHECK (partitions > 0),
    status           TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    schema_version   INT         NOT NULL DEFAULT 1,
    schema_major     INT         NOT NULL DEFAULT 1,
    topic_name       TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at       TIMESTAMPTZ,
    search           tsvector    GENERATED ALWAYS AS
        (catalog_search_document(title, description, keywords)) STORED,
    CHECK ((access_level = 'personal') = (subject_field IS NOT NULL))
);
CREATE INDEX datasets_search ON datasets USING GIN (search);
CREATE INDEX datasets_keywords ON datasets USING GIN (keywords);
CREATE INDEX datasets_publisher ON datasets (publisher_id);

CREATE TABLE schema_versions (
    dataset_id  TEXT        NOT NULL REFERENCES datasets (dataset_id),
    version     INT         NOT NULL,
    major       INT         NOT NULL,
    topic_name  TEXT        NOT NULL,
    json_schema JSONB       NOT NULL,
    created_by  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, version)
);

-- Every topic a dataset needs; provisioned_at stays NULL until Kafka
-- confirmed it, and the reconciler retries those rows.
CREATE TABLE dataset_topics (
    topic_name     TEXT        PRIMARY KEY,
    dataset_id     TEXT        NOT NULL REFERENCES datasets (dataset_id),
    kind           TEXT        NOT NULL CHECK (kind IN ('data', 'raw')),
    major          INT,
    partitions     INT         NOT NULL,
    retention_ms   BIGINT      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    provisioned_at TIMESTAMPTZ
);
CREATE INDEX dataset_topics_pending ON dataset_topics (created_at) WHERE provisioned_at IS NULL;

-- Live stats written by the stats worker from ingest's BatchIngested events.
CREATE TABLE dataset_stats (
    dataset_id         TEXT             PRIMARY KEY REFERENCES datasets (dataset_id),
    records_per_minute DOUBLE PRECISION NOT NULL,
    accepted_last_hour BIGINT           NOT NULL,
    rejected_last_hour BIGINT           NOT NULL,
    rejection_rate     DOUBLE PRECISION,
    last_record_at     TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ      NOT NULL DEFAULT now()
);
