"""Presence rules: who is online, who may see it, who is typing, and the sweeper that expires both.

A user is online while at least one of their connections, on any edge, has a live deadline and they
have not chosen to look offline (invisible mode); contacts are told only on a transition. A closed
connection lingers RECONNECT_GRACE_S from its close, so a page reload or a network blip does not show
the user going offline and coming back, and a user whose devices close one after another goes
offline once, a linger after the last. Typing lasts TYPING_WINDOW_S after the last `is_typing: true`
and is told to the other participants of the conversation; repeated frames within the window only
extend it.

Presence is private: a user's status and last seen go only to the others in conversations the user
has taken part in (the conversation service's ListContacts answers both directions, and whether the
user hides their last seen), and status announcements are coalesced per user in the store (at most
one per CHAT_PRESENCE_ANNOUNCE_INTERVAL_S, the last state wins), so a flapping client costs each contact little.

While Redis is unreachable or stalled, the RPCs fail with its (outage) errors, which the server
answers UNAVAILABLE, and the sweeper retries with backoff, logging the outage once and the recovery
once. Announcements whose contacts cannot be read are skipped, also logged once per outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from chatmesh import errors
from chatmesh.auth import ServiceCredentials, user_id_problem
from chatmesh.gen.chat.v1 import common_pb2, conversation_pb2, conversation_pb2_grpc, presence_pb2
from chatmesh.membership import MembershipCache
from chatmesh.resilience import Backoff, OutageLog
from chatmesh.timestamps import from_millis
from services.presence.hub import EventHub
from services.presence.periodic import repeat
from services.presence.store import PresenceStore, Status

log = logging.getLogger(__name__)

TYPING_WINDOW_S = 3.0
TYPING_LIMIT = 30  # typing frames per user per TYPING_LIMIT_WINDOW_S, across every edge
TYPING_LIMIT_WINDOW_S = 10.0
MAX_QUERY = 100
MAX_CONVERSATION_ID = 64  # ids are UUIDs; longer input is refused before it travels further
CONTACTS_TTL_S = 2.0
CONTACTS_CACHED = 50_000
CONTACTS_CONCURRENCY = 64  # a mass reconnect must not fire thousands of ListContacts at once
SWEEP_LIMIT = 500
RECONNECT_GRACE_S = 5.0  # a closed connection keeps its user online this long, for a reconnect to take over
MIN_RECONNECT_GRACE_S = 1.0  # however scaled: a reconnect takes a round trip or two on a loaded machine
SWEEP_BACKOFF_CAP_S = 2.0  # while Redis is out the sweeper retries this often at least, to resume soon after
_DIRECTORY_DOWN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def user_presence(status: Status, *, hide_last_seen: bool = False) -> presence_pb2.UserPresence:
    return presence_pb2.UserPresence(
        user_id=status.user_id,
        status=common_pb2.PRESENCE_STATUS_ONLINE if status.online else common_pb2.PRESENCE_STATUS_OFFLINE,
        last_seen_at=None if hide_last_seen else from_millis(status.last_seen_ms),
    )


@dataclass(frozen=True)
class Circle:
    """A user's presence relations as the conversation service answers them."""

    audience: frozenset[str]  # who may see the user's presence
    visible: frozenset[str]  # whose presence the user may see
    last_seen_hidden: frozenset[str]  # of `visible`, who hides their last seen
    hide_last_seen: bool  # the user hides theirs


class Contacts:
    """A user's presence relations (ConversationService.ListContacts), cached briefly: a change
    (a reply, an accepted request, a block, the hide-last-seen setting) shows within CONTACTS_TTL_S."""

    def __init__(self, stub: conversation_pb2_grpc.ConversationServiceStub, credentials: ServiceCredentials) -> None:
        self._stub = stub
        self._credentials = credentials
        self._entries: OrderedDict[str, tuple[float, Circle]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Circle]] = {}
        self._slots = asyncio.Semaphore(CONTACTS_CONCURRENCY)

    async def of(self, user_id: str) -> Circle:
        entry = self._entries.get(user_id)
        if entry and entry[0] > time.monotonic():
            return entry[1]
        task = self._inflight.get(user_id)
        if task is None:
            task = asyncio.create_task(self._fetch(user_id))
            self._inflight[user_id] = task
            task.add_done_callback(lambda done: self._done(user_id, done))
        return await asyncio.shield(task)

    def _done(self, user_id: str, task: asyncio.Task[Circle]) -> None:
        """Forget the fetch; its error reaches the callers that still wait, and is marked retrieved
        here for when none does (all of them were cancelled), so asyncio does not log it at exit."""
        self._inflight.pop(user_id, None)
        if not task.cancelled():
            task.exception()

    async def _fetch(self, user_id: str) -> Circle:
        async with self._slots:
            reply = await self._stub.ListContacts(
                conversation_pb2.ListContactsRequest(user_id=user_id),
                metadata=self._credentials.metadata(),
                timeout=5,
                wait_for_ready=True,
            )
        contacts = Circle(
            frozenset(reply.user_ids),
            frozenset(reply.visible_user_ids),
            frozenset(reply.last_seen_hidden_user_ids),
            reply.hide_last_seen,
        )
        self._entries[user_id] = (time.monotonic() + CONTACTS_TTL_S, contacts)
        self._entries.move_to_end(user_id)
        while len(self._entries) > CONTACTS_CACHED:
            self._entries.popitem(last=False)
        return contacts


class Presence:
    def __init__(
        self,
        store: PresenceStore,
        hub: EventHub,
        contacts: Contacts,
        membership: MembershipCache,
        ttl_s: float,
        time_scale: float,
    ) -> None:
        self._store = store
        self._hub = hub
        self._contacts = contacts
        self._membership = membership
        self._ttl_s = ttl_s
        self._tick_s = min(0.5, max(0.05, TYPING_WINDOW_S * time_scale / 6))
        self._linger_ms = int(max(RECONNECT_GRACE_S * time_scale, MIN_RECONNECT_GRACE_S) * 1000)
        # One line when the conversation service stops answering and one when it is back, however
        # many transitions or typing ends go unannounced meanwhile.
        self._directory = OutageLog(log, "presence announcements skipped: conversation service")

    # connections

    async def report(self, edge_id: str, connections: Iterable[presence_pb2.Connection]) -> None:
        await self._announce(await self._store.report(_members(edge_id, connections)))

    async def drop(self, edge_id: str, connections: Iterable[presence_pb2.Connection]) -> None:
        await self._announce(await self._store.drop(_members(edge_id, connections), self._linger_ms))

    async def set_explicit(self, user_id: str, status: int) -> presence_pb2.UserPresence:
        explicit = {
            common_pb2.PRESENCE_STATUS_UNSPECIFIED: "",
            common_pb2.PRESENCE_STATUS_ONLINE: "online",
            common_pb2.PRESENCE_STATUS_OFFLINE: "offline",
        }.get(status)  # type: ignore[call-overload]
        if explicit is None:
            raise errors.invalid("INVALID_STATUS", "status must be PRESENCE_STATUS_ONLINE, _OFFLINE or _UNSPECIFIED")
        result = await self._store.set_explicit(user_id, explicit)
        await self._announce([result])
        return user_presence(result)

    async def query(self, caller: str, user_ids: list[str]) -> list[presence_pb2.UserPresence]:
        """Status and last seen of up to MAX_QUERY users; those who have taken part in no conversation
        with the caller read as unknown, and the last seen of those who hide it is left out."""
        if len(user_ids) > MAX_QUERY:
            raise errors.invalid("TOO_MANY_USERS", f"ask for at most {MAX_QUERY} users at a time")
        if problem := next((p for u in user_ids if (p := user_id_problem(u))), None):
            raise errors.invalid("INVALID_USER_ID", problem)
        circle = await self._contacts.of(caller) if user_ids else None
        visible = [u for u in dict.fromkeys(user_ids) if u == caller or (circle and u in circle.visible)]
        hidden = circle.last_seen_hidden if circle else frozenset()
        known = {
            s.user_id: user_presence(s, hide_last_seen=s.user_id != caller and s.user_id in hidden)
            for s in await self._store.read(visible)
        }
        return [
            known.get(u) or presence_pb2.UserPresence(user_id=u, status=common_pb2.PRESENCE_STATUS_UNKNOWN)
            for u in user_ids
        ]

    async def _announce(self, statuses: Iterable[Status]) -> None:
        changed = [s for s in statuses if s.changed]
        if changed:
            await asyncio.gather(*(self._announce_one(s) for s in changed))

    async def _announce_one(self, status: Status) -> None:
        try:
            circle = await self._contacts.of(status.user_id)
        except grpc.aio.AioRpcError as exc:
            self._unannounced(f"status of {status.user_id}", exc)
            return
        self._directory.recovered()
        presence = user_presence(status, hide_last_seen=circle.hide_last_seen)
        event = common_pb2.Event(
            type="user:status_changed",
            presence=common_pb2.PresenceEvent(
                user_id=status.user_id,
                status=presence.status,
                last_seen_at=presence.last_seen_at if presence.HasField("last_seen_at") else None,
            ),
        )
        event.created_at.GetCurrentTime()
        await self._hub.publish(circle.audience, event)

    # typing

    async def set_typing(self, user_id: str, conversation_id: str, is_typing: bool) -> None:
        if not await self._store.allow("typing", user_id, TYPING_LIMIT, TYPING_LIMIT_WINDOW_S):
            raise errors.ChatError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", "too many typing updates; slow down"
            )
        if not conversation_id or len(conversation_id) > MAX_CONVERSATION_ID:
            raise errors.invalid("INVALID_ID", "conversation_id must be a conversation's id")
        membership = await self._membership.get(conversation_id)
        membership.require_writer(user_id)
        member = f"{conversation_id}|{user_id}"
        started = await self._store.typing_on(member) if is_typing else await self._store.typing_off(member)
        if started:  # a new typing state, or one that ended now: coalesced otherwise
            await self._announce_typing(conversation_id, user_id, is_typing)

    def _unannounced(self, what: str, exc: errors.ChatError | grpc.aio.AioRpcError) -> None:
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _DIRECTORY_DOWN:
            self._directory.failed(exc)
        else:
            log.warning("%s not announced: %s", what, exc)

    async def _announce_typing(self, conversation_id: str, user_id: str, is_typing: bool) -> None:
        membership = await self._membership.get(conversation_id)
        event = common_pb2.Event(
            type="chat:user_typing",
            conversation_id=conversation_id,
            typing=common_pb2.TypingEvent(conversation_id=conversation_id, user_id=user_id, is_typing=is_typing),
        )
        event.created_at.GetCurrentTime()
        await self._hub.publish((u for u in membership.roles if u != user_id), event)

    # the sweeper

    async def sweep_forever(self) -> None:
        """Expire overdue connections and typing states, for the life of the process (run it under
        chatmesh.resilience.supervise). Safe with any number of replicas: each expiry happens in one
        script, so exactly one replica announces it. While Redis is down or stalled it retries with
        jittered backoff and logs the outage once and the recovery once; any other error is a bug
        and escapes to the supervisor, which logs its traceback and starts the loop again."""
        await repeat(
            self._sweep_once,
            tick_s=self._tick_s,
            outage=OutageLog(log, "presence sweep: Redis"),
            backoff=Backoff(self._tick_s, SWEEP_BACKOFF_CAP_S),
        )

    async def _sweep_once(self) -> bool:
        """One tick; True when a batch was full (more are due at once)."""
        ttl_ms = self._store.ttl_ms
        swept_ms, grace_ms = max(int(self._tick_s * 3000), ttl_ms // 3), 2 * ttl_ms
        users, typing = await self._store.tick(swept_ms, grace_ms, SWEEP_LIMIT)
        if users:
            await self._announce(await self._store.sweep(users))
        if due := await self._store.due(SWEEP_LIMIT):  # coalesced announcements whose interval ended
            await self._announce(await self._store.settle_due(due))
        for member in typing:
            conversation_id, _, user_id = member.partition("|")
            try:
                await self._announce_typing(conversation_id, user_id, False)
            except (errors.ChatError, grpc.aio.AioRpcError) as exc:
                self._unannounced(f"typing end in {conversation_id}", exc)
            else:
                self._directory.recovered()
        return len(users) >= SWEEP_LIMIT or len(typing) >= SWEEP_LIMIT or len(due) >= SWEEP_LIMIT


def _members(edge_id: str, connections: Iterable[presence_pb2.Connection]) -> dict[str, list[str]]:
    if not edge_id:
        raise errors.invalid("INVALID_EDGE_ID", "edge_id is required")
    members: dict[str, list[str]] = {}
    for connection in connections:
        if not connection.user_id or not connection.connection_id:
            raise errors.invalid("INVALID_CONNECTION", "each connection needs a user_id and a connection_id")
        members.setdefault(connection.user_id, []).append(f"{edge_id}:{connection.connection_id}")
    return members
