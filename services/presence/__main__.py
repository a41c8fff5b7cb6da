"""Run the presence service: `python -m services.presence`.

Besides the gRPC servicer, each replica runs the sweeper (expires connections and typing states), the
call ringing timeouts (services/presence/calls.py) and one pub/sub connection for the ephemeral events
of the users its edge streams subscribed, all supervised. Commands go through a Redis client with
command timeouts (a stalled Redis fails them instead of hanging the RPC); the subscription has a client
of its own whose reads never time out.
"""

from __future__ import annotations

import asyncio

import grpc

from chatmesh import readiness, service_main
from chatmesh.auth import ServiceCredentials
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import conversation_pb2_grpc, presence_pb2, presence_pb2_grpc
from chatmesh.grpc_client import open_channel
from chatmesh.membership import MembershipCache, MembershipVersions
from chatmesh.redis_conn import Keys, open_pubsub_redis, open_redis
from chatmesh.resilience import spawn_supervised
from chatmesh.tls import client_tls
from services.presence.call_store import CallStore
from services.presence.calls import ENDED_KEEP_S, Calls
from services.presence.hub import EventHub
from services.presence.keys import PresenceKeys
from services.presence.presence import TYPING_WINDOW_S, Contacts, Presence
from services.presence.server import PresenceServicer
from services.presence.store import PresenceStore


async def main(settings: Settings, stopping: asyncio.Event | None = None) -> None:
    settings.require("redis_url")
    redis_client = open_redis(settings.redis_url)
    pubsub_client = open_pubsub_redis(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    channel = open_channel(settings.conversation_target, client_tls(settings))
    conversations = conversation_pb2_grpc.ConversationServiceStub(channel)
    credentials = ServiceCredentials(settings, "presence")
    ttl_s = settings.presence_ttl_s * settings.time_scale
    presence_keys = PresenceKeys(settings.redis_prefix)
    store = PresenceStore(
        redis_client,
        presence_keys,
        ttl_s,
        TYPING_WINDOW_S * settings.time_scale,
        settings.presence_announce_interval_s * settings.time_scale,
    )
    hub = EventHub(redis_client, pubsub_client, presence_keys)
    await hub.start()
    membership = MembershipCache(conversations, credentials, MembershipVersions(redis_client, keys))
    presence = Presence(store, hub, Contacts(conversations, credentials), membership, ttl_s, settings.time_scale)
    sweeper = spawn_supervised("presence sweep", presence.sweep_forever)
    ring_s, max_s = settings.call_ring_timeout_s * settings.time_scale, settings.call_max_s * settings.time_scale
    calls = Calls(
        CallStore(
            redis_client, presence_keys, int(ring_s * 1000), int(max(max_s, ring_s) * 1000), int(ENDED_KEEP_S * 1000)
        ),
        hub,
        membership,
        store.allow,
        ring_s,
    )
    ringing = spawn_supervised("call ringing timeouts", calls.expire_forever)
    servicer = PresenceServicer(presence, hub, calls, settings)

    def register(server: grpc.aio.Server) -> list[str]:
        presence_pb2_grpc.add_PresenceServiceServicer_to_server(servicer, server)
        return [presence_pb2.DESCRIPTOR.services_by_name["PresenceService"].full_name]

    await service_main.serve_service(
        "presence",
        settings,
        register,
        stopping=stopping,
        readiness=readiness.of(redis_client=redis_client, time_scale=settings.time_scale),
        end_streams=hub.end_streams,
        background=[sweeper, ringing],
        close=[hub.stop, channel.close, pubsub_client.aclose, redis_client.aclose],
    )


if __name__ == "__main__":
    service_main.run("presence", main)
