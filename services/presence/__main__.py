"""Run the presence service: `python -m services.presence`."""

from __future__ import annotations

import asyncio

import grpc

from chatmesh import logs, readiness
from chatmesh.auth import TokenVerifier
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import presence_pb2, presence_pb2_grpc
from chatmesh.grpc_server import serve
from chatmesh.redis_conn import open_redis
from services.presence.server import PresenceServicer


async def main(settings: Settings, stopping: asyncio.Event | None = None) -> None:
    settings.require("redis_url")
    redis_client = open_redis(settings.redis_url)
    await redis_client.ping()

    def register(server: grpc.aio.Server) -> list[str]:
        presence_pb2_grpc.add_PresenceServiceServicer_to_server(PresenceServicer(), server)
        return [presence_pb2.DESCRIPTOR.services_by_name["PresenceService"].full_name]

    try:
        await serve("presence", settings.listen("presence"), TokenVerifier(settings), register, stopping=stopping,
                    metrics_port=settings.metrics_port,
                    readiness=readiness.of(redis_client=redis_client, time_scale=settings.time_scale))
    finally:
        await redis_client.aclose()


if __name__ == "__main__":
    settings = Settings.from_env()
    logs.setup("presence", settings.log_level)
    asyncio.run(main(settings))
