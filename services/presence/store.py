"""Presence state in Redis, changed only by Lua scripts so that each change is atomic.

Per user: `conns:{user}`, a sorted set of `<edge id>:<connection id>` scored by the connection's
deadline (ms, Redis clock); `closed:{user}`, the connections the edge said closed, scored by when
(kept 2×TTL, at least a minute, so a heartbeat that arrives late cannot revive one); and `state:{user}`, a hash
with the status contacts were last told (`shown`), the status as last settled (`current`), when the
next announcement may go (`quiet_until`), the explicit state (`explicit`, invisible mode), `alive`
(the last heartbeat or close: the user's last seen time if they go offline) and `last_seen`.
Globally: `deadlines`, a sorted set of users scored by the deadline of their last connection (the
sweeper's index), `typing`, a sorted set of `<conversation id>|<user id>` scored by when the typing
state ends, `announce`, users whose announcement waits for their quiet interval to end, scored by
when it may go, and the sweeper's `swept` / `grace` markers.

Announcements are coalesced per user (across replicas, since the interval is in `state:{user}`): at
most one per interval, the first at once, a change within the interval when it ends (the sweeper
settles `announce`'s due users), carrying the status of that moment. A flapping client costs each
contact at most one `user:status_changed` per interval, and the last state wins.

Every script ends in `settle`: it recomputes what contacts should see and returns whether that
changed, so exactly one caller (whichever replica ran the script) broadcasts each transition. Times
come from Redis (`TIME`), so replicas with skewed clocks agree. Only the sweeper expires
connections: a closed one lingers RECONNECT_GRACE_S from its close (so a quick reconnect does not
flap the user offline and online); a heartbeat or a drop never turns a user offline because another
of their connections looks overdue (it may only be late because presence itself was down). During
the grace after a sweeper outage, an overdue open connection is kept until the grace ends (its
heartbeats may have been lost, not its socket), but a closed one still goes when its linger ends.

The scripts touch a user's keys and the global index together, so presence needs one Redis node
(or every presence key under one hash tag on Redis Cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from services.presence.keys import PresenceKeys

STATE_TTL_MS = 30 * 24 * 3600 * 1000  # last seen and invisible mode are kept a month after the last change
CLOSED_KEPT_MS = 60_000  # at least: a closed connection is remembered this long (a late heartbeat cannot revive it)

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- KEYS[1] conns, KEYS[2] state, KEYS[3] deadlines, KEYS[4] closed, KEYS[5] announce (users whose
-- announcement waits, scored by when it may go). Returns {changed, status, last_seen_ms}.
-- `current` is the status as last settled, `shown` what contacts were last told: they differ while a
-- change waits for the user's quiet interval (`quiet_until`, set by each announcement) to end; the
-- announcement then carries the status of that moment, so the last state wins, and a status that
-- went back to `shown` meanwhile announces nothing.
local function settle(user, now, last_seen, state_ttl, interval)
  local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  local status = 'offline'
  if #top == 0 then
    redis.call('ZREM', KEYS[3], user)
  else
    local deadline = tonumber(top[2])
    redis.call('ZADD', KEYS[3], deadline, user)
    redis.call('PEXPIREAT', KEYS[1], deadline + 3600000)  -- Redis drops it if no sweeper ever comes
    if redis.call('HGET', KEYS[2], 'explicit') ~= 'offline' then status = 'online' end
  end
  local shown = redis.call('HGET', KEYS[2], 'shown') or 'offline'
  local current = redis.call('HGET', KEYS[2], 'current') or shown
  if current ~= status then
    redis.call('HSET', KEYS[2], 'current', status)
    if status == 'offline' then redis.call('HSET', KEYS[2], 'last_seen', last_seen) end
  end
  local changed = 0
  if shown == status then
    redis.call('ZREM', KEYS[5], user)
  else
    local quiet_until = tonumber(redis.call('HGET', KEYS[2], 'quiet_until') or 0)
    if now >= quiet_until then
      changed = 1
      redis.call('HSET', KEYS[2], 'shown', status, 'quiet_until', now + interval)
      redis.call('ZREM', KEYS[5], user)
    else
      redis.call('ZADD', KEYS[5], quiet_until, user)
    end
  end
  redis.call('PEXPIRE', KEYS[2], state_ttl)
  local seen = now
  if status == 'offline' then seen = tonumber(redis.call('HGET', KEYS[2], 'last_seen') or 0) end
  return {changed, status, seen}
end
"""

# ARGV: user, ttl_ms, state_ttl_ms, interval_ms, member... Closed connections are skipped: a heartbeat that was
# in flight when its socket closed, and lands after the drop, does not keep the user online a TTL.
_REPORT = (
    _PRELUDE
    + """
local now = now_ms()
local ttl = tonumber(ARGV[2])
local fresh = 0
for i = 5, #ARGV do
  if not redis.call('ZSCORE', KEYS[4], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    fresh = 1
  end
end
if fresh == 1 then
  -- Connections silent for two TTLs are gone; the ones reported now keep the user online anyway.
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))
  redis.call('HSET', KEYS[2], 'alive', now)
end
return settle(ARGV[1], now, now, tonumber(ARGV[3]), tonumber(ARGV[4]))
"""
)

# ARGV: user, state_ttl_ms, linger_ms (0: gone at once), keep_ms, interval_ms, member... A closed connection
# lingers: its deadline becomes now + linger, whatever it was, so the linger counts from the last
# close and a reconnect within it keeps the user online without an offline/online flap; the sweeper
# expires it otherwise. It is remembered as closed for keep_ms, so a repeated drop changes nothing
# and a late heartbeat does not revive it. `alive` becomes the close time: the user's last seen time
# if nothing else outlives it.
_DROP = (
    _PRELUDE
    + """
local now = now_ms()
local linger = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - keep))
local closed = 0
for i = 6, #ARGV do
  if not redis.call('ZSCORE', KEYS[4], ARGV[i]) then
    redis.call('ZADD', KEYS[4], now, ARGV[i])
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
      closed = 1
      if linger > 0 then redis.call('ZADD', KEYS[1], now + linger, ARGV[i])
      else redis.call('ZREM', KEYS[1], ARGV[i]) end
    end
  end
end
redis.call('PEXPIRE', KEYS[4], keep)
if closed == 1 then redis.call('HSET', KEYS[2], 'alive', now) end
return settle(ARGV[1], now, now, tonumber(ARGV[2]), tonumber(ARGV[5]))
"""
)

# KEYS[6] grace. ARGV: user, state_ttl_ms, interval_ms. Last seen is `alive`: the last heartbeat or close.
_SWEEP = (
    _PRELUDE
    + """
local now = now_ms()
local grace = redis.call('PTTL', KEYS[6])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  if grace > 0 and not redis.call('ZSCORE', KEYS[4], member) then
    -- Presence or Redis was down, so this open connection's heartbeats may have been lost rather
    -- than its socket: keep it until the grace ends (its edge heartbeats again well before that).
    redis.call('ZADD', KEYS[1], now + grace, member)
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
local alive = tonumber(redis.call('HGET', KEYS[2], 'alive') or now)
return settle(ARGV[1], now, alive, tonumber(ARGV[2]), tonumber(ARGV[3]))
"""
)

# ARGV: user, explicit ('' clears), state_ttl_ms, interval_ms
_EXPLICIT = (
    _PRELUDE
    + """
local now = now_ms()
if ARGV[2] == '' then redis.call('HDEL', KEYS[2], 'explicit') else redis.call('HSET', KEYS[2], 'explicit', ARGV[2]) end
return settle(ARGV[1], now, now, tonumber(ARGV[3]), tonumber(ARGV[4]))
"""
)

# ARGV: user, state_ttl_ms, interval_ms. A waiting announcement whose quiet interval ended: settle
# again and announce what the status is now (if it still differs from what contacts were told).
_DUE = (
    _PRELUDE
    + """
local now = now_ms()
local alive = tonumber(redis.call('HGET', KEYS[2], 'alive') or now)
return settle(ARGV[1], now, alive, tonumber(ARGV[2]), tonumber(ARGV[3]))
"""
)

# KEYS[1] announce. ARGV: limit. Users whose waiting announcement may go now.
_DUE_USERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

# KEYS: state... ARGV: none. What each user's contacts currently see.
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  local shown = redis.call('HGET', KEYS[i], 'shown') or 'offline'
  local seen = now
  if shown == 'offline' then seen = tonumber(redis.call('HGET', KEYS[i], 'last_seen') or 0) end
  out[#out + 1] = shown
  out[#out + 1] = seen
end
return out
"""

# KEYS: swept, grace, deadlines, typing. ARGV: swept_px, grace_px, limit.
# When no sweeper ran for a while, presence (or Redis) was down and edges could not heartbeat: open
# connections get a grace period (see _SWEEP), so nobody flaps offline because presence restarted.
_TICK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
redis.call('SET', KEYS[1], now, 'PX', ARGV[1])
local users = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local typing = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
if #typing > 0 then redis.call('ZREM', KEYS[4], unpack(typing)) end
return {users, typing}
"""

# KEYS[1] typing. ARGV: member, window_ms. 1 when the user starts typing (broadcast), 0 when already typing.
_TYPING_ON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if old then return 0 end
return 1
"""

# KEYS[1] the user's counter. ARGV: limit, window_ms. 1 when allowed.
_RATE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return 0 end
return 1
"""


@dataclass(frozen=True)
class Status:
    user_id: str
    online: bool
    last_seen_ms: int
    changed: bool = False


def _status(user_id: str, reply: list[object]) -> Status:
    changed, status, seen = reply
    return Status(user_id, status in (b"online", "online"), int(seen or 0), bool(changed))  # type: ignore[call-overload]


class PresenceStore:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        keys: PresenceKeys,
        ttl_s: float,
        typing_window_s: float,
        announce_interval_s: float = 0.0,
    ) -> None:
        self._redis = redis_client
        self._keys = keys
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._interval_ms = max(0, int(announce_interval_s * 1000))
        self._typing_ms = max(1, int(typing_window_s * 1000))
        self._report = redis_client.register_script(_REPORT)
        self._drop = redis_client.register_script(_DROP)
        self._sweep = redis_client.register_script(_SWEEP)
        self._explicit = redis_client.register_script(_EXPLICIT)
        self._due = redis_client.register_script(_DUE)
        self._due_users = redis_client.register_script(_DUE_USERS)
        self._read = redis_client.register_script(_READ)
        self._tick = redis_client.register_script(_TICK)
        self._typing_on = redis_client.register_script(_TYPING_ON)
        self._rate = redis_client.register_script(_RATE)

    def _user_keys(self, user_id: str) -> list[str]:
        return [
            self._keys.presence_conns(user_id),
            self._keys.presence_state(user_id),
            self._keys.presence("deadlines"),
            self._keys.presence(f"closed:{{{user_id}}}"),
            self._keys.presence("announce"),
        ]

    async def report(self, members: dict[str, list[str]]) -> list[Status]:
        """Connect and heartbeat in one: each user's connections get a fresh deadline."""
        return await self._per_user(
            members,
            lambda user, pipe: self._report(
                keys=self._user_keys(user),
                args=[user, self.ttl_ms, STATE_TTL_MS, self._interval_ms, *members[user]],
                client=pipe,
            ),
        )

    async def drop(self, members: dict[str, list[str]], linger_ms: int) -> list[Status]:
        """Closed connections: each lingers `linger_ms` from now (a reconnect in time keeps the user online)."""
        keep_ms = max(2 * self.ttl_ms, CLOSED_KEPT_MS) + linger_ms  # far longer than a heartbeat is in flight
        return await self._per_user(
            members,
            lambda user, pipe: self._drop(
                keys=self._user_keys(user),
                args=[user, STATE_TTL_MS, linger_ms, keep_ms, self._interval_ms, *members[user]],
                client=pipe,
            ),
        )

    async def sweep(self, users: list[str]) -> list[Status]:
        grace = self._keys.presence("grace")
        return await self._per_user(
            users,
            lambda user, pipe: self._sweep(
                keys=[*self._user_keys(user), grace], args=[user, STATE_TTL_MS, self._interval_ms], client=pipe
            ),
        )

    async def set_explicit(self, user_id: str, explicit: str) -> Status:
        reply = await self._explicit(
            keys=self._user_keys(user_id), args=[user_id, explicit, STATE_TTL_MS, self._interval_ms]
        )
        return _status(user_id, reply)

    async def due(self, limit: int) -> list[str]:
        """Users whose waiting announcement may go now (their quiet interval ended)."""
        return [u.decode() for u in await self._due_users(keys=[self._keys.presence("announce")], args=[limit])]

    async def settle_due(self, users: list[str]) -> list[Status]:
        """Settle users from `due` again: changed where contacts are to be told now."""
        return await self._per_user(
            users,
            lambda user, pipe: self._due(
                keys=self._user_keys(user), args=[user, STATE_TTL_MS, self._interval_ms], client=pipe
            ),
        )

    async def read(self, user_ids: list[str]) -> list[Status]:
        if not user_ids:
            return []
        reply = await self._read(keys=[self._keys.presence_state(u) for u in user_ids])
        return [
            Status(u, reply[2 * i] in (b"online", "online"), int(reply[2 * i + 1] or 0)) for i, u in enumerate(user_ids)
        ]

    async def tick(self, swept_ms: int, grace_ms: int, limit: int) -> tuple[list[str], list[str]]:
        """(users whose last connection is overdue, typing states that ended), the latter removed.
        Starts a grace of `grace_ms` when no tick came for `swept_ms` (see _SWEEP)."""
        keys = [
            self._keys.presence("swept"),
            self._keys.presence("grace"),
            self._keys.presence("deadlines"),
            self._keys.presence("typing"),
        ]
        users, typing = await self._tick(keys=keys, args=[swept_ms, grace_ms, limit])
        return [u.decode() for u in users], [t.decode() for t in typing]

    async def typing_on(self, member: str) -> bool:
        return bool(await self._typing_on(keys=[self._keys.presence("typing")], args=[member, self._typing_ms]))

    async def typing_off(self, member: str) -> bool:
        return bool(await self._redis.zrem(self._keys.presence("typing"), member))

    async def allow(self, name: str, user_id: str, limit: int, window_s: float) -> bool:
        key = self._keys.presence(f"rate:{name}:{{{user_id}}}")
        return bool(await self._rate(keys=[key], args=[limit, max(1, int(window_s * 1000))]))

    async def _per_user(self, users: object, call: object) -> list[Status]:
        user_list = list(users)  # type: ignore[call-overload]
        if not user_list:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in user_list:
                await call(user, pipe)  # type: ignore[operator]
            # Errors are raised as Redis sent them: a pipeline would prefix "Command # 1 ... caused
            # error:" to a LOADING or BUSY reply, and is_outage() would no longer recognize it.
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [_status(user, reply) for user, reply in zip(user_list, replies, strict=True)]
