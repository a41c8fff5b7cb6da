"""Event streams to subscribers: the offline buffer, and batching many subscriptions onto one gRPC stream."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from psycopg_pool import AsyncConnectionPool

from chatmesh.auth import ServiceCredentials
from chatmesh.gen.chat.v1 import common_pb2, conversation_pb2, conversation_pb2_grpc, message_pb2
from services.message import convert, store
from services.message.delivery.hub import Hub
from services.message.delivery.subscription import Item, Outbox, Subscription, item_size, to_event

MAX_BATCH = 1000
# The most a connection's offline buffer replays; older undelivered messages are in history (REST).
OFFLINE_LIMIT = 5000
MAX_BATCH_BYTES = 1 << 20


class OfflineBuffer:
    """What a connection without a usable token gets first: the messages its user has not
    acknowledged as delivered, oldest first, built from PostgreSQL (so it survives Redis losing data)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        conversations: conversation_pb2_grpc.ConversationServiceStub,
        credentials: ServiceCredentials,
    ) -> None:
        self._pool = pool
        self._conversations = conversations
        self._credentials = credentials

    async def __call__(self, user_id: str) -> list[common_pb2.Event]:
        reply = await self._conversations.ListConversationIds(
            conversation_pb2.ListConversationIdsRequest(user_id=user_id),
            metadata=self._credentials.metadata(),
            timeout=10,
            wait_for_ready=True,
        )
        if not reply.conversation_ids:
            return []
        async with self._pool.connection() as conn:
            rows = await store.undelivered_messages(conn, user_id, list(reply.conversation_ids), OFFLINE_LIMIT)
        return [convert.message_event("chat:message_received", row) for row in rows]


async def _drain(out: Outbox) -> list[Item] | None:
    """What is waiting, as one batch bounded in count and bytes (a gRPC message is at most 4 MB by default)."""
    first = await out.get()
    if first is None:
        return None
    items = [first]
    size = item_size(first)
    while len(items) < MAX_BATCH and size < MAX_BATCH_BYTES and not out.empty():
        item = out.get_nowait()
        if item is None:
            out.put_nowait(item)  # end after this batch
            break
        items.append(item)
        size += item_size(item)
    return items


class MultiplexedStream:
    """One edge replica's stream: subscriptions come and go, events go out in batches, each event once
    with the subscriptions it reaches (`deliveries`), so a group's message crosses to an edge once
    however many of its members' sockets are there."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._out: Outbox = asyncio.Queue()
        self._subs: dict[str, Subscription] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}

    async def run(
        self, requests: AsyncIterator[message_pb2.StreamEventsRequest]
    ) -> AsyncIterator[message_pb2.StreamEventsResponse]:
        reader = asyncio.create_task(self._read(requests))
        self._hub.attach(self._out)
        try:
            while (items := await _drain(self._out)) is not None:
                response = message_pb2.StreamEventsResponse()
                subs = self._subs
                for event, recipients in items:
                    if len(recipients) == 1:  # replay, repair: one subscription
                        if recipients[0][0] not in subs:
                            continue
                        delivery = response.deliveries.add()
                        delivery.recipients.add(subscription_id=recipients[0][0], resume_token=recipients[0][1])
                    else:
                        to = [(sub_id, token) for sub_id, token in recipients if sub_id in subs]
                        if not to:
                            continue
                        delivery = response.deliveries.add()
                        for sub_id, token in to:
                            delivery.recipients.add(subscription_id=sub_id, resume_token=token)
                    to_event(delivery.event, event)
                if response.deliveries:
                    yield response
        finally:
            self._hub.detach(self._out)
            reader.cancel()
            for task in self._starting.values():
                task.cancel()
            for sub in self._subs.values():
                await self._hub.unsubscribe(sub)

    async def _read(self, requests: AsyncIterator[message_pb2.StreamEventsRequest]) -> None:
        try:
            async for request in requests:
                if request.HasField("subscribe"):
                    s = request.subscribe
                    sub = Subscription(s.subscription_id, s.user_id, self._out)
                    self._subs[s.subscription_id] = sub
                    task = asyncio.create_task(self._hub.subscribe(sub, s.resume_token))
                    self._starting[s.subscription_id] = task
                    task.add_done_callback(functools.partial(self._started, s.subscription_id))
                elif request.HasField("unsubscribe"):
                    subscription_id = request.unsubscribe.subscription_id
                    if starting := self._starting.pop(subscription_id, None):
                        starting.cancel()  # a socket gone before its replay finished
                    if gone := self._subs.pop(subscription_id, None):
                        await self._hub.unsubscribe(gone)
        finally:
            self._out.put_nowait(None)

    def _started(self, subscription_id: str, _: asyncio.Task[None]) -> None:
        self._starting.pop(subscription_id, None)


async def single_user(hub: Hub, user_id: str, resume_token: str) -> AsyncIterator[message_pb2.SubscribeEventsResponse]:
    out: Outbox = asyncio.Queue()
    sub = Subscription("", user_id, out)
    task = asyncio.create_task(hub.subscribe(sub, resume_token))
    hub.attach(out)
    try:
        while items := await _drain(out):
            response = message_pb2.SubscribeEventsResponse()
            for event, recipients in items:
                to_event(response.events.add(), event, recipients[0][1])
            yield response
    finally:
        hub.detach(out)
        task.cancel()
        await hub.unsubscribe(sub)
