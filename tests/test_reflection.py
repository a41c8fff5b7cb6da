"""gRPC reflection answers in both versions: grpc.reflection.v1 (grpcurl and current tooling ask it
first) and v1alpha (older clients), listing and describing the service's API."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from chatmesh_tools.launcher import Mesh
from tests.test_health import SERVICE_NAMES

VERSIONS = ("v1", "v1alpha")


async def ask(
    channel: grpc.aio.Channel, version: str, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    """The raw RPC by its path: v1's messages are v1alpha's, byte for byte, under another package."""
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return [reply async for reply in call(iter(requests), timeout=10)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
async def test_reflection_lists_and_describes_the_api(mesh: Mesh, service: str, version: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports[service]}") as channel:
        listed, described = await ask(
            channel,
            version,
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAMES[service]),
        )
    names = {s.name for s in listed.list_services_response.service}
    assert {
        SERVICE_NAMES[service],
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    assert not described.HasField("error_response"), described.error_response
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    methods = {
        method.name
        for file in files
        for svc in file.service
        if f"{file.package}.{svc.name}" == SERVICE_NAMES[service]
        for method in svc.method
    }
    assert methods, [file.name for file in files]


async def test_reflection_describes_its_v1_self(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['message']}") as channel:
        [reply] = await ask(
            channel,
            "v1",
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        )
    [raw] = reply.file_descriptor_response.file_descriptor_proto
    file = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert file.package == "grpc.reflection.v1"
    assert file.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
