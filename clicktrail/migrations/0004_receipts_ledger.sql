-- Where each stored event came from in Kafka, so that a receipt (GET /v1/events/<messageId>)
-- is a few index lookups: its record's partition and offset, the schema it was validated
-- against and when Kafka took it (the record's timestamp).
ALTER TABLE event_history
    ADD COLUMN kafka_partition integer,
    ADD COLUMN kafka_offset    bigint,
    ADD COLUMN schema          text,
    ADD COLUMN published_at    timestamptz;
CREATE INDEX event_history_message_id ON event_history (message_id);

-- Dead letters, written by the history sink from the dead-letter topic as it writes the
-- history: one row per event and day it was received (a dead letter of the same event again,
-- after a redelivery or a replay, is written once). payload holds the dead letter itself.
CREATE TABLE dead_letters (
    day             date NOT NULL,
    message_id      text NOT NULL,
    received_at     timestamptz NOT NULL,
    failed_at       timestamptz,
    source_id       text NOT NULL,
    type            text,
    event           text,
    user_id         text,
    anonymous_id    text,
    reason          text NOT NULL,
    schema          text,
    errors          jsonb NOT NULL DEFAULT '[]'::jsonb,
    kafka_partition integer,
    kafka_offset    bigint,
    payload         jsonb NOT NULL,
    PRIMARY KEY (day, message_id)
);
CREATE INDEX dead_letters_message_id ON dead_letters (message_id);
CREATE INDEX dead_letters_user_id ON dead_letters (user_id);
CREATE INDEX dead_letters_anonymous_id ON dead_letters (anonymous_id);

-- The events an erasure removed (or kept the sink from writing): their ids alone, nothing of
-- the user, so that a receipt can say "erased" without keeping what was erased.
CREATE TABLE erased_events (
    day         date NOT NULL,
    message_id  text NOT NULL,
    source_id   text NOT NULL,
    received_at timestamptz NOT NULL,
    erased_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, message_id)
);
CREATE INDEX erased_events_message_id ON erased_events (message_id);

-- The sink's side of the ledger, per source and minute of receivedAt, counted in the
-- transaction that writes the rows, so exactly once:
--   stored      events written to Postgres for the first time (history or dead letters)
--   duplicates  records of an event stored already from an earlier request (a client resent
--               it: another receivedAt), which the workers' deduplication let through
--   copies      further records of an event stored already from the same request (the
--               pipeline's at-least-once copies, dead letters replayed); not in the balance
--   erased      records not written because their user was erased since they were received
CREATE TABLE ledger (
    source_id   text NOT NULL,
    minute      timestamptz NOT NULL,
    stored      bigint NOT NULL DEFAULT 0,
    duplicates  bigint NOT NULL DEFAULT 0,
    copies      bigint NOT NULL DEFAULT 0,
    erased      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (source_id, minute)
);
CREATE INDEX ledger_minute ON ledger (minute);
