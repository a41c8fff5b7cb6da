"""Attachment rules: upload into a conversation, check the bytes, attach at send, download like history.

Life of an upload: `create` (a participant names the conversation, the file name and the exact size;
over the limit is 413 before a byte is sent) -> the bytes go to the upload URL (the edge streams them
here for the filesystem backend, `receive`; object storage takes them itself) -> `complete` checks
them (the filesystem backend completes in `receive`) -> a send by the uploader attaches it (in the
send's own statement, see migration 0003). What the server stores is what it found in the bytes:
the sniffed type (on the allow-list, or 415), size, sha256, image size and thumbnail, duration.
Anything refused leaves no bytes behind, and an interrupted upload leaves none either.

Access is history's: a participant of the attachment's conversation may read it while its message
is not deleted (the uploader alone before it is attached); a removed participant loses it at once,
signed links included (`read` checks again). Uploads never attached are collected after
CHAT_ATTACHMENT_TTL_S (scaled).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from chatmesh import errors
from chatmesh.config import Settings
from chatmesh.disposition import content_disposition
from chatmesh.gen.chat.v1 import common_pb2, message_pb2
from chatmesh.membership import MembershipCache
from chatmesh.resilience import OutageLog, is_outage
from chatmesh.timestamps import stamp, timestamp
from services.message import attachment_store as store
from services.message import media
from services.message.access import parse_id
from services.message.attachment_store import AttachmentRow, Checked
from services.message.blobstore import BlobStore, FileBlobStore, TempWriter
from services.message.links import Links

log = logging.getLogger(__name__)

MAX_PER_MESSAGE = 10
MAX_DECLARED_TYPE = 255
COLLECT_BATCH = 100
THUMBNAIL_SUFFIX = ".thumb"
_STATES = {"pending": common_pb2.ATTACHMENT_STATE_PENDING, "ready": common_pb2.ATTACHMENT_STATE_READY}


@dataclass(frozen=True)
class AttachmentLimits:
    max_bytes: int
    types: tuple[str, ...]
    max_pixels: int
    ttl_s: float  # unattached uploads live this long (scaled)
    url_ttl_s: float  # signed and presigned links live this long (scaled)

    @classmethod
    def of(cls, settings: Settings) -> AttachmentLimits:
        scale = settings.time_scale
        return cls(
            settings.attachment_max_bytes,
            settings.attachment_types,
            settings.attachment_max_pixels,
            settings.attachment_ttl_s * scale,
            max(1.0, settings.attachment_url_ttl_s * scale),
        )


@dataclass(frozen=True)
class Upload:
    attachment: common_pb2.Attachment
    url: str
    method: str
    headers: dict[str, str]
    expires_at: int


def too_large(max_bytes: int) -> errors.ChatError:
    return errors.invalid("ATTACHMENT_TOO_LARGE", f"attachments are limited to {max_bytes} bytes")


def to_proto(row: AttachmentRow) -> common_pb2.Attachment:
    """Metadata only: what a message carries and stores (links are added per reader, per request)."""
    attachment = common_pb2.Attachment(
        attachment_id=row.attachment_id,
        conversation_id=row.conversation_id,
        uploader_id=row.uploader_id,
        filename=row.filename,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        duration_ms=row.duration_ms,
        has_thumbnail=row.has_thumbnail,
        state=common_pb2.ATTACHMENT_STATE_ATTACHED if row.message_id else _STATES[row.state],
        created_at=timestamp(row.created_at),
    )
    return attachment


class Attachments:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        membership: MembershipCache,
        blobs: BlobStore,
        links: Links | None,
        limits: AttachmentLimits,
    ) -> None:
        self._pool = pool
        self._membership = membership
        self._blobs = blobs
        self._links = links
        self.limits = limits

    async def create(self, user: str, conversation_id: str, filename: str, size: int, declared_type: str) -> Upload:
        conversation_id = parse_id(conversation_id, "conversation_id")
        if size <= 0:
            raise errors.invalid("INVALID_SIZE", "size_bytes must be the upload's exact size, at least 1")
        if size > self.limits.max_bytes:
            raise too_large(self.limits.max_bytes)
        (await self._membership.get(conversation_id)).require_writer(user)  # a blocked user uploads nothing
        attachment_id = str(uuid.uuid4())
        declared = "".join(c for c in declared_type if c.isprintable())[:MAX_DECLARED_TYPE]
        async with self._pool.connection() as conn:
            row = await store.create(
                conn,
                attachment_id,
                conversation_id,
                user,
                media.safe_filename(filename),
                declared,
                size,
                f"{conversation_id}/{attachment_id}",
            )
        expires = int(time.time() + self.limits.url_ttl_s)
        presigned = await self._blobs.presign_upload(row.storage_key, size, int(self.limits.url_ttl_s))
        if presigned is not None:
            url, headers = presigned
        else:
            assert self._links is not None
            url, headers = self._links.url(attachment_id, "upload", user, expires), {}
        return Upload(to_proto(row), url, "PUT", headers, expires)

    async def complete(self, user: str, attachment_id: str) -> common_pb2.Attachment:
        """Check bytes that object storage received (the filesystem backend completes as it receives)."""
        row = await self._own_upload(user, attachment_id)
        if row.state == "ready":
            return to_proto(row)
        size = await self._blobs.size(row.storage_key)
        if size is None:
            raise errors.failed_precondition("UPLOAD_INCOMPLETE", "no bytes were received for this upload")
        if size != row.size_bytes:
            await self._blobs.delete(row.storage_key)
            if size > self.limits.max_bytes:
                raise too_large(self.limits.max_bytes)
            raise errors.invalid("SIZE_MISMATCH", f"{size} bytes were sent, {row.size_bytes} were declared")
        try:
            async with self._blobs.local_copy(row.storage_key) as path:
                found = await asyncio.to_thread(media.analyze, path, self.limits.max_pixels)
            checked = self._checked(found)
        except errors.ChatError:
            await self._blobs.delete(row.storage_key)  # refused bytes are not kept
            raise
        await self._store_thumbnail(row, found)
        async with self._pool.connection() as conn:
            await store.mark_ready(conn, row.attachment_id, checked)  # a concurrent complete may have won
            done = await store.get(conn, row.attachment_id)
        assert done is not None
        return to_proto(done)

    async def accept_upload(self, link: message_pb2.SignedLink) -> AttachmentRow:
        """The pending upload a signed upload link names, checked before any of its bytes are read."""
        self._served_links().check(link, ("upload",))
        row = await self._own_upload(link.user_id, link.attachment_id)
        if row.state != "pending":
            raise errors.conflict("ALREADY_UPLOADED", "this upload has its bytes already")
        return row

    async def receive(self, row: AttachmentRow, chunks: AsyncIterator[bytes]) -> common_pb2.Attachment:
        """Filesystem backend: stream the bytes to a temporary file, check them, then move the file
        into place and mark the upload ready under its row lock (so two uploads of one link cannot
        both land). More bytes than declared stop the stream at once (413); the temporary file is
        removed on every path out, an interrupted upload included."""
        blobs = self._blobs
        assert isinstance(blobs, FileBlobStore)
        writer = TempWriter(blobs.temp_path(row.storage_key))
        try:
            async for chunk in chunks:
                if writer.size + len(chunk) > row.size_bytes:
                    raise too_large(row.size_bytes)
                await writer.write(chunk)
            await writer.close()
            if writer.size != row.size_bytes:
                raise errors.invalid("SIZE_MISMATCH", f"{writer.size} bytes were sent, {row.size_bytes} were declared")
            found = await asyncio.to_thread(media.analyze, writer.path, self.limits.max_pixels)
            checked = self._checked(found)
            async with self._pool.connection() as conn, conn.transaction():
                locked = await store.get(conn, row.attachment_id, for_update=True)
                if locked is None or locked.state != "pending":
                    raise errors.conflict("ALREADY_UPLOADED", "this upload has its bytes already")
                await self._store_thumbnail(row, found)
                await blobs.commit(writer.path, row.storage_key)
                await store.mark_ready(conn, row.attachment_id, checked)
            done = await self._own_upload(row.uploader_id, row.attachment_id)
            return to_proto(done)
        finally:
            await writer.discard()

    def _checked(self, found: media.Analysis) -> Checked:
        """The metadata to store, once the sniffed type is on the allow-list (415 otherwise)."""
        if not media.type_allowed(found.content_type, self.limits.types):
            raise errors.invalid("UNSUPPORTED_MEDIA_TYPE", f"files of type {found.content_type} are not accepted")
        return Checked(
            found.content_type, found.sha256, found.width, found.height, found.duration_ms, found.thumbnail is not None
        )

    async def _store_thumbnail(self, row: AttachmentRow, found: media.Analysis) -> None:
        if found.thumbnail is not None:
            await self._blobs.put(row.storage_key + THUMBNAIL_SUFFIX, found.thumbnail, media.THUMBNAIL_TYPE)

    async def get(self, user: str, attachment_id: str) -> common_pb2.Attachment:
        """Metadata and fresh links, for whoever may read it now."""
        row = await self._visible(user, attachment_id)
        attachment = to_proto(row)
        if row.state != "ready":
            return attachment
        ttl = int(self.limits.url_ttl_s)
        expires = int(time.time() + ttl)
        attachment.download_url = await self._link(row, "file", user, expires)
        if row.has_thumbnail:
            attachment.thumbnail_url = await self._link(row, "thumbnail", user, expires)
        stamp(attachment.urls_expire_at, datetime.fromtimestamp(expires, UTC))
        return attachment

    async def _link(self, row: AttachmentRow, variant: str, user: str, expires: int) -> str:
        key, content_type, name = self._variant(row, variant)
        url = await self._blobs.presign_download(
            key, content_disposition(name, content_type), content_type, int(self.limits.url_ttl_s)
        )
        if url is not None:
            return url
        assert self._links is not None
        return self._links.url(row.attachment_id, variant, user, expires)

    @staticmethod
    def _variant(row: AttachmentRow, variant: str) -> tuple[str, str, str]:
        """(storage key, content type, file name) of a download variant."""
        if variant == "thumbnail":
            stem = row.filename.rsplit(".", 1)[0] if "." in row.filename else row.filename
            return row.storage_key + THUMBNAIL_SUFFIX, media.THUMBNAIL_TYPE, f"{stem}-thumbnail.jpg"
        return row.storage_key, row.content_type, row.filename

    async def read(
        self, request: message_pb2.ReadAttachmentContentRequest
    ) -> tuple[message_pb2.ContentHead, AsyncIterator[bytes] | None]:
        """Filesystem backend: a signed download link's bytes (a range of them), access checked again."""
        link = request.link
        self._served_links().check(link, ("file", "thumbnail"))
        row = await self._visible(link.user_id, link.attachment_id)
        if row.state != "ready" or (link.variant == "thumbnail" and not row.has_thumbnail):
            raise errors.not_found("ATTACHMENT_NOT_FOUND", "this attachment has no such content")
        key, content_type, name = self._variant(row, link.variant)
        total = row.size_bytes if link.variant == "file" else await self._blobs.size(key)
        if total is None:
            raise errors.not_found("ATTACHMENT_NOT_FOUND", "this attachment has no such content")
        first, length = _resolve_range(request, total)
        head = message_pb2.ContentHead(
            content_type=content_type,
            filename=name,
            total_bytes=total,
            first=max(first, 0),
            length=length,
            sha256=row.sha256 if link.variant == "file" else f"{row.sha256}-thumbnail",
            created_at=timestamp(row.created_at),
            satisfiable=first >= 0,
        )
        if first < 0 or length == 0:
            return head, None
        blobs = self._blobs
        assert isinstance(blobs, FileBlobStore)
        return head, blobs.read(key, first, length)

    async def for_send(self, sender: str, conversation_id: str, attachment_ids: list[str]) -> tuple[list[str], bytes]:
        """The ids (canonical, in order) and the metadata a send stores on its message: the sender's
        ready uploads into this conversation. Whether each is still free is decided atomically by the
        send's statement (a resend of the same client_message_id returns the original before that)."""
        if len(attachment_ids) > MAX_PER_MESSAGE:
            raise errors.invalid("TOO_MANY_ATTACHMENTS", f"a message holds at most {MAX_PER_MESSAGE} attachments")
        ids = [parse_id(value, "attachment_ids") for value in attachment_ids]
        if len(set(ids)) != len(ids):
            raise errors.invalid("DUPLICATE_ATTACHMENT", "an attachment is named twice")
        async with self._pool.connection() as conn:
            rows = {row.attachment_id: row for row in await store.get_many(conn, ids)}
        message = common_pb2.Message()
        for attachment_id in ids:
            row = rows.get(attachment_id)
            if row is None or row.uploader_id != sender or row.conversation_id != conversation_id:
                raise errors.not_found(
                    "ATTACHMENT_NOT_FOUND", f"attachment {attachment_id} is not an upload of yours in this conversation"
                )
            if row.state != "ready":
                raise errors.failed_precondition(
                    "ATTACHMENT_NOT_READY", f"attachment {attachment_id} has not been completed"
                )
            attachment = to_proto(row)
            attachment.state = common_pb2.ATTACHMENT_STATE_ATTACHED
            message.attachments.append(attachment)
        return ids, message.SerializeToString()

    def _served_links(self) -> Links:
        """The mesh's link signer; with object storage the mesh serves no bytes, so no link of its own is valid."""
        if self._links is None:
            raise errors.forbidden("LINK_INVALID", "attachments are served by object storage here, not by the mesh")
        return self._links

    async def _own_upload(self, user: str, attachment_id: str) -> AttachmentRow:
        """An upload of `user`, who must still be a participant; 404 for anyone else's."""
        attachment_id = parse_id(attachment_id, "attachment_id")
        async with self._pool.connection() as conn:
            row = await store.get(conn, attachment_id)
        if row is None or row.uploader_id != user:
            raise errors.not_found("ATTACHMENT_NOT_FOUND", f"attachment {attachment_id} does not exist")
        (await self._membership.get(row.conversation_id)).require_participant(user)
        return row

    async def _visible(self, user: str, attachment_id: str) -> AttachmentRow:
        attachment_id = parse_id(attachment_id, "attachment_id")
        async with self._pool.connection() as conn:
            row = await store.get(conn, attachment_id)
        if row is None:
            raise errors.not_found("ATTACHMENT_NOT_FOUND", f"attachment {attachment_id} does not exist")
        (await self._membership.get(row.conversation_id)).require_participant(user)
        if (row.message_id is None and row.uploader_id != user) or row.message_deleted:
            raise errors.not_found("ATTACHMENT_NOT_FOUND", f"attachment {attachment_id} does not exist")
        return row

    async def collect(self) -> int:
        """One batch of uploads never attached within the TTL: bytes, thumbnail and row. The rows stay
        locked while their bytes go, so a send cannot attach one meanwhile (it waits, then finds it
        gone); a failure rolls the batch back and the next round tries again."""
        async with self._pool.connection() as conn, conn.transaction():
            expired = await store.lock_expired(conn, self.limits.ttl_s, COLLECT_BATCH)
            for _, key, has_thumbnail in expired:
                await self._blobs.delete(key)
                if has_thumbnail:
                    await self._blobs.delete(key + THUMBNAIL_SUFFIX)
            if expired:
                await store.delete(conn, [attachment_id for attachment_id, _, _ in expired])
        if expired:
            log.info("collected %d uploads never attached", len(expired))
        if isinstance(self._blobs, FileBlobStore) and len(expired) < COLLECT_BATCH:
            await self._blobs.remove_stale_parts(self.limits.ttl_s)
        return len(expired)

    async def run_collector(self) -> None:
        """Every replica sweeps; SKIP LOCKED keeps them off each other's rows."""
        interval = max(0.2, min(self.limits.ttl_s / 24, 600.0))
        outage = OutageLog(log, "attachment collector")
        while True:
            await asyncio.sleep(interval)
            try:
                while await self.collect() == COLLECT_BATCH:
                    pass
                outage.recovered()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                outage.failed(exc)


def _resolve_range(request: message_pb2.ReadAttachmentContentRequest, total: int) -> tuple[int, int]:
    """(first, length) of the range asked for; first -1 when it is not satisfiable (416)."""
    if request.suffix > 0:
        first = max(0, total - request.suffix)
        return first, total - first
    first, last = request.first, request.last
    if first < 0 or first >= total or (last >= 0 and last < first):
        return -1, 0
    end = total - 1 if last < 0 else min(last, total - 1)
    return first, end - first + 1
