-- Profiles: one per userId. traits merge key by key, the newer identify winning (trait_times
-- holds the event time that set each trait). first_seen / last_seen are server receive times.
CREATE TABLE profiles (
    user_id      text PRIMARY KEY,
    traits       jsonb NOT NULL DEFAULT '{}'::jsonb,
    trait_times  jsonb NOT NULL DEFAULT '{}'::jsonb,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_last_seen ON profiles (last_seen);

-- Other ids of a profile: anonymous ids seen with its userId, and ids merged into it by alias.
CREATE TABLE profile_aliases (
    alias      text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES profiles (user_id) ON DELETE CASCADE,
    linked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profile_aliases_user_id ON profile_aliases (user_id);

-- Right-to-erasure requests, carried out by the purge task. A finished one keeps every id it
-- erased (the user's and its aliases) and where its tombstone went on the profiles topic; the
-- history sink does not write back events of those ids received before it finished.
CREATE TABLE erasure_requests (
    id                  bigserial PRIMARY KEY,
    user_id             text NOT NULL,
    requested_at        timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    erased_ids          text[] NOT NULL DEFAULT '{}',
    tombstone_partition integer,
    tombstone_offset    bigint
);
CREATE INDEX erasure_requests_erased_ids ON erasure_requests USING gin (erased_ids);
CREATE UNIQUE INDEX erasure_requests_one_pending ON erasure_requests (user_id) WHERE completed_at IS NULL;
CREATE INDEX erasure_requests_user_id ON erasure_requests (user_id);

-- Every published event, partitioned by the UTC day it was received. (day, message_id) is the
-- key: a replayed record, or a client's retry the same day, is written once.
CREATE TABLE event_history (
    day           date NOT NULL,
    message_id    text NOT NULL,
    received_at   timestamptz NOT NULL,
    event_time    timestamptz,
    source_id     text NOT NULL,
    type          text NOT NULL,
    event         text,
    user_id       text,
    anonymous_id  text,
    session_id    text,
    payload       jsonb NOT NULL,
    PRIMARY KEY (day, message_id)
) PARTITION BY RANGE (day);
CREATE INDEX event_history_user_id ON event_history (user_id);
CREATE INDEX event_history_anonymous_id ON event_history (anonymous_id);
