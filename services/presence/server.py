"""The presence service's gRPC face: translate, authorize, call the domain."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import call_pb2, presence_pb2_grpc
from chatmesh.gen.chat.v1 import presence_pb2 as pb
from chatmesh.grpc_server import Context, current_identity, require_service
from services.presence.calls import MAX_SDP_BYTES, Calls
from services.presence.hub import EventHub
from services.presence.ice import call_config
from services.presence.presence import Presence


class PresenceServicer(presence_pb2_grpc.PresenceServiceServicer):
    def __init__(self, presence: Presence, hub: EventHub, calls: Calls, settings: Settings) -> None:
        self._presence = presence
        self._hub = hub
        self._calls = calls
        self._settings = settings

    async def ReportConnections(
        self, request: pb.ReportConnectionsRequest, context: Context
    ) -> pb.ReportConnectionsResponse:
        require_service()
        await self._presence.report(request.edge_id, request.connections)
        return pb.ReportConnectionsResponse()

    async def DropConnections(self, request: pb.DropConnectionsRequest, context: Context) -> pb.DropConnectionsResponse:
        require_service()
        await self._presence.drop(request.edge_id, request.connections)
        return pb.DropConnectionsResponse()

    async def SetPresence(self, request: pb.SetPresenceRequest, context: Context) -> pb.SetPresenceResponse:
        presence = await self._presence.set_explicit(current_identity().user_id, request.status)
        return pb.SetPresenceResponse(presence=presence)

    async def GetPresence(self, request: pb.GetPresenceRequest, context: Context) -> pb.GetPresenceResponse:
        return pb.GetPresenceResponse(
            presences=await self._presence.query(current_identity().user_id, list(request.user_ids))
        )

    async def SetTyping(self, request: pb.SetTypingRequest, context: Context) -> pb.SetTypingResponse:
        await self._presence.set_typing(current_identity().user_id, request.conversation_id, request.is_typing)
        return pb.SetTypingResponse()

    async def StreamPresenceEvents(
        self, request_iterator: AsyncIterator[pb.StreamPresenceEventsRequest], context: Context
    ) -> AsyncIterator[pb.StreamPresenceEventsResponse]:
        require_service()
        async for response in self._hub.stream(request_iterator):
            yield response

    # call signaling (services/presence/calls.py)

    async def StartCall(self, request: call_pb2.StartCallRequest, context: Context) -> call_pb2.StartCallResponse:
        return call_pb2.StartCallResponse(
            call=await self._calls.start(
                current_identity().user_id, request.conversation_id, request.callee_id, request.sdp_offer
            )
        )

    async def AnswerCall(self, request: call_pb2.AnswerCallRequest, context: Context) -> call_pb2.AnswerCallResponse:
        return call_pb2.AnswerCallResponse(
            call=await self._calls.answer(current_identity().user_id, request.call_id, request.sdp_answer)
        )

    async def SendCallCandidate(
        self, request: call_pb2.SendCallCandidateRequest, context: Context
    ) -> call_pb2.SendCallCandidateResponse:
        await self._calls.candidate(current_identity().user_id, request.call_id, request.candidate)
        return call_pb2.SendCallCandidateResponse()

    async def HangUpCall(self, request: call_pb2.HangUpCallRequest, context: Context) -> call_pb2.HangUpCallResponse:
        return call_pb2.HangUpCallResponse(call=await self._calls.hang_up(current_identity().user_id, request.call_id))

    async def GetCall(self, request: call_pb2.GetCallRequest, context: Context) -> call_pb2.GetCallResponse:
        return call_pb2.GetCallResponse(call=await self._calls.get(current_identity().user_id, request.call_id))

    async def GetCallConfig(
        self, request: call_pb2.GetCallConfigRequest, context: Context
    ) -> call_pb2.GetCallConfigResponse:
        return call_config(self._settings, current_identity().user_id, self._calls.ring_timeout_s, MAX_SDP_BYTES)
