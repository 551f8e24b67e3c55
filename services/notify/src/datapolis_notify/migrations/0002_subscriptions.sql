-- Subscriptions: what a consumer organisation receives, and where.
CREATE TABLE subscriptions (
    subscription_id   TEXT        PRIMARY KEY,
    consumer_id       TEXT        NOT NULL,
    -- The dataset whose records it receives; NULL for a subscription to
    -- notifications only.
    dataset_id        TEXT,
    channel           TEXT        NOT NULL CHECK (channel IN ('webhook', 'sse', 'kafka')),
    -- Webhook target (channel 'webhook' only).
    url               TEXT,
    -- The purpose it receives under: required for a personal dataset (a
    -- subject's consent is given for one purpose), one of the agreement's.
    purpose           TEXT,
    -- The fields it asks for (NULL: all it may receive); always narrowed
    -- further by the agreement's fields at each delivery.
    fields            TEXT[],
    -- Equality filter on top-level fields: {"district": "Centre"}.
    filter            JSONB       NOT NULL DEFAULT '{}',
    -- Notifications it wants besides records: 'agreements' (its own
    -- agreements' changes), 'datasets' (schema changes and retirement of the
    -- dataset it receives), 'endpoint' (its endpoint disabled).
    notifications     TEXT[]      NOT NULL DEFAULT '{}',
    -- Themes it follows: a new dataset in one of them is notified.
    themes            TEXT[]      NOT NULL DEFAULT '{}',
    batch_max_records INT         NOT NULL DEFAULT 100 CHECK (batch_max_records BETWEEN 1 AND 1000),
    batch_linger_ms   INT         NOT NULL DEFAULT 20 CHECK (batch_linger_ms BETWEEN 0 AND 10000),
    status            TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason   TEXT,
    disabled_at       TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((channel = 'webhook') = (url IS NOT NULL))
);
CREATE INDEX subscriptions_consumer ON subscriptions (consumer_id, created_at);
CREATE INDEX subscriptions_dataset ON subscriptions (dataset_id) WHERE status = 'active';

-- Signing keys of a webhook subscription (Standard Webhooks). 'v1': an
-- HMAC-SHA256 secret 'whsec_...'; 'v1a': an Ed25519 key pair, 'whsk_...'
-- kept here and 'whpk_...' given to the receiver. A rotated-out key keeps
-- signing until expires_at, so receivers can switch without a gap.
CREATE TABLE subscription_secrets (
    subscription_id TEXT        NOT NULL REFERENCES subscriptions ON DELETE CASCADE,
    secret_id       TEXT        NOT NULL,
    scheme          TEXT        NOT NULL CHECK (scheme IN ('v1', 'v1a')),
    secret          TEXT        NOT NULL,
    public_key      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ,
    PRIMARY KEY (subscription_id, secret_id),
    CHECK ((scheme = 'v1a') = (public_key IS NOT NULL))
);

-- Each endpoint's health, updated by the delivery worker.
CREATE TABLE endpoint_health (
    subscription_id      TEXT        PRIMARY KEY REFERENCES subscriptions ON DELETE CASCADE,
    attempts             BIGINT      NOT NULL DEFAULT 0,
    failures             BIGINT      NOT NULL DEFAULT 0,
    consecutive_failures INT         NOT NULL DEFAULT 0,
    last_success_at      TIMESTAMPTZ,
    last_failure_at      TIMESTAMPTZ,
    last_failure_reason  TEXT,
    -- Since when every attempt failed (NULL while healthy); an endpoint
    -- failing for NOTIFY_DISABLE_AFTER is disabled.
    failing_since        TIMESTAMPTZ,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
