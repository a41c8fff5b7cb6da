"""Who is in a conversation, asked of the conversation service and cached.

The message and presence services both authorize and fan out by membership on every message or
typing frame; asking per message would cost a gRPC round trip each (a unary call is ~7k/s per core
here). Answers are cached for a short TTL, concurrent misses share one call, and the delivery
path drops an entry as soon as it sees a conversation:* event for it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc

from chatmesh import errors
from chatmesh.auth import ServiceCredentials
from chatmesh.gen.chat.v1 import common_pb2, conversation_pb2, conversation_pb2_grpc

TTL_S = 5.0
ROLE_NAMES = {common_pb2.ROLE_ADMIN: "admin", common_pb2.ROLE_MODERATOR: "moderator", common_pb2.ROLE_MEMBER: "member"}


@dataclass(frozen=True)
class Membership:
    conversation_id: str
    active: bool
    roles: dict[str, str]
    version: int

    def require_participant(self, user_id: str) -> str:
        """The user's role; 403 when they are not a participant (of an active conversation)."""
        role = self.roles.get(user_id)
        if role is None or not self.active:
            raise errors.forbidden("NOT_PARTICIPANT", "you are not a participant of this conversation")
        return role


class MembershipCache:
    def __init__(self, stub: conversation_pb2_grpc.ConversationServiceStub, credentials: ServiceCredentials,
                 ttl_s: float = TTL_S) -> None:
        self._stub = stub
        self._credentials = credentials
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Membership]] = {}
        self._inflight: dict[str, asyncio.Future[Membership]] = {}

    async def get(self, conversation_id: str) -> Membership:
        entry = self._entries.get(conversation_id)
        if entry and entry[0] > time.monotonic():
            return entry[1]
        if pending := self._inflight.get(conversation_id):
            return await asyncio.shield(pending)
        future: asyncio.Future[Membership] = asyncio.get_running_loop().create_future()
        self._inflight[conversation_id] = future
        try:
            membership = await self._fetch(conversation_id)
            self._entries[conversation_id] = (time.monotonic() + self._ttl_s, membership)
            future.set_result(membership)
            return membership
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._inflight[conversation_id]

    def invalidate(self, conversation_id: str) -> None:
        self._entries.pop(conversation_id, None)

    async def _fetch(self, conversation_id: str) -> Membership:
        try:
            reply = await self._stub.GetMembership(
                conversation_pb2.GetMembershipRequest(conversation_id=conversation_id),
                metadata=self._credentials.metadata(), timeout=5, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise errors.ChatError(exc.code(), errors.error_code_of(exc), exc.details() or "") from None
            raise
        return Membership(
            conversation_id=reply.conversation_id,
            active=reply.active,
            roles={p.user_id: ROLE_NAMES.get(p.role, "member") for p in reply.participants},
            version=reply.version,
        )
