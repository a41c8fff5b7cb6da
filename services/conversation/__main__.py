"""Run the conversation service: `python -m services.conversation`."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from chatmesh import readiness, service_main
from chatmesh.auth import ServiceCredentials
from chatmesh.config import ConfigError, Settings
from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc, message_pb2_grpc
from chatmesh.grpc_client import open_channel
from chatmesh.membership import MembershipVersions
from chatmesh.outbox import OutboxRelay
from chatmesh.redis_conn import Keys, open_redis
from chatmesh.resilience import spawn_supervised
from chatmesh.tls import client_tls
from services.conversation.audit import AuditTrail, MessageAuditSource
from services.conversation.conversations import Conversations
from services.conversation.direct_requests import DirectRequests
from services.conversation.participants import Participants
from services.conversation.privacy import Privacy
from services.conversation.projection import Projection
from services.conversation.server import ConversationServicer
from services.conversation.settings import ConversationSettings
from services.conversation.store import SCHEMA, SHARED_DDL

MIGRATIONS = Path(__file__).parent / "migrations"


async def main(settings: Settings, stopping: asyncio.Event | None = None) -> None:
    settings.require("database_url", "redis_url")
    if settings.max_group_size < 1:
        raise ConfigError(f"CHAT_MAX_GROUP_SIZE must be at least 1 (got {settings.max_group_size})")
    pool = await service_main.open_store(settings, "conversation", SCHEMA, MIGRATIONS, SHARED_DDL)
    redis_client = open_redis(settings.redis_url)
    keys = Keys(settings.redis_prefix, settings.fanout_partitions)
    relay = OutboxRelay(pool, settings.database_url, SCHEMA, redis_client, keys, settings.time_scale)
    projection = Projection(pool, redis_client, keys, f"{socket.gethostname()}-{os.getpid()}", settings.time_scale)
    background = [spawn_supervised("outbox relay", relay.run), spawn_supervised("projection", projection.run)]
    message_channel = open_channel(settings.message_target, client_tls(settings))
    audit_source = MessageAuditSource(
        message_pb2_grpc.MessageServiceStub(message_channel), ServiceCredentials(settings, "conversation")
    )
    versions = MembershipVersions(redis_client, keys)
    requests = DirectRequests(pool, versions)
    servicer = ConversationServicer(
        Conversations(pool, settings.max_group_size, requests),
        Participants(pool, settings.max_group_size, versions),
        AuditTrail(pool, audit_source),
        requests,
        Privacy(pool),
        ConversationSettings(pool, versions),
    )

    def register(server: object) -> list[str]:
        conversation_pb2_grpc.add_ConversationServiceServicer_to_server(servicer, server)
        return [conversation_pb2.DESCRIPTOR.services_by_name["ConversationService"].full_name]

    # Ready while PostgreSQL answers; Redis only feeds the outbox relay, which catches up after an outage.
    await service_main.serve_service(
        "conversation",
        settings,
        register,
        stopping=stopping,
        readiness=readiness.of(postgres_url=settings.database_url, time_scale=settings.time_scale),
        background=background,
        close=[projection.leave, message_channel.close, pool.close, redis_client.aclose],
    )


if __name__ == "__main__":
    service_main.run("conversation", main)
