"""gRPC server reflection in both protocol versions: `grpc.reflection.v1`, which grpcurl, Postman and
current gRPC tooling ask first, and `grpc.reflection.v1alpha`, which older clients ask.

grpcio-reflection (1.85) ships only the v1alpha servicer. The two protos are the same but for their
package name, so their messages are the same bytes on the wire: one servicer answers both, v1 through a
generic handler over the v1alpha messages. So that reflection can describe v1 itself (a client that
asks what `grpc.reflection.v1.ServerReflection` is), v1alpha's file descriptor, renamed, joins the
default pool as `grpc/reflection/v1/reflection.proto`.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection of `service_names` (and of both reflection services) in v1 and v1alpha."""
    _add_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer([*service_names, V1_SERVICE, V1ALPHA_SERVICE])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            ),
        },
    )
    server.add_generic_rpc_handlers((v1,))


def _add_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # set only on message and enum fields
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())
