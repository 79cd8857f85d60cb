"""Sessions in Redis, ended by key expiry (sliding on every event); no sweeper runs.

Keys (``ct:`` prefix; one Redis, or a Sentinel-managed one, not Cluster):
- ``ct:session:<id>``: a hash (source, userId, anonymousId, index, startedAt, lastSeen, events),
  expiring ``timeout`` seconds after its last event;
- ``ct:session-of:<source>:<identity>``: the live session of a device (anonymousId, else
  userId), with the same expiry;
- ``ct:session-count:<source>:<identity>``: how many sessions that device has had (90 days);
- ``ct:sessions:live``: every session id scored by its expiry, so active sessions are counted
  with one ZCOUNT; ended ones are dropped from it as events pass.

One Lua script call joins every event of a batch to its session (the one it names in
``context.sessionId`` when that is live, else its device's, else a new one) and counts it,
atomically: concurrent events of one user never open two sessions. The batch travels as one
JSON argument, so a thousand events cost one command.

An event of an id erased after it was received (``ct:erased:<sha256 of the id>``, which an
erasure sets before it ends the id's sessions) is given a session that is not stored: an event
already on its way through a worker when the erasure ran cannot bring the sessions back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
import redis

from clicktrail.clock import SYSTEM_CLOCK, Clock, epoch_ms, format_ts, parse_ts
from clicktrail.errors import DependencyUnavailable
from clicktrail.redisconn import REDIS_DOWN
from clicktrail.telemetry import dependency_span

SESSION_PREFIX = "ct:session:"
POINTER_KEY = "ct:session-of:{source}:{identity}"
COUNTER_KEY = "ct:session-count:{source}:{identity}"
LIVE_KEY = "ct:sessions:live"
COUNTER_TTL_SECONDS = 90 * 24 * 3600
# Set by an erasure, to the erasure's time (ms); the id is hashed: Redis keeps no erased id.
MARK_KEY = "ct:erased:{digest}"


def mark_key(identity: str) -> str:
    return MARK_KEY.format(digest=hashlib.sha256(identity.encode()).hexdigest())


# One call joins every event of a batch to its session, in order.
# KEYS: the live index. ARGV[1]: JSON {"now_ms", "timeout", "counter_ttl", "prefix",
#   "touches": [[pointer key, counter key, new id, named id or "", source, userId or "",
#                anonymousId or "", at (ISO), at (ms), erasure mark keys...], ...]}.
# Returns JSON: [[id, index, eventIndex, startedAt], ...], one per touch.
_TOUCH_MANY = """
local batch = cjson.decode(ARGV[1])
local prefix, timeout, now_ms = batch.prefix, batch.timeout, batch.now_ms
local out, sessions, order, joined = {}, {}, {}, {}
local function erased(t)
  for j = 10, #t do
    local mark = redis.call('GET', t[j])
    if mark and tonumber(mark) >= t[9] then return true end
  end
  return false
end
for i, t in ipairs(batch.touches) do
  if erased(t) then
    out[i] = {t[3], 0, 0, t[8]}
  else
    local pointer, counter, new_id, named, source = t[1], t[2], t[3], t[4], t[5]
    local user, anon, at = t[6], t[7], t[8]
    local sid = false
    if named ~= '' then
      local known = sessions[named]
      if (known and known.source == source)
        or (not known and redis.call('HGET', prefix .. named, 'source') == source) then
        sid = named
      end
    end
    if not sid then
      sid = joined[pointer]
      if not sid then
        sid = redis.call('GET', pointer)
        if sid and not sessions[sid] and redis.call('EXISTS', prefix .. sid) == 0 then
          sid = false
        end
      end
    end
    local s = sid and sessions[sid]
    if not s then
      if sid then
        local f = redis.call('HMGET', prefix .. sid, 'source', 'index', 'startedAt', 'events')
        s = {source = f[1], index = f[2], startedAt = f[3], events = tonumber(f[4] or 0)}
      else
        sid = new_id
        s = {source = source, startedAt = at, events = 0, new = true}
      end
      if not s.index then s.index = redis.call('INCR', counter); s.counter = counter end
      s.index = tonumber(s.index)
      s.pointers = {}
      sessions[sid] = s
      order[#order + 1] = sid
    end
    s.events = s.events + 1
    s.lastSeen = at
    if user ~= '' then s.userId = user end
    if anon ~= '' then s.anonymousId = anon end
    s.pointers[pointer] = true
    joined[pointer] = sid
    out[i] = {sid, s.index, s.events, s.startedAt}
  end
end
for _, sid in ipairs(order) do
  local s, key = sessions[sid], prefix .. sid
  local fields = {'index', s.index, 'events', s.events, 'lastSeen', s.lastSeen}
  if s.new then
    for _, v in ipairs({'id', sid, 'source', s.source, 'startedAt', s.startedAt}) do
      fields[#fields + 1] = v
    end
  end
  if s.userId then fields[#fields + 1] = 'userId'; fields[#fields + 1] = s.userId end
  if s.anonymousId then
    fields[#fields + 1] = 'anonymousId'; fields[#fields + 1] = s.anonymousId
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('EXPIRE', key, timeout)
  if s.counter then redis.call('EXPIRE', s.counter, batch.counter_ttl) end
  for pointer in pairs(s.pointers) do redis.call('SET', pointer, sid, 'EX', timeout) end
  redis.call('ZADD', KEYS[1], now_ms + timeout * 1000, sid)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return cjson.encode(out)
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


def _ms(at: str) -> int:
    moment = parse_ts(at)
    # An unreadable time counts as the latest: no erasure is later than it.
    return int(moment.timestamp() * 1000) if moment is not None else 2**53


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
    """Sessions in Redis. Which sessions count as live (the live index, ``active_count``) and
    when a session is said to expire go by ``clock``; the keys themselves expire by Redis."""

    def __init__(
        self, client: redis.Redis, timeout_seconds: int, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._client = client
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._touch = client.register_script(_TOUCH_MANY)
        self._end = client.register_script(_END)

    def touch_many(self, touches: list[Touch]) -> list[dict[str, Any]]:
        """Join each event to its session, in order, in one round-trip: ``context.session``s."""
        if not touches:
            return []
        batch = {
            "now_ms": epoch_ms(self._clock),
            "timeout": self.timeout_seconds,
            "counter_ttl": COUNTER_TTL_SECONDS,
            "prefix": SESSION_PREFIX,
            "touches": [
                [
                    POINTER_KEY.format(source=t.source_id, identity=t.identity),
                    COUNTER_KEY.format(source=t.source_id, identity=t.identity),
                    t.new_id,
                    t.named_id or "",
                    t.source_id,
                    t.user_id or "",
                    t.anonymous_id or "",
                    t.at,
                    _ms(t.at),
                    *(mark_key(i) for i in (t.user_id, t.anonymous_id) if i),
                ]
                for t in touches
            ],
        }
        try:
            with dependency_span("redis sessions.touch_many", "redis", "EVALSHA", len(touches)):
                joined = self._touch(keys=[LIVE_KEY], args=[orjson.dumps(batch)])
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        return [
            {"id": sid, "index": index, "eventIndex": n, "startedAt": started}
            for sid, index, n, started in orjson.loads(joined)
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
        expires = self._clock.now() + timedelta(milliseconds=ttl_ms)
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
            return int(self._client.zcount(LIVE_KEY, epoch_ms(self._clock), "+inf"))
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc

    @staticmethod
    def _run(pipe: Any) -> list[Any]:
        try:
            return list(pipe.execute())
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
