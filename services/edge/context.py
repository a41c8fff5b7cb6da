"""What the edge holds for its lifetime: settings, the token verifier, one channel per upstream,
the event router, the one redelivery timer, send budget, presence-toggle coalescing and lease renewal
shared by every socket, and the users it has already recorded."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict

import grpc

from chatmesh.auth import Identity, ServiceCredentials, TokenVerifier
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import (
    conversation_pb2,
    conversation_pb2_grpc,
    message_pb2_grpc,
    presence_pb2_grpc,
)
from chatmesh.grpc_client import open_channel
from chatmesh.logs import request_id_var
from chatmesh.resilience import spawn_supervised
from chatmesh.tls import client_tls
from services.edge.backlog import SendBudget
from services.edge.calls import CALL_TIMEOUT_S, reachable
from services.edge.frame_limits import rates_of
from services.edge.outgoing import REDELIVERY_TICK_S, RedeliveryTimer
from services.edge.presence_link import PresenceLink
from services.edge.presence_toggles import PresenceToggles
from services.edge.ratelimit import RateLimiter
from services.edge.send_batch import SendBatcher
from services.edge.upstream import EventRouter

USER_REFRESH_S = 300.0
# Proto services served by another service's process: NotificationService by the message service.
HOSTED_BY = {"notification": "message"}
KNOWN_USERS = 100_000


class EdgeContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings)
        self.credentials = ServiceCredentials(settings, "edge")
        self._known: OrderedDict[str, float] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Open the channels (grpc.aio binds them to the running loop, so not before it runs)."""
        settings = self.settings
        tls = client_tls(settings)  # mTLS to the services when configured (this edge's own certificate)
        self.channels = {
            "conversation": open_channel(settings.conversation_target, tls),
            "message": open_channel(settings.message_target, tls),
            "presence": open_channel(settings.presence_target, tls),
        }
        self.conversation = conversation_pb2_grpc.ConversationServiceStub(self.channels["conversation"])
        self.message = message_pb2_grpc.MessageServiceStub(self.channels["message"])
        self.presence = presence_pb2_grpc.PresenceServiceStub(self.channels["presence"])
        self.send_batch = SendBatcher(self.message, self.credentials)  # the sockets' sends, coalesced
        self.limits = RateLimiter(settings.redis_url, settings.redis_prefix)
        self._tasks.append(spawn_supervised("rate limit leases", self.limits.run))
        self.redelivery = RedeliveryTimer(REDELIVERY_TICK_S * settings.time_scale)
        self.send_budget = SendBudget(
            settings.ws_send_budget_bytes, settings.ws_min_drain_bytes_per_s, settings.ws_drain_window_s
        )
        self.frame_rates = rates_of(settings)
        self.router = EventRouter(self.message, self.credentials)
        self._tasks.append(spawn_supervised("event stream", self.router.run))
        self.presence_link = PresenceLink(self.presence, self.credentials, settings, self.channels["presence"])
        self._tasks.append(spawn_supervised("presence link", self.presence_link.run))
        self.presence_toggles = PresenceToggles(self.presence_link.set_presence, settings.ws_presence_interval_s)

    async def close(self) -> None:
        await self.presence_link.close()
        for task in self._tasks:
            task.cancel()
        self.redelivery.stop()
        self.send_budget.stop()
        for channel in self.channels.values():
            await channel.close()
        await self.limits.close()

    @staticmethod
    def service_of(service_full_name: str) -> str:
        """`chat.v1.MessageService` -> `message`, the name of its channel (of the process that hosts it)."""
        name = service_full_name.rsplit(".", 1)[-1].removesuffix("Service").lower()
        return HOSTED_BY.get(name, name)

    def channel_for(self, service_full_name: str) -> grpc.aio.Channel:
        """`chat.v1.MessageService` -> the message service's channel."""
        return self.channels[self.service_of(service_full_name)]

    @staticmethod
    def metadata(identity: Identity) -> tuple[tuple[str, str], ...]:
        """Call metadata: the user's own token (services verify it again) and the request id."""
        request_id = request_id_var.get() or uuid.uuid4().hex
        return (("authorization", f"Bearer {identity.token}"), ("x-request-id", request_id))

    async def ensure_user(self, identity: Identity) -> None:
        """Record the verified identity in the user directory, at most every few minutes per user."""
        now = time.monotonic()
        seen = self._known.get(identity.user_id)
        if seen is not None and now - seen < USER_REFRESH_S:
            return
        await reachable(self.channels["conversation"], "conversation")
        await self.conversation.UpsertUser(
            conversation_pb2.UpsertUserRequest(display_name=identity.display_name),
            metadata=self.metadata(identity),
            timeout=CALL_TIMEOUT_S,
            wait_for_ready=True,
        )
        self._known[identity.user_id] = now
        self._known.move_to_end(identity.user_id)
        while len(self._known) > KNOWN_USERS:
            self._known.popitem(last=False)
