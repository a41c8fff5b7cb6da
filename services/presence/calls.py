"""Call signaling: the rules of a one-to-one call and the events that carry its offer, answer, ICE
candidates and end to the two parties. No media passes through the mesh.

A call is placed in a conversation, by a participant who may write in it, to another participant
(the other one of a direct conversation when not named). It rings the callee's devices for the ringing
timeout (CHAT_CALL_RING_TIMEOUT_S, scaled): answered, it is accepted; hung up by the callee, declined;
by the caller, cancelled (reason hangup); not answered in time, it ends with reason timeout (the expiry
loop below, one Redis script per batch, so one replica announces each). A callee already in a call
(ringing or accepted) answers busy at once: the call is returned ended with reason busy and the callee
is not disturbed. A caller already in a call is refused (ALREADY_IN_CALL).

Events are ephemeral, published like typing (the hub's per-user channels): `call:incoming` to the
callee with the offer, `call:accepted` to both (the caller's with the answer; the callee's other devices
stop ringing), `call:candidate` to the other party, `call:ended` to both. A party that was not listening
misses them; `GetCall` reads the state.

Payloads are bounded before anything is stored or relayed: an SDP is at most MAX_SDP_BYTES and must
look like one (`v=0` first, no control characters but line breaks); a candidate line at most
MAX_CANDIDATE_CHARS, one line, `candidate:` first (or empty: end of candidates).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import timestamp_pb2

from chatmesh import errors
from chatmesh.gen.chat.v1 import call_pb2, common_pb2
from chatmesh.membership import MembershipCache
from chatmesh.resilience import Backoff, OutageLog
from services.presence.call_store import CallRecord, CallStore
from services.presence.hub import EventHub
from services.presence.periodic import repeat

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 16 * 1024  # a browser's audio/video offer is 3-8 KB; larger is not an SDP worth relaying
MAX_CANDIDATE_CHARS = 1024  # a candidate line is ~100-250 characters
MAX_SDP_MID_CHARS = 64
MAX_UFRAG_CHARS = 256  # RFC 8839: ice-ufrag is 4 to 256 characters
MAX_MLINE_INDEX = 1023
MAX_CONVERSATION_ID = 64
CALL_LIMIT = 20  # calls placed per user per CALL_LIMIT_WINDOW_S, across replicas
CALL_LIMIT_WINDOW_S = 60.0
ENDED_KEEP_S = 60.0  # an ended call is remembered this long: a late answer reads CALL_ENDED, not CALL_NOT_FOUND
EXPIRE_BATCH = 500
_CALL_ID = re.compile(r"[0-9a-f]{32}")
_SDP_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_STATES = {
    "ringing": call_pb2.CALL_STATE_RINGING,
    "accepted": call_pb2.CALL_STATE_ACCEPTED,
    "ended": call_pb2.CALL_STATE_ENDED,
}
_REASONS = {
    "hangup": call_pb2.CALL_END_REASON_HANGUP,
    "timeout": call_pb2.CALL_END_REASON_TIMEOUT,
    "busy": call_pb2.CALL_END_REASON_BUSY,
    "declined": call_pb2.CALL_END_REASON_DECLINED,
}

RateCheck = Callable[[str, str, int, float], Awaitable[bool]]  # PresenceStore.allow


def _stamp(ms: int) -> timestamp_pb2.Timestamp | None:
    if ms <= 0:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def call_proto(record: CallRecord) -> call_pb2.Call:
    return call_pb2.Call(
        call_id=record.call_id,
        conversation_id=record.conversation_id,
        caller_id=record.caller_id,
        callee_id=record.callee_id,
        state=_STATES.get(record.state, call_pb2.CALL_STATE_UNSPECIFIED),
        end_reason=_REASONS.get(record.reason, call_pb2.CALL_END_REASON_UNSPECIFIED),
        ended_by=record.ended_by,
        created_at=_stamp(record.created_ms),
        answered_at=_stamp(record.answered_ms),
        ended_at=_stamp(record.ended_ms),
    )


def check_sdp(sdp: str, field: str) -> None:
    if len(sdp) > MAX_SDP_BYTES or len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise errors.invalid("SDP_TOO_LARGE", f"{field} is limited to {MAX_SDP_BYTES} bytes")
    if not sdp.startswith("v=0") or _SDP_BAD.search(sdp):
        raise errors.invalid("INVALID_SDP", f"{field} must be a session description (starting with v=0)")


def check_candidate(candidate: call_pb2.IceCandidate) -> None:
    line = candidate.candidate
    if (
        len(line) > MAX_CANDIDATE_CHARS
        or len(candidate.sdp_mid) > MAX_SDP_MID_CHARS
        or len(candidate.username_fragment) > MAX_UFRAG_CHARS
    ):
        raise errors.invalid(
            "CANDIDATE_TOO_LARGE",
            f"a candidate line is limited to {MAX_CANDIDATE_CHARS} characters, sdp_mid to {MAX_SDP_MID_CHARS}",
        )
    if (
        (line and not line.startswith("candidate:"))
        or _SDP_BAD.search(line)
        or "\r" in line
        or "\n" in line
        or not 0 <= candidate.sdp_mline_index <= MAX_MLINE_INDEX
        or any(_SDP_BAD.search(s) or "\n" in s for s in (candidate.sdp_mid, candidate.username_fragment))
    ):
        raise errors.invalid(
            "INVALID_CANDIDATE",
            "candidate must be one `candidate:` line (or empty: end of "
            "candidates) with a sane sdp_mid and sdp_mline_index",
        )


def _check_call_id(call_id: str) -> None:
    if not _CALL_ID.fullmatch(call_id):
        raise errors.invalid("INVALID_CALL_ID", "call_id must be a call's id (32 hex digits)")


def _not_found() -> errors.ChatError:
    return errors.ChatError(grpc.StatusCode.NOT_FOUND, "CALL_NOT_FOUND", "no such call (or it ended long ago)")


def _ended(record: CallRecord) -> errors.ChatError:
    return errors.ChatError(
        grpc.StatusCode.FAILED_PRECONDITION, "CALL_ENDED", f"the call has ended ({record.reason or 'ended'})"
    )


class Calls:
    def __init__(
        self, store: CallStore, hub: EventHub, membership: MembershipCache, rate: RateCheck, ring_timeout_s: float
    ) -> None:
        self._store = store
        self._hub = hub
        self._membership = membership
        self._rate = rate
        self.ring_timeout_s = ring_timeout_s
        self._tick_s = min(0.5, max(0.05, ring_timeout_s / 20))

    async def start(self, caller: str, conversation_id: str, callee: str, sdp_offer: str) -> call_pb2.Call:
        if not conversation_id or len(conversation_id) > MAX_CONVERSATION_ID:
            raise errors.invalid("INVALID_ID", "conversation_id must be a conversation's id")
        check_sdp(sdp_offer, "sdp_offer")
        if not await self._rate("call", caller, CALL_LIMIT, CALL_LIMIT_WINDOW_S):
            raise errors.ChatError(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", "too many calls; slow down")
        membership = await self._membership.get(conversation_id)
        membership.require_writer(caller)
        if not callee:
            others = [u for u in membership.roles if u != caller]
            if len(others) != 1:
                raise errors.invalid("CALLEE_REQUIRED", "name the callee: this conversation has several others")
            callee = others[0]
        if callee == caller:
            raise errors.invalid("CANNOT_CALL_SELF", "a call needs someone else")
        if callee not in membership.roles:
            raise errors.forbidden("CALLEE_NOT_PARTICIPANT", "the callee is not a participant of this conversation")
        outcome, record = await self._store.start(uuid.uuid4().hex, conversation_id, caller, callee)
        if outcome == "caller_busy" or record is None:
            raise errors.ChatError(
                grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_IN_CALL", "you are already in a call; hang it up first"
            )
        call = call_proto(record)
        if outcome == "ok":
            await self._publish(
                record, "call:incoming", [callee], call_pb2.CallEvent(call=call, sdp=sdp_offer, from_user_id=caller)
            )
        return call  # busy: ended at once, and the callee is not told

    async def answer(self, user_id: str, call_id: str, sdp_answer: str) -> call_pb2.Call:
        record = await self._party_record(user_id, call_id)
        check_sdp(sdp_answer, "sdp_answer")
        if record.state == "ended":
            raise _ended(record)
        (await self._membership.get(record.conversation_id)).require_participant(user_id)
        outcome, answered = await self._store.answer(call_id, user_id)
        if outcome == "not_callee":
            raise errors.failed_precondition("NOT_CALLEE", "only the callee answers a call")
        if outcome == "not_found" or answered is None:
            raise _not_found()
        if outcome == "ended":
            raise _ended(answered)
        if outcome != "ok":
            raise errors.ChatError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "CALL_ALREADY_ANSWERED",
                "the call was answered already (on another device?)",
            )
        call = call_proto(answered)
        await asyncio.gather(
            self._publish(
                answered,
                "call:accepted",
                [answered.caller_id],
                call_pb2.CallEvent(call=call, sdp=sdp_answer, from_user_id=user_id),
            ),
            self._publish(
                answered, "call:accepted", [answered.callee_id], call_pb2.CallEvent(call=call, from_user_id=user_id)
            ),
        )
        return call

    async def candidate(self, user_id: str, call_id: str, candidate: call_pb2.IceCandidate) -> None:
        record = await self._party_record(user_id, call_id)
        check_candidate(candidate)
        if record.state == "ended":
            raise _ended(record)
        (await self._membership.get(record.conversation_id)).require_participant(user_id)
        await self._publish(
            record,
            "call:candidate",
            [record.other(user_id)],
            call_pb2.CallEvent(call=call_proto(record), candidate=candidate, from_user_id=user_id),
        )

    async def hang_up(self, user_id: str, call_id: str) -> call_pb2.Call:
        _check_call_id(call_id)
        outcome, record = await self._store.hang_up(call_id, user_id)
        if outcome == "not_party":
            raise self._not_party()
        if outcome == "not_found" or record is None:
            raise _not_found()
        if outcome == "ok":
            await self._announce_end(record)
        return call_proto(record)

    async def get(self, user_id: str, call_id: str) -> call_pb2.Call:
        return call_proto(await self._party_record(user_id, call_id))

    async def _party_record(self, user_id: str, call_id: str) -> CallRecord:
        _check_call_id(call_id)
        record = await self._store.get(call_id)
        if record is None:
            raise _not_found()
        if not record.party(user_id):
            raise self._not_party()
        return record

    @staticmethod
    def _not_party() -> errors.ChatError:
        return errors.forbidden("NOT_CALL_PARTICIPANT", "you are not a party to this call")

    async def _announce_end(self, record: CallRecord) -> None:
        await self._publish(
            record,
            "call:ended",
            [record.caller_id, record.callee_id],
            call_pb2.CallEvent(call=call_proto(record), from_user_id=record.ended_by),
        )

    async def _publish(self, record: CallRecord, kind: str, users: list[str], payload: call_pb2.CallEvent) -> None:
        event = common_pb2.Event(type=kind, conversation_id=record.conversation_id, call=payload)
        event.created_at.GetCurrentTime()
        await self._hub.publish(users, event)

    async def expire_forever(self) -> None:
        """End calls that rang out, for the life of the process (under chatmesh.resilience.supervise).
        Redis outages are retried with backoff and logged once each way; anything else escapes."""
        await repeat(
            self._expire_once,
            tick_s=self._tick_s,
            outage=OutageLog(log, "call ringing timeouts: Redis"),
            backoff=Backoff(self._tick_s, 2.0),
        )

    async def _expire_once(self) -> bool:
        """One batch of calls that rang out, each announced; True when the batch was full (more are due)."""
        ended = await self._store.expire(EXPIRE_BATCH)
        for record in ended:
            await self._announce_end(record)
        return len(ended) == EXPIRE_BATCH
