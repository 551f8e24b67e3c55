-- API keys known to this service. Catalog issues keys; other services keep
-- this table in step from datapolis.catalog.events. Only hashes are stored.
CREATE TABLE api_keys (
    key_id      TEXT        PRIMARY KEY,
    org_id      TEXT        NOT NULL,
    scopes      TEXT[]      NOT NULL,
    secret_hash TEXT        NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_org ON api_keys (org_id);
