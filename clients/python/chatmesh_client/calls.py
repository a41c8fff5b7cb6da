"""One-to-one call signaling: place, answer, trickle ICE candidates, hang up. The client relays
signaling only; the media is the application's own WebRTC stack (aiortc, a browser, ...).

Frames go over the socket, so a call this client placed or answered is hung up by the edge if the
socket closes. The other party's signaling arrives as `CallEvent`s from `Client.events()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chatmesh_client.models import Call
from chatmesh_client.rest import Rest

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]  # a socket request, answered by its ack


class Calls:
    def __init__(self, rest: Rest, request: Request) -> None:
        self._rest = rest
        self._request = request

    async def config(self) -> dict[str, Any]:
        """{ice_servers: [{urls, username, credential}], credentials_expire_at?, ring_timeout_ms,
        max_sdp_bytes}: what an RTCPeerConnection (or aiortc's RTCConfiguration) needs."""
        return await self._rest.call("GET", "/api/calls/config")

    async def start(self, conversation_id: str, sdp_offer: str, callee_id: str = "") -> Call:
        """Ring the callee (the other participant of a direct conversation when not named). The call
        comes back ringing, or already ended with end_reason `busy` when the callee is in a call."""
        data = {"conversation_id": conversation_id, "sdp": sdp_offer} | ({"callee_id": callee_id} if callee_id else {})
        return Call.from_json((await self._request("call:invite", data))["call"])

    async def answer(self, call_id: str, sdp_answer: str) -> Call:
        return Call.from_json((await self._request("call:answer", {"call_id": call_id, "sdp": sdp_answer}))["call"])

    async def candidate(self, call_id: str, candidate: dict[str, Any]) -> None:
        """Relay one ICE candidate ({candidate, sdp_mid, sdp_mline_index, username_fragment}, or the
        browser's camelCase names); an empty `candidate` says there are no more."""
        await self._request("call:ice", {"call_id": call_id, "candidate": candidate})

    async def hang_up(self, call_id: str) -> Call:
        """End the call; the callee hanging up a ringing call declines it. Hanging up an ended call
        changes nothing and returns it as it ended."""
        return Call.from_json((await self._request("call:hangup", {"call_id": call_id}))["call"])

    async def get(self, call_id: str) -> Call:
        return Call.from_json((await self._rest.call("GET", f"/api/calls/{call_id}"))["call"])
