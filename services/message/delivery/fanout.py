"""Fan-out of one events partition: a Redis consumer group reads the partition's stream and appends
each event to every recipient's inbox, then publishes the batch to the hubs once: the events, and per
recipient the inbox entry it follows and the one it became, so a hub hands it on without reading the
inbox.

Per round of the worker, the inbox appends, a done-marker per event, the XACKs and the live batch of
every partition it read go in one Lua script (`fan_out_together`: atomic like MULTI, one round trip
and one live batch whatever K is), so an event is either fanned out and acknowledged completely or
not at all; the done-marker makes a re-read of the same event (the relay may publish
a row twice if it dies between XADD and its commit) a no-op. One replica at a time fans out a
partition, by a lease in Redis (services/message/delivery/partitions.py runs one `Fanout` per
partition it leases), so a conversation's events (all in one partition) reach each inbox in order;
when a replica dies another takes its partitions over within the lease's TTL, first finishing the
entries it had read but not acknowledged. An entry that fails stays pending and is retried after
2 s, 4 s, 8 s (scaled by CHAT_TIME_SCALE); after MAX_RETRIES retries it goes to the dead-letter stream
with its reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import Counter

from chatmesh import tracing
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.membership import MembershipCache
from chatmesh.redis_conn import Keys
from services.message.delivery.inbox import INBOX_MAXLEN, last_key, live_channel
from services.message.delivery.metrics import DEAD_LETTER, FANNED_OUT

log = logging.getLogger(__name__)

GROUP = "fanout"
BATCH = 200
MAX_APPENDS_PER_CALL = 5000  # inbox appends one script call may make for several partitions together
BACKOFF_S = 2.0
MAX_RETRIES = 3
DONE_TTL_S = 24 * 3600
LEASE_S = 3.0
MIN_LEASE_S = 1.0  # however scaled: a loaded machine must not lapse a live worker's lease
# An event held back for an earlier seq is released after this long (scaled): its predecessor failed
# past its retries (dead-lettered: the seq is passed at once) or was lost with Redis' data.
HOLD_MAX_S = 30.0

HELD = Counter(
    "chat_fanout_held", "Events fan-out held back because an earlier seq of their conversation was not in yet."
)

# One batch, server-side and atomic (a script runs alone, like MULTI): per event, unless its
# done-marker exists, an XADD to each recipient's inbox (the event id, a message's seq (0 for other
# events) and its conversation beside the payload, so a reader can order and skip an entry without
# parsing it) and the done-marker; then its XACK. Last, the live batch on the live channel: the
# current epoch and, per event appended, its payload, event id, seq and conversation and, per
# recipient, (user id, the id of the inbox's entry before, the new entry's id), packed with cmsgpack
# (binary-safe: payloads are protobuf bytes). Published inside the script, so the order batches reach
# a hub is the order entries were appended; the previous id comes from a key beside each inbox (read
# once per batch, set once at the end). Then the old wake-up naming the batch's recipients, which
# hubs of the previous version listen to during a rolling upgrade (a hub of this version ignores the
# one that follows a live batch).
#
# Order is enforced here, not left to timing: a message event whose conversation's last fanned-out
# seq (kept in a key per conversation) is more than one behind it is held, not written, and so is
# every later event without a seq (an edit, a reaction) of that conversation in the batch; held
# entries stay pending (no XACK) and their ids are returned, to be tried again once the missing seq is
# in. The caller orders each conversation's message events by seq. A negative seq releases a held
# event whatever the gap (its predecessor was dead-lettered or is lost with Redis' data).
#
# One call serves the batches of every partition a worker read in one round (`fan_out_together`), so a
# round costs one round trip and one live batch whatever K is; each event names its own stream.
#
# KEYS: the epoch, then per event its events stream, its done-marker, its conversation's seq key when
# it has a seq, and per recipient its inbox and that inbox's last-id key. ARGV: group, inbox maxlen,
# done-marker TTL, wake channel, live channel, per event (entry id, event id, payload, recipient count,
# seq or 0, conversation id, the recipients' user ids), and last the wake-up ("" for none). Returns
# the held entries as (stream, entry id) pairs, flat: entry ids are unique per stream only.
_FAN_OUT = """
local group, maxlen, ttl, wake, live = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k, a = 2, 6
local held, blocked = {}, {}
local last, touched, out = {}, {}, {}
while a < #ARGV do
  local entry_id, event_id, data = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local n, seq, conversation = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5]
  local stream, done = KEYS[k], KEYS[k + 1]
  local seq_key, first = nil, k + 2
  if seq ~= 0 then seq_key, first = KEYS[k + 2], k + 3 end
  local hold = false
  if redis.call('EXISTS', done) == 0 then
    local last_seq = 0
    if seq_key then last_seq = tonumber(redis.call('GET', seq_key) or '0') end
    hold = (seq == 0 and blocked[conversation]) or (seq > 0 and last_seq > 0 and seq > last_seq + 1)
    if not hold then
      local recipients = {}
      for i = 0, n - 1 do
        local inbox, last_key = KEYS[first + 2 * i], KEYS[first + 2 * i + 1]
        local prev = last[last_key]
        if prev == nil then
          prev = redis.call('GET', last_key) or ''
          touched[#touched + 1] = last_key
        end
        local id = redis.call('XADD', inbox, 'MAXLEN', '~', maxlen, '*', 'e', data, 'i', event_id,
                              's', math.abs(seq), 'c', conversation)
        last[last_key] = id
        recipients[#recipients + 1] = ARGV[a + 6 + i]
        recipients[#recipients + 1] = prev
        recipients[#recipients + 1] = id
      end
      if n > 0 then out[#out + 1] = {data, event_id, math.abs(seq), conversation, recipients} end
      redis.call('SET', done, '1', 'EX', ttl)
      if seq_key and math.abs(seq) > last_seq then redis.call('SET', seq_key, math.abs(seq), 'EX', ttl) end
    end
  end
  if hold then
    blocked[conversation] = true
    held[#held + 1] = stream
    held[#held + 1] = entry_id
  else
    redis.call('XACK', stream, group, entry_id)
  end
  k, a = first + 2 * n, a + 6 + n
end
for _, key in ipairs(touched) do redis.call('SET', key, last[key]) end
if #out > 0 then redis.call('PUBLISH', live, cmsgpack.pack({redis.call('GET', KEYS[1]) or '', out})) end
if ARGV[#ARGV] ~= '' then redis.call('PUBLISH', wake, ARGV[#ARGV]) end
return held
"""

# Raise a conversation's fanned-out seq to at least ARGV[1] (a dead-lettered event's seq, so the
# events after it are not held for it forever).
_PASS_SEQ = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > last then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
"""


Entry = tuple[bytes, dict[bytes, bytes]]
# (entry id, event, payload, recipients, seq for the order check: see _FAN_OUT)
_Plan = tuple[bytes, common_pb2.Event, bytes, list[str], int]


@dataclass
class Batch:
    """One partition's part of a fan-out call: its new entries, then (planned) every entry it tries
    with the held ones, and the plans the script gets."""

    lane: Fanout
    now: float
    new: list[Entry]
    entries: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    plans: list[_Plan] = field(default_factory=list)
    traced: dict[bytes, Span] = field(default_factory=dict)  # stays empty unless an entry carries a trace


async def fan_out_together(batches: list[Batch]) -> None:
    """Fan out the batches of one round, of every partition the worker read, in one script call: one
    round trip and one live batch for the round, where a call per partition made up to K of each.
    Each partition's order is kept as before (one worker per partition), and a call is atomic, so a
    failed one leaves every entry in it pending, to be retried. A round that would append more than
    MAX_APPENDS_PER_CALL entries (a catch-up into large groups) is split between partitions, so Redis
    is never held longer than by one partition's batch."""
    try:
        for batch in batches:
            await batch.lane.plan(batch)
        for call in _calls([batch for batch in batches if batch.plans]):
            held = await call[0].lane.call(call)
            for batch in call:
                batch.lane.settle(batch, held)
    finally:
        for batch in batches:
            if batch.traced:
                tracing.end_all(list(batch.traced.values()))
    for batch in batches:
        batch.lane.count(batch)


def _calls(batches: list[Batch]) -> list[list[Batch]]:
    """The batches grouped into script calls of at most MAX_APPENDS_PER_CALL inbox appends each, a
    batch larger than that alone."""
    calls: list[list[Batch]] = []
    size = 0
    for batch in batches:
        appends = sum(len(plan[3]) for plan in batch.plans)
        if not calls or size + appends > MAX_APPENDS_PER_CALL:
            calls.append([])
            size = 0
        calls[-1].append(batch)
        size += appends
    return calls


class Fanout:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        keys: Keys,
        membership: MembershipCache,
        consumer: str,
        time_scale: float = 1.0,
        stream: str | None = None,
    ) -> None:
        """`stream`: the events stream this instance fans out (default: partition 0's)."""
        self._redis = redis_client
        self._keys = keys
        self._stream = stream if stream is not None else keys.event_partition(0)
        self._membership = membership
        self._consumer = consumer
        self._scale = time_scale
        self._errors: dict[str, str] = {}
        # Entries the script held back for a missing earlier seq: still pending, tried again with every
        # batch (in stream order), released after HOLD_MAX_S. entry id -> (entry, first held at).
        self._held: dict[bytes, tuple[Entry, float]] = {}
        self._hold_max_s = max(HOLD_MAX_S * time_scale, 2 * MIN_LEASE_S)
        self._fan_out = redis_client.register_script(_FAN_OUT)
        self._pass_seq = redis_client.register_script(_PASS_SEQ)

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def holding(self) -> bool:
        """Whether entries are held back for order (tried again with the next batch, new entries or not)."""
        return bool(self._held)

    async def take_over(self) -> None:
        """On taking the partition: first finish every entry pending in its group, in stream order,
        before reading anything new. They are a previous holder's (it died mid-batch, or gave the
        partition up) or this consumer's own from an earlier tenure, which this instance knows nothing of."""
        start = "-"
        while True:
            pending = await self._redis.xpending_range(self._stream, GROUP, min=start, max="+", count=BATCH)
            if not pending:
                return
            ids = [p["message_id"] for p in pending]
            claimed = await self._redis.xclaim(self._stream, GROUP, self._consumer, min_idle_time=0, message_ids=ids)
            if trimmed := [entry_id for entry_id, fields in claimed if not fields]:
                await self._redis.xack(self._stream, GROUP, *trimmed)  # trimmed while pending: nothing to do
            await self.process([(entry_id, fields) for entry_id, fields in claimed if fields])
            if len(pending) < BATCH:
                return
            start = "(" + ids[-1].decode()

    async def process(self, entries: list[Entry]) -> None:
        """Fan out a batch, with the entries held back before, in stream order (one partition's
        `fan_out_together`)."""
        await fan_out_together([self.prepare(entries)])

    def prepare(self, entries: list[Entry]) -> Batch:
        """This partition's batch for `fan_out_together`: the new entries and those held back before."""
        return Batch(self, time.monotonic(), entries)

    async def plan(self, batch: Batch) -> None:
        """Plan the batch in stream order: parse each event and resolve its recipients. An entry that
        fails stays pending for a retry with backoff, and the later entries of its conversation wait
        for it.

        An entry that carries a trace (field `t`: its send was traced, chatmesh/outbox.py) gets a
        span continuing it, from its parse to the script's answer: one send, one trace."""
        pending = {entry_id: fields for entry_id, ((_, fields), _) in self._held.items()}
        pending.update(batch.new)
        batch.entries = pending
        failed: set[str] = set()  # conversations with an entry that failed in this batch
        members: dict[str, list[str]] = {}  # each conversation's participants, looked up once a batch
        traced, now = batch.traced, batch.now
        for entry_id in sorted(pending, key=_stream_order):
            fields = pending[entry_id]
            if (parent := fields.get(b"t")) is not None:
                traced[entry_id] = tracing.continue_trace("fan-out", parent, SpanKind.CONSUMER)
            try:
                data = fields[b"e"]
                event = common_pb2.Event.FromString(data)
                if event.conversation_id in failed:
                    self._hold(entry_id, fields, now)
                    continue
                recipients = await self._recipients(event, members)
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered with its reason
                self._errors[entry_id.decode()] = f"{type(exc).__name__}: {exc}"
                self._held.pop(entry_id, None)  # now a failure, retried by retry_pending
                if (conversation_id := _conversation_of(fields)) is not None:
                    failed.add(conversation_id)
                log.warning("fan-out of %s failed: %s", entry_id, exc)
                if traced and (span := traced.get(entry_id)) is not None:
                    span.record_exception(exc)
                    span.set_status(StatusCode.ERROR, "fan-out failed; retried with backoff")
                continue
            batch.plans.append((entry_id, event, data, recipients, self._seq_arg(entry_id, event, now)))
            if traced and (span := traced.get(entry_id)) is not None:
                span.set_attributes(
                    {"chat.event_id": event.event_id, "chat.event_type": event.type, "chat.recipients": len(recipients)}
                )
        batch.plans = _seqs_in_order(batch.plans)

    async def call(self, batches: list[Batch]) -> set[tuple[str, bytes]]:
        """The script over every batch (this partition's and the others' of the round); the entries
        it held back, as (stream, entry id)."""
        keys = [self._keys.epoch]
        args: list[str | bytes | int] = [GROUP, INBOX_MAXLEN, DONE_TTL_S, self._keys.wake, live_channel(self._keys)]
        woken: set[str] = set()
        for batch in batches:
            for entry_id, event, data, recipients, seq in batch.plans:
                keys.extend((batch.lane.stream, self._done_key(event)))
                if seq:
                    keys.append(self._seq_key(event.conversation_id))
                for user_id in recipients:
                    keys.extend((self._keys.inbox(user_id), last_key(self._keys, user_id)))
                args.extend((entry_id, event.event_id, data, len(recipients), seq, event.conversation_id))
                args.extend(recipients)
                woken.update(recipients)
        # The old wake-up, for hubs of the previous version (a rolling upgrade): it names every
        # recipient of the call, even of an event already fanned out or held (rare).
        args.append(json.dumps(sorted(woken)) if woken else "")
        answer = await self._fan_out(keys=keys, args=args)
        return {(answer[i].decode(), answer[i + 1]) for i in range(0, len(answer), 2)}

    def settle(self, batch: Batch, held: set[tuple[str, bytes]]) -> None:
        for entry_id, *_ in batch.plans:
            if (self._stream, entry_id) in held:
                self._hold(entry_id, batch.entries[entry_id], batch.now)
                if batch.traced and (span := batch.traced.get(entry_id)) is not None:
                    span.set_attribute("chat.fanout.held", True)  # tried again with the next batch
            else:
                self._held.pop(entry_id, None)

    def count(self, batch: Batch) -> None:
        """This replica's work, for its share (chat_fanout_events): what left the batch neither held
        nor failed (a copy the done-marker skipped included)."""
        FANNED_OUT.inc(sum(1 for i in batch.entries if i not in self._held and i.decode() not in self._errors))

    def _hold(self, entry_id: bytes, fields: dict[bytes, bytes], now: float) -> None:
        if entry_id not in self._held:
            HELD.inc()
            self._held[entry_id] = ((entry_id, fields), now)

    def _seq_arg(self, entry_id: bytes, event: common_pb2.Event, now: float) -> int:
        """The seq the script checks order by: 0 for events without one, negative to release an event
        held longer than HOLD_MAX_S (its predecessor is not coming: lost with Redis' data)."""
        if event.type != "chat:message_received" or not event.message.seq:
            return 0
        held = self._held.get(entry_id)
        if held is not None and now - held[1] > self._hold_max_s:
            log.warning(
                "releasing %s (seq %d of %s): held %.0f s for an earlier seq that never came",
                event.event_id,
                event.message.seq,
                event.conversation_id,
                now - held[1],
            )
            return -event.message.seq
        return int(event.message.seq)

    async def _recipients(self, event: common_pb2.Event, members: dict[str, list[str]]) -> list[str]:
        """A membership event goes to the participants it carries plus the user it names; any other to
        the conversation's participants, asked once per batch (`members`) until a membership event
        of the conversation changes them."""
        if event.HasField("conversation"):
            self._membership.invalidate(event.conversation_id)
            members.pop(event.conversation_id, None)
            users = {p.user_id for p in event.conversation.conversation.participants}
            if event.conversation.user_id:
                users.add(event.conversation.user_id)
            return sorted(users)
        if (known := members.get(event.conversation_id)) is None:
            known = members[event.conversation_id] = sorted((await self._membership.get(event.conversation_id)).roles)
        return known

    def _done_key(self, event: common_pb2.Event) -> str:
        return f"{self._keys.prefix}:fanned:{event.event_id}"

    def _seq_key(self, conversation_id: str) -> str:
        return f"{self._keys.prefix}:fanned-seq:{conversation_id}"

    async def retry_pending(self) -> None:
        """Claim entries idle past their backoff (a failure here, or a dead worker), retry or dead-letter.
        Entries held for order are not failures: they are left to `process`."""
        base_ms = int(BACKOFF_S * 1000 * self._scale)
        pending = await self._redis.xpending_range(self._stream, GROUP, min="-", max="+", count=BATCH, idle=base_ms)
        pending = [p for p in pending if p["message_id"] not in self._held]
        # Delivery n (n = 1 is the first try) failed: retry n waits 2 s * 2^(n-1), so 2 s, 4 s, 8 s;
        # once the last retry has failed, the entry goes to the dead letter stream.
        dead = [p["message_id"] for p in pending if p["times_delivered"] > MAX_RETRIES]
        retry = [
            p["message_id"]
            for p in pending
            if p["times_delivered"] <= MAX_RETRIES
            and p["time_since_delivered"] >= base_ms * 2 ** (p["times_delivered"] - 1)
        ]
        if dead:
            await self._dead_letter(dead)
        if retry:
            claimed = await self._redis.xclaim(
                self._stream, GROUP, self._consumer, min_idle_time=base_ms, message_ids=retry
            )
            await self.process([(entry_id, fields) for entry_id, fields in claimed if fields])

    async def _dead_letter(self, entry_ids: list[bytes]) -> None:
        entries = await self._redis.xclaim(
            self._stream, GROUP, self._consumer, min_idle_time=0, message_ids=cast("list[Any]", entry_ids)
        )  # the stubs' list is invariant
        async with self._redis.pipeline(transaction=True) as tx:
            for entry_id, fields in entries:
                reason = self._errors.pop(entry_id.decode(), "retries exhausted")
                tx.xadd(
                    self._keys.dead_letter,
                    {
                        b"e": fields.get(b"e", b""),
                        b"entry": entry_id,
                        b"stream": self._stream.encode(),
                        b"reason": reason.encode(),
                    },
                )
                tx.xack(self._stream, GROUP, entry_id)
                log.error("event %s moved to dead letter after %d retries: %s", entry_id.decode(), MAX_RETRIES, reason)
                DEAD_LETTER.inc()
            await tx.execute()
        # The events after a dead-lettered message must not wait for it: its seq counts as passed.
        for _, fields in entries:
            event = _parse(fields)
            if event is not None and event.type == "chat:message_received" and event.message.seq:
                await self._pass_seq(keys=[self._seq_key(event.conversation_id)], args=[event.message.seq, DONE_TTL_S])


def _seqs_in_order(plans: list[_Plan]) -> list[_Plan]:
    """Each conversation's message events sorted by seq, in the places its message events took in
    stream order (other events keep theirs). A copy published again, or an entry held earlier, can
    come before the seq it waits for: it must go after it, or it would wait a whole round."""
    places: dict[str, list[int]] = defaultdict(list)
    for index, plan in enumerate(plans):
        if plan[4]:
            places[plan[1].conversation_id].append(index)
    ordered = list(plans)
    for indexes in places.values():
        for index, plan in zip(indexes, sorted((plans[i] for i in indexes), key=lambda p: abs(p[4])), strict=True):
            ordered[index] = plan
    return ordered


def _stream_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _parse(fields: dict[bytes, bytes]) -> common_pb2.Event | None:
    try:
        return common_pb2.Event.FromString(fields.get(b"e", b""))
    except Exception:  # noqa: BLE001 - a poison payload has no conversation to order
        return None


def _conversation_of(fields: dict[bytes, bytes]) -> str | None:
    event = _parse(fields)
    return event.conversation_id if event is not None and event.conversation_id else None
