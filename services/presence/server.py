"""The presence service's gRPC face. Its RPCs are the contract's; their behaviour lands with the
presence issue, and until then they answer UNIMPLEMENTED (the generated base class)."""

from __future__ import annotations

from chatmesh.gen.chat.v1 import presence_pb2_grpc


class PresenceServicer(presence_pb2_grpc.PresenceServiceServicer):
    pass
