-- The consent ledger: every state change of an agreement or a consent is one
-- row, chained by hash (see datapolis_consent.ledger). Rows are only ever
-- inserted; current state lives in projections written in the same
-- transaction.

CREATE TABLE ledger (
    sequence    BIGINT      PRIMARY KEY CHECK (sequence > 0),
    entity_kind TEXT        NOT NULL CHECK (entity_kind IN ('agreement', 'consent')),
    entity_id   TEXT        NOT NULL CHECK (entity_id <> ''),
    change      TEXT        NOT NULL CHECK (change ~ '^[a-z][a-z_]*$'),
    payload     JSONB       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    actor       TEXT        NOT NULL CHECK (actor <> ''),
    recorded_at TIMESTAMPTZ NOT NULL,
    prev_hash   TEXT        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash        TEXT        NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX ledger_entity ON ledger (entity_kind, entity_id, sequence);

-- The chain's head, one row. Appends lock it (SELECT ... FOR UPDATE) so they
-- run one after the other and the chain stays linear; a rolled-back append
-- leaves it as it was, so sequences have no gaps. It also lets verification
-- notice rows deleted from the end of the chain.
CREATE TABLE ledger_head (
    singleton   BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    sequence    BIGINT      NOT NULL,
    hash        TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ
);
INSERT INTO ledger_head (sequence, hash) VALUES (0, repeat('0', 64));

-- Signed checkpoints of the head. The token is what proves it: the columns
-- are a copy for lookups, and verification reads the signed payload.
CREATE TABLE ledger_checkpoints (
    checkpoint_id   BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sequence        BIGINT      NOT NULL CHECK (sequence >= 0),
    hash            TEXT        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    checkpointed_at TIMESTAMPTZ NOT NULL,
    token           TEXT        NOT NULL
);
CREATE INDEX ledger_checkpoints_sequence ON ledger_checkpoints (sequence);

-- PostgreSQL itself refuses to change recorded history: UPDATE, DELETE and
-- TRUNCATE fail, whoever runs them. Only the tables' owner or a superuser can
-- switch this off (ALTER TABLE ... DISABLE TRIGGER), and the hash chain and
-- the signed checkpoints still show what was changed. ENABLE ALWAYS keeps the
-- guard on under session_replication_role = replica too.
CREATE FUNCTION consent_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'DL001',
              HINT = 'Record a new change instead of editing history.';
END
$$;

CREATE TRIGGER ledger_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION consent_ledger_append_only();
ALTER TABLE ledger ENABLE ALWAYS TRIGGER ledger_append_only;

CREATE TRIGGER ledger_checkpoints_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION consent_ledger_append_only();
ALTER TABLE ledger_checkpoints ENABLE ALWAYS TRIGGER ledger_checkpoints_append_only;
