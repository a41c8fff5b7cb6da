"""Call states in Redis, changed only by Lua scripts so that two devices answering, a hang-up racing
the ringing timeout, or two callers ringing one callee settle in one order on every replica.

Keys (under the presence prefix, on the presence Redis node):
- `call:<call id>`: hash {id, conv, caller, callee, state (ringing|accepted|ended), reason, by, created,
  answered, ended} (times in ms, Redis clock). A live call expires after `max_ms` if nobody ends it (a
  client and its edge both gone); an ended one is kept `keep_ms`, so a late answer reads "ended", not
  "unknown".
- `incall:{<user>}`: the id of the user's live call (ringing or accepted), same expiry: what makes a
  callee busy. A stale one (its call expired or ended) does not.
- `ringing`: sorted set of ringing call ids scored by when they stop ringing (the expiry loop's index).

Every script that changes a call returns {outcome, the call's hash as a flat list}.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from services.presence.keys import PresenceKeys

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function live(call_prefix, incall_key)
  local id = redis.call('GET', incall_key)
  if not id then return false end
  local state = redis.call('HGET', call_prefix .. id, 'state')
  return state == 'ringing' or state == 'accepted'
end

-- End a live call: its state, the parties' incall markers (if they still name it), the ringing index.
local function finish(key, id, reason, by, now, keep_ms, ringing_key, incall_prefix)
  redis.call('HSET', key, 'state', 'ended', 'reason', reason, 'by', by, 'ended', now)
  redis.call('ZREM', ringing_key, id)
  for _, field in ipairs({'caller', 'callee'}) do
    local marker = incall_prefix .. '{' .. redis.call('HGET', key, field) .. '}'
    if redis.call('GET', marker) == id then redis.call('DEL', marker) end
  end
  redis.call('PEXPIRE', key, keep_ms)
end
"""

# KEYS: call, incall caller, incall callee, ringing.
# ARGV: call id, conversation, caller, callee, ring_ms, max_ms, keep_ms, call prefix.
_START = (
    _PRELUDE
    + """
local now = now_ms()
if live(ARGV[8], KEYS[2]) then return {'caller_busy', {}} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'conv', ARGV[2], 'caller', ARGV[3], 'callee', ARGV[4], 'created', now)
if live(ARGV[8], KEYS[3]) then
  redis.call('HSET', KEYS[1], 'state', 'ended', 'reason', 'busy', 'by', '', 'ended', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  return {'busy', redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], 'state', 'ringing')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[6])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[6])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), ARGV[1])
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: call, ringing. ARGV: call id, user. Only the callee answers, and only a ringing call.
_ANSWER = (
    _PRELUDE
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found', {}} end
if redis.call('HGET', KEYS[1], 'callee') ~= ARGV[2] then return {'not_callee', {}} end
if state == 'ringing' then
  redis.call('HSET', KEYS[1], 'state', 'accepted', 'answered', now_ms())
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'ok', redis.call('HGETALL', KEYS[1])}
end
return {state, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: call, ringing. ARGV: call id, user, keep_ms, incall prefix. The callee ending a ringing call declines it.
_HANG_UP = (
    _PRELUDE
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'not_found', {}} end
local callee = redis.call('HGET', KEYS[1], 'callee')
if ARGV[2] ~= callee and ARGV[2] ~= redis.call('HGET', KEYS[1], 'caller') then return {'not_party', {}} end
if state == 'ended' then return {'ended', redis.call('HGETALL', KEYS[1])} end
local reason = 'hangup'
if state == 'ringing' and ARGV[2] == callee then reason = 'declined' end
finish(KEYS[1], ARGV[1], reason, ARGV[2], now_ms(), ARGV[3], KEYS[2], ARGV[4])
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: ringing. ARGV: limit, keep_ms, call prefix, incall prefix. Ends the calls whose ringing is
# over; each is taken out of the index in this script, so exactly one replica announces it.
_EXPIRE = (
    _PRELUDE
    + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  if redis.call('HGET', key, 'state') == 'ringing' then
    finish(key, id, 'timeout', '', now, ARGV[2], KEYS[1], ARGV[4])
    out[#out + 1] = redis.call('HGETALL', key)
  end
end
return out
"""
)


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    conversation_id: str
    caller_id: str
    callee_id: str
    state: str  # ringing | accepted | ended
    reason: str = ""  # hangup | timeout | busy | declined, once ended
    ended_by: str = ""
    created_ms: int = 0
    answered_ms: int = 0
    ended_ms: int = 0

    def party(self, user_id: str) -> bool:
        return user_id in (self.caller_id, self.callee_id)

    def other(self, user_id: str) -> str:
        return self.callee_id if user_id == self.caller_id else self.caller_id


def _record(flat: list[bytes]) -> CallRecord:
    fields = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
    return CallRecord(
        fields.get("id", ""),
        fields.get("conv", ""),
        fields.get("caller", ""),
        fields.get("callee", ""),
        fields.get("state", ""),
        fields.get("reason", ""),
        fields.get("by", ""),
        int(fields.get("created") or 0),
        int(fields.get("answered") or 0),
        int(fields.get("ended") or 0),
    )


class CallStore:
    def __init__(
        self, redis_client: aioredis.Redis, keys: PresenceKeys, ring_ms: int, max_ms: int, keep_ms: int
    ) -> None:
        self._redis = redis_client
        self._keys = keys
        self._ring_ms, self._max_ms, self._keep_ms = ring_ms, max_ms, keep_ms
        self._start = redis_client.register_script(_START)
        self._answer = redis_client.register_script(_ANSWER)
        self._hang_up = redis_client.register_script(_HANG_UP)
        self._expire = redis_client.register_script(_EXPIRE)

    def _call(self, call_id: str) -> str:
        return self._keys.presence(f"call:{call_id}")

    def _incall(self, user_id: str) -> str:
        return self._keys.presence(f"incall:{{{user_id}}}")

    async def start(
        self, call_id: str, conversation_id: str, caller: str, callee: str
    ) -> tuple[str, CallRecord | None]:
        """('ok', ringing call) | ('busy', call ended busy) | ('caller_busy', None)."""
        outcome, flat = await self._start(
            keys=[self._call(call_id), self._incall(caller), self._incall(callee), self._keys.presence("ringing")],
            args=[
                call_id,
                conversation_id,
                caller,
                callee,
                self._ring_ms,
                self._max_ms,
                self._keep_ms,
                self._keys.presence("call:"),
            ],
        )
        return outcome.decode(), _record(flat) if flat else None

    async def answer(self, call_id: str, user_id: str) -> tuple[str, CallRecord | None]:
        """('ok', accepted call) | ('not_found'|'not_callee', None) | ('accepted'|'ended', call as it is)."""
        outcome, flat = await self._answer(
            keys=[self._call(call_id), self._keys.presence("ringing")], args=[call_id, user_id]
        )
        return outcome.decode(), _record(flat) if flat else None

    async def hang_up(self, call_id: str, user_id: str) -> tuple[str, CallRecord | None]:
        """('ok', ended call) | ('ended', call as it was) | ('not_found'|'not_party', None)."""
        outcome, flat = await self._hang_up(
            keys=[self._call(call_id), self._keys.presence("ringing")],
            args=[call_id, user_id, self._keep_ms, self._keys.presence("incall:")],
        )
        return outcome.decode(), _record(flat) if flat else None

    async def get(self, call_id: str) -> CallRecord | None:
        fields: dict[bytes, bytes] = await self._redis.hgetall(self._call(call_id))  # type: ignore[misc]
        return _record([x for pair in fields.items() for x in pair]) if fields else None

    async def expire(self, limit: int) -> list[CallRecord]:
        """Calls that rang out now, ended with reason timeout."""
        replies = await self._expire(
            keys=[self._keys.presence("ringing")],
            args=[limit, self._keep_ms, self._keys.presence("call:"), self._keys.presence("incall:")],
        )
        return [_record(flat) for flat in replies]
