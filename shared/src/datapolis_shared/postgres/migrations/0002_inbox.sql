-- Inbox: ids of the events a consumer has applied, written in the same
-- transaction as the effect, so a redelivered event fails on the key instead
-- of being applied twice.
CREATE TABLE inbox (
    consumer     TEXT        NOT NULL,
    event_id     TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
