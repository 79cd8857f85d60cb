"""Sessions in Redis, ended by key expiry (sliding on every event); no sweeper runs.

Keys (``ct:`` prefix; one Redis, or a Sentinel-managed one, not Cluster):
- ``ct:session:<id>``: a hash (source, userId, anonymousId, index, startedAt, lastSeen, events),
  expiring ``timeout`` seconds after its last event;
- ``ct:session-of:<source>:<identity>``: the live session of a device (anonymousId, else
  userId), with the same expiry;
- ``ct:session-count:<source>:<identity>``: how many sessions that device has had (90 days);
- ``ct:sessions:live``: every session id scored by its expiry, so active sessions are counted
  with one ZCOUNT; ended ones are dropped from it as events pass.

One Lua script joins an event to its session (the one it names in ``context.sessionId`` when
that is live, else its device's, else a new one) and counts it, atomically: concurrent events
of one user never open two sessions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

from clicktrail.clock import format_ts
from clicktrail.errors import DependencyUnavailable
from clicktrail.redisconn import REDIS_DOWN

SESSION_PREFIX = "ct:session:"
POINTER_KEY = "ct:session-of:{source}:{identity}"
COUNTER_KEY = "ct:session-count:{source}:{identity}"
LIVE_KEY = "ct:sessions:live"
COUNTER_TTL_SECONDS = 90 * 24 * 3600

# KEYS: pointer, counter, live index.
# ARGV: 1 new id, 2 now (ISO), 3 now (ms), 4 timeout (s), 5 counter ttl (s), 6 named id or "",
#       7 source, 8 userId or "", 9 anonymousId or "", 10 identity, 11 session key prefix.
# Returns id, index, eventIndex, startedAt.
_TOUCH = """
local prefix = ARGV[11]
local sid = false
if ARGV[6] ~= '' and redis.call('HGET', prefix .. ARGV[6], 'source') == ARGV[7] then
  sid = ARGV[6]
end
if not sid then
  sid = redis.call('GET', KEYS[1])
  if sid and redis.call('EXISTS', prefix .. sid) == 0 then sid = false end
end
if not sid then
  sid = ARGV[1]
  redis.call('HSET', prefix .. sid, 'id', sid, 'source', ARGV[7], 'startedAt', ARGV[2], 'events', 0)
end
local key = prefix .. sid
if not redis.call('HGET', key, 'index') then
  local index = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('HSET', key, 'index', index)
end
local n = redis.call('HINCRBY', key, 'events', 1)
redis.call('HSET', key, 'lastSeen', ARGV[2])
if ARGV[8] ~= '' then redis.call('HSET', key, 'userId', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', key, 'anonymousId', ARGV[9]) end
redis.call('EXPIRE', key, ARGV[4])
redis.call('SET', KEYS[1], sid, 'EX', ARGV[4])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[4]) * 1000, sid)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
local s = redis.call('HMGET', key, 'index', 'startedAt')
return {sid, s[1], n, s[2]}
"""

# KEYS: session hash, live index. ARGV: session id, pointer key prefix.
_END = """
local source, user, anon = unpack(redis.call('HMGET', KEYS[1], 'source', 'userId', 'anonymousId'))
if not source then return 0 end
for _, identity in ipairs({anon, user}) do
  if identity then
    local pointer = ARGV[2] .. source .. ':' .. identity
    if redis.call('GET', pointer) == ARGV[1] then redis.call('DEL', pointer) end
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Touch:
    """One event's claim on a session: whose, when, the session it names (if any), and an id
    in case it starts one."""

    source_id: str
    user_id: str | None
    anonymous_id: str | None
    at: str
    new_id: str
    named_id: str | None = None

    @property
    def identity(self) -> str:
        """Sessions follow the device (anonymousId) when known, so signing in does not split one."""
        return str(self.anonymous_id or self.user_id)


@dataclass(frozen=True)
class SessionView:
    id: str
    source_id: str
    user_id: str | None
    anonymous_id: str | None
    index: int | None
    started_at: str
    last_seen: str | None
    event_count: int
    expires_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sessionId": self.id,
            "sourceId": self.source_id,
            "userId": self.user_id,
            "anonymousId": self.anonymous_id,
            "index": self.index,
            "startedAt": self.started_at,
            "lastSeen": self.last_seen,
            "eventCount": self.event_count,
            "expiresAt": self.expires_at,
        }


class SessionTracker(Protocol):
    def touch_many(self, touches: list[Touch]) -> list[dict[str, Any]]: ...


class SessionStore:
    def __init__(self, client: redis.Redis, timeout_seconds: int) -> None:
        self._client = client
        self.timeout_seconds = timeout_seconds
        self._touch = client.register_script(_TOUCH)
        self._end = client.register_script(_END)

    def touch_many(self, touches: list[Touch]) -> list[dict[str, Any]]:
        """Join each event to its session, in order, in one round-trip: ``context.session``s."""
        if not touches:
            return []
        now_ms = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        for t in touches:
            keys = [
                POINTER_KEY.format(source=t.source_id, identity=t.identity),
                COUNTER_KEY.format(source=t.source_id, identity=t.identity),
                LIVE_KEY,
            ]
            args: list[str | int] = [
                t.new_id, t.at, now_ms, self.timeout_seconds, COUNTER_TTL_SECONDS, t.named_id or "",
                t.source_id, t.user_id or "", t.anonymous_id or "", t.identity, SESSION_PREFIX,
            ]  # fmt: skip
            self._touch(keys=keys, args=args, client=pipe)
        results = self._run(pipe)
        return [
            {"id": sid, "index": int(index), "eventIndex": int(n), "startedAt": started}
            for sid, index, n, started in results
        ]

    def create(self, source_id: str, session_id: str, now: datetime) -> SessionView:
        """A server-issued session: live for ``timeout`` seconds, joined by the events naming it."""
        key = SESSION_PREFIX + session_id
        started = format_ts(now)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(
            key, mapping={"id": session_id, "source": source_id, "startedAt": started, "events": 0}
        )
        pipe.expire(key, self.timeout_seconds)
        pipe.zadd(LIVE_KEY, {session_id: int(now.timestamp() * 1000) + self.timeout_seconds * 1000})
        self._run(pipe)
        view = self.get(session_id)
        assert view is not None
        return view

    def get(self, session_id: str) -> SessionView | None:
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(SESSION_PREFIX + session_id)
        pipe.pttl(SESSION_PREFIX + session_id)
        fields, ttl_ms = self._run(pipe)
        if not fields or ttl_ms < 0:
            return None
        expires = datetime.fromtimestamp(time.time() + ttl_ms / 1000, UTC)
        return SessionView(
            id=session_id,
            source_id=fields["source"],
            user_id=fields.get("userId"),
            anonymous_id=fields.get("anonymousId"),
            index=int(fields["index"]) if "index" in fields else None,
            started_at=fields["startedAt"],
            last_seen=fields.get("lastSeen"),
            event_count=int(fields.get("events", 0)),
            expires_at=format_ts(expires),
        )

    def end(self, session_id: str) -> bool:
        """End a session now; False when it was not live."""
        try:
            ended = self._end(
                keys=[SESSION_PREFIX + session_id, LIVE_KEY],
                args=[session_id, POINTER_KEY.format(source="", identity="")[:-1]],
            )
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        return bool(ended)

    def end_all(self, source_ids: list[str], identities: list[str]) -> int:
        """End every live session of these identities in these sources (for an erasure), and
        forget how many sessions they had."""
        pointers = [
            POINTER_KEY.format(source=s, identity=i) for s in source_ids for i in identities
        ]
        if not pointers:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for pointer in pointers:
            pipe.get(pointer)
        session_ids = {sid for sid in self._run(pipe) if sid}
        ended = sum(1 for sid in session_ids if self.end(sid))
        counters = [
            COUNTER_KEY.format(source=s, identity=i) for s in source_ids for i in identities
        ]
        try:
            self._client.delete(*pointers, *counters)
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        return ended

    def active_count(self) -> int:
        """Sessions live now: one ZCOUNT, whatever their number."""
        try:
            return int(self._client.zcount(LIVE_KEY, int(time.time() * 1000), "+inf"))
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc

    @staticmethod
    def _run(pipe: Any) -> list[Any]:
        try:
            return list(pipe.execute())
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
