"""The attachment RPCs of the message service's gRPC face, mixed into MessageServicer: translate,
authorize, call, translate back (the rules are in attachments.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from chatmesh import errors
from chatmesh.gen.chat.v1 import message_pb2 as pb
from chatmesh.grpc_server import Context, current_identity, require_service
from chatmesh.timestamps import timestamp
from services.message.attachments import Attachments


class AttachmentRpcs:
    _attachments: Attachments

    async def CreateUpload(self, request: pb.CreateUploadRequest, context: Context) -> pb.CreateUploadResponse:
        upload = await self._attachments.create(
            current_identity().user_id,
            request.conversation_id,
            request.filename,
            request.size_bytes,
            request.content_type,
        )
        return pb.CreateUploadResponse(
            attachment=upload.attachment,
            upload_url=upload.url,
            upload_method=upload.method,
            upload_headers=upload.headers,
            expires_at=timestamp(datetime.fromtimestamp(upload.expires_at, UTC)),
        )

    async def CompleteUpload(self, request: pb.CompleteUploadRequest, context: Context) -> pb.CompleteUploadResponse:
        return pb.CompleteUploadResponse(
            attachment=await self._attachments.complete(current_identity().user_id, request.attachment_id)
        )

    async def GetAttachment(self, request: pb.GetAttachmentRequest, context: Context) -> pb.GetAttachmentResponse:
        return pb.GetAttachmentResponse(
            attachment=await self._attachments.get(current_identity().user_id, request.attachment_id)
        )

    async def WriteAttachmentContent(
        self, request_iterator: AsyncIterator[pb.WriteAttachmentContentRequest], context: Context
    ) -> AsyncIterator[pb.WriteAttachmentContentResponse]:
        require_service()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "link":
            raise errors.invalid("INVALID_ARGUMENT", "the first message names the signed link")
        row = await self._attachments.accept_upload(first.link)
        yield pb.WriteAttachmentContentResponse(accepted=True, size_bytes=row.size_bytes)

        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise errors.invalid("INVALID_ARGUMENT", "only chunks follow the link")
                yield message.chunk

        attachment = await self._attachments.receive(row, chunks())
        yield pb.WriteAttachmentContentResponse(attachment=attachment)

    async def ReadAttachmentContent(
        self, request: pb.ReadAttachmentContentRequest, context: Context
    ) -> AsyncIterator[pb.ReadAttachmentContentResponse]:
        require_service()
        head, chunks = await self._attachments.read(request)
        yield pb.ReadAttachmentContentResponse(head=head)
        if chunks is not None:
            async for chunk in chunks:
                yield pb.ReadAttachmentContentResponse(chunk=chunk)
