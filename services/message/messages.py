"""Message rules: who may send, read, edit and delete, and how a send stays ordered and idempotent.

Each write is one transaction that also writes its event to the outbox, so a committed change
always has its event and a rolled-back one never does. Receipts, reactions, search and the audit
read path live in their own modules; `Messages` holds them so the servicer has one object to call.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox, tracing
from chatmesh.gen.chat.v1 import common_pb2, conversation_pb2_grpc
from chatmesh.logs import request_id_var
from chatmesh.membership import Membership, MembershipCache
from services.message import access, convert, store, threads, views
from services.message.access import parse_id
from services.message.attachments import Attachments
from services.message.audit import Audit
from services.message.group_commit import GroupCommit
from services.message.reactions import Reactions
from services.message.receipts import Receipts
from services.message.search import Search
from services.message.store import MessageRow, NewMessage
from services.message.threads import Threads

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "Limits", "Messages", "parse_id"]

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_CLIENT_ID = 128
MAX_ENCRYPTION_FIELD = 128
DEFAULT_MAX_CONTENT = 4000


@dataclass(frozen=True)
class Limits:
    max_content: int = DEFAULT_MAX_CONTENT

    def __post_init__(self) -> None:
        if self.max_content < 1:
            raise ValueError(f"CHAT_MAX_MESSAGE_CHARS must be at least 1, not {self.max_content}")


_CLIENT_ID_INDEX = "messages_client_id"  # unique (sender_id, client_message_id): idempotent sends
_ATTACHMENTS_AVAILABLE = "attachments_available"  # send_message's check that every upload is still free
_REPLY_TO_FOUND = "reply_to_found"  # send_message's check that reply_to_id is a message of the conversation


class Messages:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        membership: MembershipCache,
        limits: Limits = Limits(),
        conversations: conversation_pb2_grpc.ConversationServiceStub | None = None,
        attachments: Attachments | None = None,
    ) -> None:
        self._pool = pool
        self._attachments = attachments
        self._membership = membership
        self._limits = limits
        self.receipts = Receipts(pool, membership)
        self.reactions = Reactions(pool, membership)
        self.search = Search(pool, membership, conversations)
        self.audit = Audit(pool)
        self.threads = Threads(pool, membership)
        self._group = GroupCommit(pool)

    async def send(self, sender: str, new: NewMessage, membership: Membership | None = None) -> tuple[MessageRow, bool]:
        """Store a message with the next seq; a resend of a client_message_id returns the original.

        The duplicate check, the seq, the row and its event commit together, in the transaction of
        the sends that arrive with it (group_commit.py: `store.send_messages` runs each send as
        `store.send_message` in a subtransaction of its own), and the answer comes after the commit.
        The message id and created_at are chosen here, so the event can be serialized before the
        statement; the database appends the seq to it (and, for a reply, the root's new reply count:
        threads.py). The relay is woken in-process after the commit instead of by a NOTIFY (see
        chatmesh/outbox.py). `membership`: the conversation's, when the caller already has it (a
        batch looks each conversation up once).
        """
        new.conversation_id = parse_id(new.conversation_id, "conversation_id")
        if new.reply_to_id:
            new.reply_to_id = parse_id(new.reply_to_id, "reply_to_id")
        self._validate_new(new)
        (membership or await self._membership.get(new.conversation_id)).require_writer(sender)
        attached: bytes | None = None
        if new.attachment_ids:
            if self._attachments is None:
                raise errors.invalid("ATTACHMENTS_DISABLED", "this service takes no attachments")
            new.attachment_ids, attached = await self._attachments.for_send(
                sender, new.conversation_id, new.attachment_ids
            )
        draft = MessageRow(
            message_id=str(uuid.uuid4()),
            conversation_id=new.conversation_id,
            seq=0,
            sender_id=new.sender_id,
            content=new.content,
            content_encrypted=new.content_encrypted,
            enc_algorithm=new.enc_algorithm,
            enc_key_id=new.enc_key_id,
            client_message_id=new.client_message_id,
            reply_to_id=new.reply_to_id,
            created_at=datetime.now(UTC),
            edited_at=None,
            deleted_at=None,
            attachments=attached,
        )
        event = convert.message_event("chat:message_received", draft)
        if new.reply_to_id:
            threads.mark_reply(event, new.reply_to_id, draft.created_at)
        ready = store.Draft(
            new, draft.message_id, draft.created_at, event.SerializeToString(), attached, tracing.traceparent()
        )
        sent = await self._group.send(ready)
        if sent.error_state is None:
            assert sent.row is not None
            if not sent.created:
                return self._same_conversation(sent.row, new), False
            return sent.row, True
        if sent.error_constraint == _REPLY_TO_FOUND:  # checked by the statement's update of the root
            raise errors.not_found("REPLY_TO_NOT_FOUND", "reply_to_id is not a message of this conversation")
        if sent.error_constraint == _ATTACHMENTS_AVAILABLE:
            raise _attachment_unavailable()
        # Any other error rolled back this send alone; sent again by itself, it fails (or succeeds)
        # exactly as a send did before group commit, with the same exception.
        return await self._send_alone(new, ready)

    async def _send_alone(self, new: NewMessage, ready: store.Draft) -> tuple[MessageRow, bool]:
        """One send in one statement and transaction of its own (`store.send_message`)."""
        async with self._pool.connection() as conn:
            try:
                async with outbox.carry_trace(conn):  # traced: the outbox row gets the trace (else nothing)
                    created, row = await store.send_message(
                        conn,
                        new,
                        ready.message_id,
                        ready.created_at,
                        ready.payload,
                        notify=outbox.needs_notify(store.SCHEMA),
                        attachments=ready.attachments,
                    )
            except psycopg.errors.RaiseException as exc:
                if exc.diag.constraint_name == _REPLY_TO_FOUND:
                    raise errors.not_found(
                        "REPLY_TO_NOT_FOUND", "reply_to_id is not a message of this conversation"
                    ) from None
                if exc.diag.constraint_name != _ATTACHMENTS_AVAILABLE:
                    raise
                raise _attachment_unavailable() from None
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != _CLIENT_ID_INDEX or new.client_message_id is None:
                    raise
                # A concurrent send of the same client_message_id committed first; ours wrote nothing.
                original = await store.get_by_client_id(conn, new.sender_id, new.client_message_id)
                assert original is not None
                created, row = False, original
        if not created:
            return self._same_conversation(row, new), False
        outbox.wake(store.SCHEMA)
        return row, True

    async def memberships(self, conversation_ids: set[str]) -> dict[str, Membership | Exception]:
        """Each conversation's membership (or the error looking it up), looked up once for a batch."""
        found = await asyncio.gather(*(self._membership.get(c) for c in conversation_ids), return_exceptions=True)
        result: dict[str, Membership | Exception] = {}
        for conversation_id, membership in zip(conversation_ids, found, strict=True):
            if isinstance(membership, BaseException) and not isinstance(membership, Exception):
                raise membership  # cancelled
            result[conversation_id] = membership
        return result

    async def history(
        self, reader: str, conversation_id: str, *, limit: int, before_seq: int, after_seq: int
    ) -> tuple[list[common_pb2.Message], bool]:
        """Ascending seq pages: the newest `limit` (before `before_seq`), or the oldest after `after_seq`.

        Deleted messages stay in the page as placeholders, so a client never sees a gap it would
        mistake for a lost message.
        """
        conversation_id = parse_id(conversation_id, "conversation_id")
        if limit < 0 or before_seq < 0 or after_seq < 0:
            raise errors.invalid("INVALID_ARGUMENT", "limit, before_seq and after_seq must not be negative")
        if before_seq and after_seq:
            raise errors.invalid("INVALID_ARGUMENT", "give before_seq or after_seq, not both")
        limit = min(limit or DEFAULT_PAGE, MAX_PAGE)
        membership = await self._membership.get(conversation_id)
        membership.require_participant(reader)
        async with self._pool.connection() as conn:
            rows = await store.list_messages(
                conn, conversation_id, limit=limit + 1, before_seq=before_seq or None, after_seq=after_seq or None
            )
            has_more = len(rows) > limit
            if has_more:
                rows = rows[:limit] if after_seq else rows[1:]
            return await views.render(conn, reader, rows, {conversation_id: membership.roles}), has_more

    async def edit(self, editor: str, message_id: str, content: str) -> common_pb2.Message:
        """The sender replaces the text; the text replaced is kept in message_edits."""
        self._validate_text(content)
        async with self._pool.connection() as conn:
            found = await access.find(conn, self._membership, message_id, editor)
            found.membership.require_unarchived()
            if found.row.sender_id != editor:
                raise errors.forbidden("NOT_SENDER", "only the sender may edit a message")
            if found.row.content_encrypted is not None:
                raise errors.failed_precondition("ENCRYPTED_MESSAGE", "an encrypted message cannot be edited as text")
            async with outbox.wake_after(store.SCHEMA) as notify, conn.transaction():
                row = await store.get_message(conn, found.row.message_id, for_update=True)
                assert row is not None
                access.require_live(row)
                if row.content != content:
                    await store.record_edit(conn, row.message_id, row.content)
                    row = await store.update_content(conn, row.message_id, content)
                    await outbox.enqueue(
                        conn, store.SCHEMA, [convert.message_event("chat:message_updated", row)], notify=notify
                    )
            return await views.render_one(conn, editor, row, found.membership.roles)

    async def delete(self, actor: str, message_id: str) -> common_pb2.Message:
        """Soft delete by the sender or a conversation admin/moderator; someone else's delete is audited.

        Deleting a deleted message returns the placeholder again (idempotent, no second event).
        """
        async with self._pool.connection() as conn:
            found = await access.find(conn, self._membership, message_id, actor)
            found.membership.require_unarchived()  # archived: read-only, deletes included
            if found.row.sender_id != actor and not found.role.moderates:
                raise errors.forbidden("NOT_ALLOWED", "only the sender or an admin or moderator may delete a message")
            async with outbox.wake_after(store.SCHEMA) as notify, conn.transaction():
                row = await store.get_message(conn, found.row.message_id, for_update=True)
                assert row is not None
                if row.deleted_at is None:
                    row = await store.mark_deleted(conn, row.message_id, actor)
                    if actor != row.sender_id:
                        await store.append_audit(
                            conn,
                            row.conversation_id,
                            actor,
                            "message.deleted",
                            f"message:{row.message_id}",
                            request_id_var.get(),
                        )
                    event = convert.message_event("chat:message_deleted", row)
                    await threads.on_reply_deleted(conn, row, event)
                    await outbox.enqueue(conn, store.SCHEMA, [event], notify=notify)
            return convert.message(row)

    def _validate_new(self, new: NewMessage) -> None:
        for value, what in (
            (new.client_message_id or "", "client_message_id"),
            (new.enc_algorithm, "encryption"),
            (new.enc_key_id, "encryption"),
        ):
            access.require_text(value, what)
        if new.client_message_id and len(new.client_message_id) > MAX_CLIENT_ID:
            raise errors.invalid("INVALID_ARGUMENT", f"client_message_id exceeds {MAX_CLIENT_ID} characters")
        if len(new.enc_algorithm) > MAX_ENCRYPTION_FIELD or len(new.enc_key_id) > MAX_ENCRYPTION_FIELD:
            raise errors.invalid("INVALID_ARGUMENT", f"encryption fields exceed {MAX_ENCRYPTION_FIELD} characters")
        if not new.content_encrypted:
            if new.enc_algorithm or new.enc_key_id:
                raise errors.invalid("INVALID_ARGUMENT", "encryption metadata without content_encrypted")
            if not (new.attachment_ids and new.content == ""):  # attachments need no caption
                self._validate_text(new.content)
            return
        if new.content:
            raise errors.invalid("INVALID_ARGUMENT", "send content or content_encrypted, not both")
        if not new.enc_algorithm:
            raise errors.invalid("ENCRYPTION_REQUIRED", "content_encrypted needs encryption.algorithm")
        # Ciphertext is opaque: bound it by bytes, with room for the encoding overhead of the text limit.
        if len(new.content_encrypted) > self._limits.max_content * 4:
            raise errors.invalid("CONTENT_TOO_LONG", "encrypted content is too large")

    def _validate_text(self, content: str) -> None:
        access.require_text(content, "content")
        if not content.strip():
            raise errors.invalid("EMPTY_CONTENT", "content must not be blank")
        if len(content) > self._limits.max_content:
            raise errors.invalid("CONTENT_TOO_LONG", f"content exceeds {self._limits.max_content} characters")

    @staticmethod
    def _same_conversation(old: MessageRow, new: NewMessage) -> MessageRow:
        if old.conversation_id != new.conversation_id:
            raise errors.conflict(
                "CLIENT_MESSAGE_ID_REUSED", "client_message_id was already used for another conversation"
            )
        return old


def _attachment_unavailable() -> errors.ChatError:
    return errors.conflict(
        "ATTACHMENT_UNAVAILABLE", "an attachment is already attached to another message, or was collected"
    )
