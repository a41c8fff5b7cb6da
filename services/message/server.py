"""The message service's gRPC face: translate, authorize, call, translate back."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatmesh.auth import TokenVerifier
from chatmesh.gen.chat.v1 import message_pb2 as pb
from chatmesh.gen.chat.v1 import message_pb2_grpc
from chatmesh.grpc_server import Context, current_identity, require_service
from services.message import convert
from services.message.attachment_server import AttachmentRpcs
from services.message.attachments import Attachments
from services.message.delivery import streams
from services.message.delivery.hub import Hub
from services.message.messages import Messages
from services.message.send_batch import SendBatchRpcs, new_message


class MessageServicer(AttachmentRpcs, SendBatchRpcs, message_pb2_grpc.MessageServiceServicer):
    def __init__(self, messages: Messages, hub: Hub, attachments: Attachments, verifier: TokenVerifier) -> None:
        self._messages = messages
        self._verifier = verifier  # SendMessages verifies each send's own user token
        self._hub = hub
        self._attachments = attachments

    async def SendMessage(self, request: pb.SendMessageRequest, context: Context) -> pb.SendMessageResponse:
        sender = current_identity().user_id
        row, created = await self._messages.send(sender, new_message(request, sender))
        return pb.SendMessageResponse(message=convert.message(row), created=created)

    async def ListMessages(self, request: pb.ListMessagesRequest, context: Context) -> pb.ListMessagesResponse:
        messages, has_more = await self._messages.history(
            current_identity().user_id,
            request.conversation_id,
            limit=request.limit,
            before_seq=request.before_seq,
            after_seq=request.after_seq,
        )
        return pb.ListMessagesResponse(messages=messages, has_more=has_more)

    async def ListThread(self, request: pb.ListThreadRequest, context: Context) -> pb.ListThreadResponse:
        root, messages, has_more = await self._messages.threads.page(
            current_identity().user_id,
            request.message_id,
            limit=request.limit,
            before_seq=request.before_seq,
            after_seq=request.after_seq,
        )
        return pb.ListThreadResponse(root=root, messages=messages, has_more=has_more)

    async def EditMessage(self, request: pb.EditMessageRequest, context: Context) -> pb.EditMessageResponse:
        message = await self._messages.edit(current_identity().user_id, request.message_id, request.content)
        return pb.EditMessageResponse(message=message)

    async def DeleteMessage(self, request: pb.DeleteMessageRequest, context: Context) -> pb.DeleteMessageResponse:
        return pb.DeleteMessageResponse(
            message=await self._messages.delete(current_identity().user_id, request.message_id)
        )

    async def UpdateMessageStatus(
        self, request: pb.UpdateMessageStatusRequest, context: Context
    ) -> pb.UpdateMessageStatusResponse:
        position = await self._messages.receipts.update(current_identity().user_id, request.message_id, request.status)
        return pb.UpdateMessageStatusResponse(delivered_seq=position.delivered_seq, read_seq=position.read_seq)

    async def AddReaction(self, request: pb.AddReactionRequest, context: Context) -> pb.AddReactionResponse:
        message = await self._messages.reactions.add(current_identity().user_id, request.message_id, request.emoji)
        return pb.AddReactionResponse(message=message)

    async def RemoveReaction(self, request: pb.RemoveReactionRequest, context: Context) -> pb.RemoveReactionResponse:
        message = await self._messages.reactions.remove(current_identity().user_id, request.message_id, request.emoji)
        return pb.RemoveReactionResponse(message=message)

    async def SearchMessages(self, request: pb.SearchMessagesRequest, context: Context) -> pb.SearchMessagesResponse:
        messages = await self._messages.search.run(
            current_identity().user_id, request.q, request.conversation_id, request.limit
        )
        return pb.SearchMessagesResponse(messages=messages)

    async def ListMessageAuditEntries(
        self, request: pb.ListMessageAuditEntriesRequest, context: Context
    ) -> pb.ListMessageAuditEntriesResponse:
        require_service()
        entries, next_cursor = await self._messages.audit.list(request.conversation_id, request.limit, request.cursor)
        return pb.ListMessageAuditEntriesResponse(entries=entries, next_cursor=next_cursor)

    async def SubscribeEvents(
        self, request: pb.SubscribeEventsRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        require_service()
        async for response in streams.single_user(self._hub, request.user_id, request.resume_token):
            yield response

    async def StreamEvents(
        self, request_iterator: AsyncIterator[pb.StreamEventsRequest], context: Context
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        require_service()
        async for response in streams.MultiplexedStream(self._hub).run(request_iterator):
            yield response
