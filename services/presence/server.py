"""The presence service's gRPC face: translate, authorize, call the domain."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatmesh.gen.chat.v1 import presence_pb2 as pb
from chatmesh.gen.chat.v1 import presence_pb2_grpc
from chatmesh.grpc_server import Context, current_identity, require_service
from services.presence.hub import EventHub
from services.presence.presence import Presence


class PresenceServicer(presence_pb2_grpc.PresenceServiceServicer):
    def __init__(self, presence: Presence, hub: EventHub) -> None:
        self._presence = presence
        self._hub = hub

    async def ReportConnections(self, request: pb.ReportConnectionsRequest,
                                context: Context) -> pb.ReportConnectionsResponse:
        require_service()
        await self._presence.report(request.edge_id, request.connections)
        return pb.ReportConnectionsResponse()

    async def DropConnections(self, request: pb.DropConnectionsRequest,
                              context: Context) -> pb.DropConnectionsResponse:
        require_service()
        await self._presence.drop(request.edge_id, request.connections)
        return pb.DropConnectionsResponse()

    async def SetPresence(self, request: pb.SetPresenceRequest,
                          context: Context) -> pb.SetPresenceResponse:
        presence = await self._presence.set_explicit(current_identity().user_id, request.status)
        return pb.SetPresenceResponse(presence=presence)

    async def GetPresence(self, request: pb.GetPresenceRequest,
                          context: Context) -> pb.GetPresenceResponse:
        return pb.GetPresenceResponse(presences=await self._presence.query(current_identity().user_id,
                                                                           list(request.user_ids)))

    async def SetTyping(self, request: pb.SetTypingRequest, context: Context) -> pb.SetTypingResponse:
        await self._presence.set_typing(current_identity().user_id, request.conversation_id, request.is_typing)
        return pb.SetTypingResponse()

    async def StreamPresenceEvents(self, request_iterator: AsyncIterator[pb.StreamPresenceEventsRequest],
                                   context: Context) -> AsyncIterator[pb.StreamPresenceEventsResponse]:
        require_service()
        async for response in self._hub.stream(request_iterator):
            yield response
