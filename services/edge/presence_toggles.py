"""Presence toggles coalesced: at most one `presence:online` / `presence:offline` per user per
interval leaves this edge for the presence service, and the last one wins.

Each toggle the presence service applies can announce a `user:status_changed` to every contact of
the user, so a client that flaps (or twenty sockets of one user taking turns) would cost each contact
an event per frame. Per user on this edge replica: the first toggle goes at once; toggles arriving
within CHAT_WS_PRESENCE_INTERVAL_S of it wait, each replacing the one before, and the last of them goes
when the interval ends. So contacts see at most one change per interval from each edge the user is
connected to, and always end on the state the user chose last. (Across edges, and across the user's
status changes that do not come from toggles, coalescing announcements is the presence service's.)

Every toggle is answered once its call is made: a waiting one with the answer of the call that
carried its successor (ack with the presence state then, or the call's error frame). A socket that
closed meanwhile drops the answer (its queue is closed). Frames are limited per socket before they
get here (frame_limits.py), so a user's waiting answers stay few.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.edge.errors import rpc_error_frame

Metadata = tuple[tuple[str, str], ...]
Reply = Callable[[dict[str, Any]], object]  # a socket's push_reply
SetPresence = Callable[[str, Metadata], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class _Toggles:
    kind: str | None  # the toggle to send next (None: nothing waits)
    metadata: Metadata  # of the frame that asked for it: its user's token and request id
    waiters: list[tuple[Reply, Any]] = field(default_factory=list)  # (socket's reply, frame id)
    task: asyncio.Task[None] | None = None


class PresenceToggles:
    def __init__(self, set_presence: SetPresence, interval_s: float) -> None:
        self._set_presence = set_presence
        self._interval_s = interval_s
        self._users: dict[str, _Toggles] = {}  # users with a toggle sent within the interval

    def toggle(self, user_id: str, kind: str, metadata: Metadata, request_id: Any, reply: Reply) -> None:
        """Send the toggle now, or when the user's interval ends if another one went within it."""
        state = self._users.get(user_id)
        if state is None:
            state = self._users[user_id] = _Toggles(kind, metadata, [(reply, request_id)])
            state.task = asyncio.get_running_loop().create_task(self._run(user_id, state))
        else:
            state.kind, state.metadata = kind, metadata  # the last one wins
            state.waiters.append((reply, request_id))

    @property
    def users(self) -> int:
        return len(self._users)

    async def _run(self, user_id: str, state: _Toggles) -> None:
        """Send what waits, then hold the user for an interval; end once an interval passed quietly."""
        loop = asyncio.get_running_loop()
        try:
            while (kind := state.kind) is not None:
                metadata, waiters = state.metadata, state.waiters
                state.kind, state.waiters = None, []
                started = loop.time()
                try:
                    data = await self._set_presence(kind, metadata)
                except grpc.aio.AioRpcError as exc:
                    for reply, request_id in waiters:
                        reply(rpc_error_frame(request_id, exc))
                else:
                    for reply, request_id in waiters:
                        if request_id is not None:
                            reply({"type": "ack", "id": request_id, "data": data})
                await asyncio.sleep(max(0.0, started + self._interval_s - loop.time()))
        finally:
            if self._users.get(user_id) is state:
                del self._users[user_id]
