"""Sessions in Redis: one live session per (source, identity), ended by key expiry.

A session is a hash that expires ``timeout`` seconds after its last event (the expiry slides on
every event); no sweeper runs. A Lua script finds or starts the session and counts the event in
one atomic step, so concurrent events of one user never open two sessions. The session's
``index`` (the user's nth session) comes from a per-identity counter kept for 90 days.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import redis

from clicktrail.errors import DependencyUnavailable
from clicktrail.redisconn import REDIS_DOWN

# Keys share the hash tag {source:identity} so both land on one Redis Cluster slot.
SESSION_KEY = "ct:session:{{{source}:{identity}}}"
COUNTER_KEY = "ct:session-count:{{{source}:{identity}}}"
COUNTER_TTL_SECONDS = 90 * 24 * 3600

# KEYS: session hash, session counter. ARGV: new session id, now (ISO), timeout, counter ttl.
# Returns id, index, eventIndex (1-based), startedAt.
_TOUCH = """
local id = redis.call('HGET', KEYS[1], 'id')
if not id then
  id = ARGV[1]
  local index = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  redis.call('HSET', KEYS[1], 'id', id, 'index', index, 'startedAt', ARGV[2], 'events', 0)
end
local n = redis.call('HINCRBY', KEYS[1], 'events', 1)
redis.call('HSET', KEYS[1], 'lastSeen', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'index', 'startedAt')
return {id, s[1], n, s[2]}
"""


@dataclass(frozen=True)
class Touch:
    """One event's claim on a session: who, when (ISO time), and an id in case it starts one."""

    source_id: str
    identity: str
    at: str
    new_id: str


class SessionTracker(Protocol):
    def touch_many(self, touches: list[Touch]) -> list[dict[str, Any]]: ...


class SessionStore:
    def __init__(self, client: redis.Redis, timeout_seconds: int) -> None:
        self._client = client
        self._timeout = timeout_seconds
        self._touch = client.register_script(_TOUCH)

    def touch_many(self, touches: list[Touch]) -> list[dict[str, Any]]:
        """Join each event to its session, in order, in one round-trip: ``context.session``s."""
        if not touches:
            return []
        pipe = self._client.pipeline(transaction=False)
        for t in touches:
            keys = [
                SESSION_KEY.format(source=t.source_id, identity=t.identity),
                COUNTER_KEY.format(source=t.source_id, identity=t.identity),
            ]
            self._touch(
                keys=keys, args=[t.new_id, t.at, self._timeout, COUNTER_TTL_SECONDS], client=pipe
            )
        try:
            results = pipe.execute()
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        return [
            {"id": sid, "index": int(index), "eventIndex": int(n), "startedAt": started}
            for sid, index, n, started in results
        ]
