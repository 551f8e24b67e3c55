-- The delivery log: one row per delivery (a batch of records, or one
-- notification, sent as one message), with the agreement and consent ids it
-- relied on. The consumer, the dataset's publisher and the operator read it,
-- each seeing only their own.
CREATE TABLE deliveries (
    -- The message id: the webhook-id header, the SSE/Kafka event id. The
    -- same across retries and replays, so receivers can deduplicate.
    delivery_id     TEXT        PRIMARY KEY,
    subscription_id TEXT        NOT NULL,
    consumer_id     TEXT        NOT NULL,
    publisher_id    TEXT,
    dataset_id      TEXT,
    channel         TEXT        NOT NULL,
    kind            TEXT        NOT NULL CHECK (kind IN ('records', 'notification')),
    -- 'notification' kind: the event type, e.g. org.datapolis.consent.agreement.revoked.v1.
    event_type      TEXT,
    record_count    INT         NOT NULL DEFAULT 0,
    agreement_ids   TEXT[]      NOT NULL DEFAULT '{}',
    consent_ids     TEXT[]      NOT NULL DEFAULT '{}',
    -- delivered: accepted by the target; pending: waiting for a retry;
    -- dead: retries exhausted (see delivery_queue); withheld: no longer
    -- entitled at an attempt, so not sent.
    status          TEXT        NOT NULL CHECK (status IN ('delivered', 'pending', 'dead', 'withheld')),
    attempts        INT         NOT NULL DEFAULT 0,
    last_status     INT,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_attempt_at TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ
);
CREATE INDEX deliveries_consumer ON deliveries (consumer_id, created_at);
CREATE INDEX deliveries_publisher ON deliveries (publisher_id, created_at);
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, created_at);

-- Deliveries not yet done: waiting for a retry, or dead after the last one.
-- The records are kept as read from the dataset topic, before any filter or
-- projection, so entitlement and projection are decided again at every
-- attempt, retry and replay. A key whose delivery waits here holds back the
-- later records of that key for that subscription (they queue behind it, in
-- order, by seq); other keys go on.
CREATE TABLE delivery_queue (
    seq             BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     TEXT        NOT NULL UNIQUE REFERENCES deliveries ON DELETE CASCADE,
    subscription_id TEXT        NOT NULL,
    -- The record keys it carries (ordering lanes).
    keys            TEXT[]      NOT NULL DEFAULT '{}',
    -- [{"topic", "partition", "offset", "key", "value", "headers", "timestamp"}]
    -- for records; the CloudEvent for a notification.
    payload         JSONB       NOT NULL,
    attempt         INT         NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    state           TEXT        NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'dead')),
    dead_at         TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX delivery_queue_due ON delivery_queue (next_attempt_at) WHERE state = 'waiting';
CREATE INDEX delivery_queue_subscription ON delivery_queue (subscription_id, seq);
CREATE INDEX delivery_queue_dead ON delivery_queue (subscription_id, dead_at) WHERE state = 'dead';
