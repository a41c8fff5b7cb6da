"""Every gRPC service answers the standard health check and lists its API over reflection; the edge
answers /healthz and /readyz."""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from chatmesh_tools.launcher import Mesh

SERVICE_NAMES = {
    "conversation": "chat.v1.ConversationService",
    "message": "chat.v1.MessageService",
    "presence": "chat.v1.PresenceService",
}


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
async def test_health_and_reflection(mesh: Mesh, service: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports[service]}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest())
        named = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[service]))
        assert overall.status == named.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        listed = [s.name async for reply in call for s in reply.list_services_response.service]
        assert SERVICE_NAMES[service] in listed and "grpc.health.v1.Health" in listed


async def test_a_direct_caller_without_credentials_is_unauthenticated(mesh: Mesh) -> None:
    from chatmesh.gen.chat.v1 import message_pb2, message_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['message']}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await message_pb2_grpc.MessageServiceStub(channel).SendMessage(
                message_pb2.SendMessageRequest(conversation_id="x", content="hi")
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_edge_health_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["upstreams"] == {"conversation": True, "message": True, "presence": True}
