"""The conversation service's gRPC face: translate, authorize, call, translate back."""

from __future__ import annotations

import grpc

from chatmesh.grpc_server import current_identity, require_service
from chatmesh.gen.chat.v1 import conversation_pb2 as pb
from chatmesh.gen.chat.v1 import conversation_pb2_grpc
from services.conversation import convert
from services.conversation.conversations import Conversations


class ConversationServicer(conversation_pb2_grpc.ConversationServiceServicer):
    def __init__(self, conversations: Conversations) -> None:
        self._conversations = conversations

    async def UpsertUser(self, request: pb.UpsertUserRequest, context: grpc.aio.ServicerContext) -> pb.UpsertUserResponse:
        me = current_identity()
        user = await self._conversations.upsert_user(me.user_id, request.display_name or me.display_name)
        return pb.UpsertUserResponse(user=convert.user(user))

    async def GetUser(self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext) -> pb.GetUserResponse:
        current_identity()
        return pb.GetUserResponse(user=convert.user(await self._conversations.get_user(request.user_id)))

    async def CreateDirectConversation(
        self, request: pb.CreateDirectConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateDirectConversationResponse:
        view, created = await self._conversations.create_direct(current_identity().user_id, request.user_id)
        return pb.CreateDirectConversationResponse(conversation=convert.conversation(view), created=created)

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConversationResponse:
        view = await self._conversations.get_for(current_identity().user_id, request.conversation_id)
        return pb.GetConversationResponse(conversation=convert.conversation(view))

    async def GetMembership(
        self, request: pb.GetMembershipRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMembershipResponse:
        require_service()
        view = await self._conversations.membership(request.conversation_id)
        conversation = convert.conversation(view)
        return pb.GetMembershipResponse(
            conversation_id=conversation.conversation_id, type=conversation.type, active=view.row.active,
            participants=conversation.participants, version=view.row.membership_version)

    async def ListContacts(self, request: pb.ListContactsRequest, context: grpc.aio.ServicerContext) -> pb.ListContactsResponse:
        require_service()
        return pb.ListContactsResponse(user_ids=await self._conversations.contacts(request.user_id))
