"""The message service's gRPC face: translate, authorize, call, translate back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from chatmesh.gen.chat.v1 import message_pb2 as pb
from chatmesh.gen.chat.v1 import message_pb2_grpc
from chatmesh.grpc_server import current_identity, require_service
from services.message import convert, events
from services.message.hub import Hub
from services.message.messages import Messages
from services.message.store import NewMessage


class MessageServicer(message_pb2_grpc.MessageServiceServicer):
    def __init__(self, messages: Messages, hub: Hub) -> None:
        self._messages = messages
        self._hub = hub

    async def SendMessage(self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext) -> pb.SendMessageResponse:
        row, created = await self._messages.send(current_identity().user_id, NewMessage(
            conversation_id=request.conversation_id,
            sender_id=current_identity().user_id,
            content=request.content,
            content_encrypted=request.content_encrypted or None,
            enc_algorithm=request.encryption.algorithm,
            enc_key_id=request.encryption.key_id,
            client_message_id=request.client_message_id or None,
            reply_to_id=request.reply_to_id or None,
        ))
        return pb.SendMessageResponse(message=convert.message(row), created=created)

    async def ListMessages(self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext) -> pb.ListMessagesResponse:
        rows, has_more = await self._messages.history(
            current_identity().user_id, request.conversation_id, limit=request.limit,
            before_seq=request.before_seq, after_seq=request.after_seq)
        return pb.ListMessagesResponse(messages=[convert.message(r) for r in rows], has_more=has_more)

    async def SubscribeEvents(self, request: pb.SubscribeEventsRequest, context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        require_service()
        async for response in events.single_user(self._hub, request.user_id, request.resume_token):
            yield response

    async def StreamEvents(self, request_iterator: AsyncIterator[pb.StreamEventsRequest],
                           context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamEventsResponse]:
        require_service()
        async for response in events.MultiplexedStream(self._hub).run(request_iterator):
            yield response
