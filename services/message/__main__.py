"""Run the message service: `python -m services.message`.

Besides the gRPC servicers (messages, and notifications for push workers), each replica runs the
outbox relay, a fan-out worker, the live hub and the notifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import grpc

from chatmesh import readiness, service_main
from chatmesh.auth import ServiceCredentials, TokenVerifier
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import (
    conversation_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    notification_pb2,
    notification_pb2_grpc,
)
from chatmesh.grpc_client import open_channel
from chatmesh.membership import MembershipCache, MembershipVersions
from chatmesh.outbox import OutboxRelay
from chatmesh.redis_conn import Keys, open_pubsub_redis, open_redis
from chatmesh.resilience import spawn_supervised
from chatmesh.tls import client_tls
from services.message.attachments import AttachmentLimits, Attachments
from services.message.backends import open_blobs
from services.message.delivery.fanout import GROUP as FANOUT_GROUP
from services.message.delivery.hub import Hub
from services.message.delivery.metrics import StreamSampler
from services.message.delivery.partitions import FanoutWorker
from services.message.delivery.streams import OfflineBuffer
from services.message.devices import Devices
from services.message.messages import Limits, Messages
from services.message.notification_server import NotificationServicer
from services.message.notification_stream import NotificationStreams
from services.message.notifier import Notifier, NotifyPolicy
from services.message.server import MessageServicer
from services.message.store import SCHEMA, SHARED_DDL

MIGRATIONS = Path(__file__).parent / "migrations"


async def main(settings: Settings, stopping: asyncio.Event | None = None) -> None:
    settings.require("database_url", "redis_url")
    pool = await service_main.open_store(settings, "message", SCHEMA, MIGRATIONS, SHARED_DDL, max_size=20)
    redis_client = open_redis(settings.redis_url)
    pubsub_client = open_pubsub_redis(settings.redis_url)
    keys = Keys(settings.redis_prefix, settings.fanout_partitions)
    channel = open_channel(settings.conversation_target, client_tls(settings))
    membership = MembershipCache(
        conversation_pb2_grpc.ConversationServiceStub(channel),
        ServiceCredentials(settings, "message"),
        MembershipVersions(redis_client, keys),
    )
    conversations = conversation_pb2_grpc.ConversationServiceStub(channel)
    hub = Hub(
        redis_client,
        pubsub_client,
        keys,
        OfflineBuffer(pool, conversations, ServiceCredentials(settings, "message")),
        time_scale=settings.time_scale,
    )
    await hub.start()
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    # Each loop handles its dependencies' outages itself; a bug that escapes one restarts it (logged, counted).
    background = [
        spawn_supervised(
            "outbox relay",
            OutboxRelay(pool, settings.database_url, SCHEMA, redis_client, keys, settings.time_scale).run,
        ),
        spawn_supervised("fan-out", FanoutWorker(redis_client, keys, membership, consumer, settings.time_scale).run),
        spawn_supervised(
            "stream sampler", StreamSampler(redis_client, keys, FANOUT_GROUP, 5.0 * settings.time_scale).run
        ),
    ]
    blobs, links = open_blobs(settings)
    attachments = Attachments(pool, membership, blobs, links, AttachmentLimits.of(settings))
    background.append(spawn_supervised("attachment collector", attachments.run_collector))
    # Push notifications: a consumer group of its own on the events streams, off the delivery path.
    notifier = Notifier(pool, redis_client, keys, membership, NotifyPolicy.of(settings), consumer)
    with contextlib.suppress(Exception):  # Redis away at start: the ingest loop creates the group later
        await notifier.ensure_group()
    background += [
        spawn_supervised("notifier ingest", notifier.run_ingest),
        spawn_supervised("notifier checks", notifier.run_checks),
    ]
    streams = NotificationStreams(
        redis_client, keys, pool, claim_s=settings.notify_claim_s * settings.time_scale, time_scale=settings.time_scale
    )
    notifications = NotificationServicer(Devices(pool), streams)
    verifier = TokenVerifier(settings)  # the calls' and SendMessages' sends': one cache of verified tokens
    servicer = MessageServicer(
        Messages(
            pool,
            membership,
            Limits(settings.max_message_chars),
            conversation_pb2_grpc.ConversationServiceStub(channel),
            attachments,
        ),
        hub,
        attachments,
        verifier,
    )

    def register(server: grpc.aio.Server) -> list[str]:
        message_pb2_grpc.add_MessageServiceServicer_to_server(servicer, server)
        notification_pb2_grpc.add_NotificationServiceServicer_to_server(notifications, server)
        return [
            message_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name,
            notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
        ]

    def end_streams() -> None:
        hub.end_streams()
        streams.end_streams()

    await service_main.serve_service(
        "message",
        settings,
        register,
        stopping=stopping,
        # PostgreSQL only: without Redis, sends still commit and the relay catches up later.
        readiness=readiness.of(postgres_url=settings.database_url, time_scale=settings.time_scale),
        end_streams=end_streams,
        verifier=verifier,
        background=background,
        close=[hub.stop, channel.close, pool.close, redis_client.aclose, pubsub_client.aclose],
    )


if __name__ == "__main__":
    service_main.run("message", main)
