"""Call signaling on the WebSocket: the frames a socket sends, the event frames it gets, and the
hang-up of its calls when it closes.

A socket sends (each answered with `ack` {call} when it has an id, or an `error` frame):
- `call:invite` {conversation_id, callee_id?, sdp}: ring the callee with an SDP offer; the ack's call
  is ringing, or ended with end_reason `busy` when the callee is already in a call.
- `call:answer` {call_id, sdp}: accept a ringing call with an SDP answer.
- `call:ice` {call_id, candidate: {candidate, sdp_mid, sdp_mline_index, username_fragment}}: relay one
  ICE candidate (RTCIceCandidate.toJSON()'s camelCase names are taken too).
- `call:hangup` {call_id}: end it (the callee hanging up a ringing call declines it).

Events: `call:incoming` {call, sdp, from_user_id}, `call:accepted` {call, sdp?}, `call:candidate`
{call, candidate, from_user_id}, `call:ended` {call}. A call is rendered with lowercase states and
reasons (`ringing`, `accepted`, `ended`; `hangup`, `timeout`, `busy`, `declined`), like presence frames.

Each frame becomes one PresenceService call (services/presence/calls.py holds the rules and the
bounds). A call this socket placed or answered is hung up when the socket closes, so a closed tab or
a crashed browser does not leave the other party ringing or the user busy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from chatmesh.auth import Identity
from chatmesh.gen.chat.v1 import call_pb2, common_pb2, presence_pb2_grpc
from services.edge.calls import CALL_TIMEOUT_S, reachable
from services.edge.errors import error_frame, rpc_error_frame

log = logging.getLogger(__name__)

CALL_FRAMES = ("call:invite", "call:answer", "call:ice", "call:hangup")
MAX_TRACKED = 8  # calls a socket hangs up when it closes; one is live at a time, ended ones fall out
_STATES = {
    call_pb2.CALL_STATE_RINGING: "ringing",
    call_pb2.CALL_STATE_ACCEPTED: "accepted",
    call_pb2.CALL_STATE_ENDED: "ended",
}
_REASONS = {
    call_pb2.CALL_END_REASON_HANGUP: "hangup",
    call_pb2.CALL_END_REASON_TIMEOUT: "timeout",
    call_pb2.CALL_END_REASON_BUSY: "busy",
    call_pb2.CALL_END_REASON_DECLINED: "declined",
}
_NEEDS = {
    "call:invite": "{conversation_id: string, callee_id?: string, sdp: string}",
    "call:answer": "{call_id: string, sdp: string}",
    "call:ice": "{call_id: string, candidate: {candidate: string, sdp_mid?: string, sdp_mline_index?: "
    "integer, username_fragment?: string}}",
    "call:hangup": "{call_id: string}",
}
Metadata = tuple[tuple[str, str], ...]


def call_json(call: call_pb2.Call) -> dict[str, Any]:
    data: dict[str, Any] = {
        "call_id": call.call_id,
        "conversation_id": call.conversation_id,
        "caller_id": call.caller_id,
        "callee_id": call.callee_id,
        "state": _STATES.get(call.state, "unknown"),
    }
    if call.end_reason:
        data["end_reason"] = _REASONS.get(call.end_reason, "unknown")
    if call.ended_by:
        data["ended_by"] = call.ended_by
    for name in ("created_at", "answered_at", "ended_at"):
        if call.HasField(name):
            data[name] = getattr(call, name).ToJsonString()
    return data


def call_event_frame(event: common_pb2.Event) -> dict[str, Any]:
    """The frame of a `call:*` event (see the module docstring)."""
    payload = event.call
    data: dict[str, Any] = {"call": call_json(payload.call)}
    if payload.sdp:
        data["sdp"] = payload.sdp
    if payload.HasField("candidate"):
        c = payload.candidate
        data["candidate"] = {
            "candidate": c.candidate,
            "sdp_mid": c.sdp_mid,
            "sdp_mline_index": c.sdp_mline_index,
            "username_fragment": c.username_fragment,
        }
    if payload.from_user_id:
        data["from_user_id"] = payload.from_user_id
    return {"type": event.type, "conversation_id": event.conversation_id, "data": data}


def _text(data: dict[str, Any], *names: str, required: bool = True) -> str | None:
    """The first of `names` in data as a string ("" when absent and not required; None when malformed)."""
    for name in names:
        value = data.get(name)
        if value is not None:
            return value if isinstance(value, str) and (value or not required) else None
    return None if required else ""


def _candidate(raw: Any) -> call_pb2.IceCandidate | None:
    if not isinstance(raw, dict):
        return None
    line = _text(raw, "candidate", required=False)
    mid = _text(raw, "sdp_mid", "sdpMid", required=False)
    ufrag = _text(raw, "username_fragment", "usernameFragment", required=False)
    index = raw.get("sdp_mline_index", raw.get("sdpMLineIndex"))
    if line is None or mid is None or ufrag is None:
        return None
    if index is None:
        index = 0
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2**31:
        return None
    return call_pb2.IceCandidate(candidate=line, sdp_mid=mid, sdp_mline_index=index, username_fragment=ufrag)


class SocketCalls:
    """One socket's call frames, and the calls it holds."""

    def __init__(
        self, stub: presence_pb2_grpc.PresenceServiceStub, channel: grpc.aio.Channel, metadata: Callable[[], Metadata]
    ) -> None:
        self._stub = stub
        self._channel = channel
        self._metadata = metadata
        self._held: dict[str, None] = {}  # call ids this socket placed or answered, oldest first

    async def handle(self, request_id: Any, kind: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """Answer a call frame: an error frame, an ack when the client gave an id, else None."""
        request = self._request(kind, data)
        if request is None:
            return error_frame(request_id, "INVALID_ARGUMENT", f"{kind} needs data {_NEEDS[kind]}")
        try:
            await reachable(self._channel, "presence")
            method = {
                "call:invite": self._stub.StartCall,
                "call:answer": self._stub.AnswerCall,
                "call:ice": self._stub.SendCallCandidate,
                "call:hangup": self._stub.HangUpCall,
            }[kind]
            reply = await method(request, metadata=self._metadata(), timeout=CALL_TIMEOUT_S, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            return rpc_error_frame(request_id, exc)
        answer: dict[str, Any] = {}
        if kind != "call:ice":
            call = reply.call
            answer["call"] = call_json(call)
            if call.state == call_pb2.CALL_STATE_ENDED:
                self._held.pop(call.call_id, None)
            else:
                self._hold(call.call_id)
        return {"type": "ack", "id": request_id, "data": answer} if request_id is not None else None

    @staticmethod
    def _request(kind: str, data: dict[str, Any]) -> Any:
        """The gRPC request of a frame, or None when its data does not fit."""
        if kind == "call:invite":
            conversation_id, sdp = _text(data, "conversation_id"), _text(data, "sdp")
            callee = _text(data, "callee_id", required=False)
            if conversation_id is None or sdp is None or callee is None:
                return None
            return call_pb2.StartCallRequest(conversation_id=conversation_id, callee_id=callee, sdp_offer=sdp)
        call_id = _text(data, "call_id")
        if call_id is None:
            return None
        if kind == "call:answer":
            sdp = _text(data, "sdp")
            return None if sdp is None else call_pb2.AnswerCallRequest(call_id=call_id, sdp_answer=sdp)
        if kind == "call:ice":
            candidate = _candidate(data.get("candidate"))
            return (
                None if candidate is None else call_pb2.SendCallCandidateRequest(call_id=call_id, candidate=candidate)
            )
        return call_pb2.HangUpCallRequest(call_id=call_id)

    def _hold(self, call_id: str) -> None:
        self._held[call_id] = None
        while len(self._held) > MAX_TRACKED:
            self._held.pop(next(iter(self._held)))

    async def close(self, identity: Identity | None) -> None:
        """The socket closed: hang up the calls it held (best effort: a presence outage, or a token that
        expired with the socket, leaves them to the other party's hang-up or CHAT_CALL_MAX_S)."""
        if identity is None:
            return
        held, self._held = list(self._held), {}
        for call_id in held:
            try:
                await self._stub.HangUpCall(
                    call_pb2.HangUpCallRequest(call_id=call_id),
                    metadata=self._metadata(),
                    timeout=CALL_TIMEOUT_S,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as exc:
                log.info("call %s of a closed socket not hung up: %s", call_id, exc.code().name)
