"""Who is in a conversation, asked of the conversation service and cached.

The message and presence services both authorize and fan out by membership on every message or
typing frame; asking per message would cost a gRPC round trip each (a unary call is ~7k/s per core
here). Answers are cached for a short TTL and concurrent misses share one call.

Revocation is immediate on every replica: the conversation service publishes a conversation's
membership version to Redis (`MembershipVersions.publish`) after each change commits and before the
change returns, and a cache entry is used only while Redis holds no newer version (one GET per
check; concurrent checks of one conversation share it). So once a removal or a role change has
returned, no replica acts on the old membership. While Redis does not answer (down or stalled: a
`RedisGuard` keeps that from costing more than a short deadline now and then), the cache is not
trusted and every check asks the conversation service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
import redis.asyncio as aioredis

from chatmesh import errors
from chatmesh.auth import ServiceCredentials
from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh.redis_conn import Keys
from chatmesh.redis_guard import RedisGuard
from chatmesh.roles import Role

T = TypeVar("T")

TTL_S = 5.0


@dataclass(frozen=True)
class Membership:
    conversation_id: str
    active: bool
    roles: dict[str, Role]
    version: int
    blocked: bool = False  # a blocked direct conversation: participants read it, nobody writes to it
    archived: bool = False  # read-only until an admin unarchives it
    muted: frozenset[str] = frozenset()  # participants who muted it: notify them of nothing

    def require_participant(self, user_id: str) -> Role:
        """The user's role; 403 when they are not a participant (of an active conversation)."""
        role = self.roles.get(user_id)
        if role is None or not self.active:
            raise errors.forbidden("NOT_PARTICIPANT", "you are not a participant of this conversation")
        return role

    def require_writer(self, user_id: str) -> Role:
        """As require_participant, for what writes into the conversation (messages, typing): 403
        BLOCKED in a blocked direct conversation."""
        role = self.require_participant(user_id)
        if self.blocked:
            raise errors.forbidden("BLOCKED", "a block between you and this user allows no new conversation or message")
        self.require_unarchived()
        return role

    def require_unarchived(self) -> None:
        """Archived is read-only: FAILED_PRECONDITION CONVERSATION_ARCHIVED (the edge's 409) for any write."""
        if self.archived:
            raise errors.failed_precondition("CONVERSATION_ARCHIVED", "the conversation is archived: it is read-only")


# Raise the stored version to ARGV[1], never lower it (two changes may publish out of order).
_PUBLISH = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
"""
VERSION_TTL_S = 7 * 24 * 3600  # far longer than any cache entry lives


class MembershipVersions:
    """Each conversation's latest membership version, in Redis: written by the conversation service,
    read by every membership cache."""

    def __init__(self, redis_client: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis_client
        self._keys = keys
        self._publish = redis_client.register_script(_PUBLISH)
        self._guard = RedisGuard("membership versions")
        self._reads: _SingleFlight[int | None] = _SingleFlight()

    async def publish(self, conversation_id: str, version: int) -> None:
        """Called after a membership change commits, before it returns; raises when Redis is away."""
        await self._publish(keys=[self._keys.membership_version(conversation_id)], args=[version, VERSION_TTL_S])

    async def current(self, conversation_id: str) -> int | None:
        """The latest published version (0: none published), or None when Redis did not answer."""
        return await self._reads.run(conversation_id, lambda: self._read(conversation_id))

    async def _read(self, conversation_id: str) -> int | None:
        value = await self._guard.call(lambda: self._redis.get(self._keys.membership_version(conversation_id)))
        return None if value is None and not self._guard.available else int(value or 0)


class _SingleFlight(Generic[T]):
    """Concurrent asks for one key share one call, which runs in a task of its own: a caller that is
    cancelled (its RPC's deadline passed) leaves the call running for the others. Run in the first
    caller's task, the call handed its cancellation to every waiter, fan-out's loop among them, which
    it ended for good."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T]] = {}

    async def run(self, key: str, call: Callable[[], Coroutine[object, object, T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.create_task(call())
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters re-raise it, nobody logs it as lost


class MembershipCache:
    def __init__(
        self,
        stub: conversation_pb2_grpc.ConversationServiceStub,
        credentials: ServiceCredentials,
        versions: MembershipVersions | None = None,
        ttl_s: float = TTL_S,
    ) -> None:
        self._stub = stub
        self._credentials = credentials
        self._versions = versions
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Membership]] = {}
        self._fetches: _SingleFlight[Membership] = _SingleFlight()

    async def get(self, conversation_id: str) -> Membership:
        entry = self._entries.get(conversation_id)
        if entry and entry[0] > time.monotonic() and await self._still_current(entry[1]):
            return entry[1]
        return await self._fetches.run(conversation_id, lambda: self._fetch_and_keep(conversation_id))

    async def _fetch_and_keep(self, conversation_id: str) -> Membership:
        membership = await self._fetch(conversation_id)
        self._entries[conversation_id] = (time.monotonic() + self._ttl_s, membership)
        return membership

    async def _still_current(self, membership: Membership) -> bool:
        if self._versions is None:
            return True
        latest = await self._versions.current(membership.conversation_id)
        return latest is not None and latest <= membership.version

    def invalidate(self, conversation_id: str) -> None:
        self._entries.pop(conversation_id, None)

    async def _fetch(self, conversation_id: str) -> Membership:
        try:
            reply = await self._stub.GetMembership(
                conversation_pb2.GetMembershipRequest(conversation_id=conversation_id),
                metadata=self._credentials.metadata(),
                timeout=5,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise errors.ChatError(exc.code(), errors.error_code_of(exc), exc.details() or "") from None
            raise
        return Membership(
            conversation_id=reply.conversation_id,
            active=reply.active,
            roles={p.user_id: Role.from_proto(p.role) for p in reply.participants},
            version=reply.version,
            blocked=reply.blocked,
            archived=reply.archived,
            muted=frozenset(reply.muted_user_ids),
        )
