"""`SendMessages`: the edge's sends of many users in one call, each answered as `SendMessage` would.

The edge gathers the WebSocket sends that arrive while its previous call is in flight
(services/edge/send_batch.py), so one call carries what used to be many. Each send carries its
user's own token and is verified here like a call's, so the edge acts only as users whose tokens it
holds (docs/security.md), never as a user it names. Each conversation's membership is looked up once
per call; the sends then go to group commit together (group_commit.py), and each one's result or
error is the one SendMessage answers: the edge maps them to frames with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from chatmesh import errors, tracing
from chatmesh.auth import AuthError, Identity, TokenVerifier
from chatmesh.errors import ChatError
from chatmesh.gen.chat.v1 import message_pb2 as pb
from chatmesh.grpc_server import Context, allow_service_caller, require_service, status_of
from chatmesh.logs import request_id_var
from chatmesh.membership import Membership
from services.message import convert
from services.message.access import parse_id
from services.message.messages import Messages
from services.message.store import NewMessage

MAX_SENDS = 256
SEND_METHOD = "/chat.v1.MessageService/SendMessage"  # whose rules (and errors) each send follows
BATCH_METHOD = "/chat.v1.MessageService/SendMessages"
ITEM_SPAN = "SendMessages send"  # a traced send's span, continuing the trace its traceparent names


def new_message(request: pb.SendMessageRequest, sender: str) -> NewMessage:
    return NewMessage(
        conversation_id=request.conversation_id,
        sender_id=sender,
        content=request.content,
        content_encrypted=request.content_encrypted or None,
        enc_algorithm=request.encryption.algorithm,
        enc_key_id=request.encryption.key_id,
        client_message_id=request.client_message_id or None,
        reply_to_id=request.reply_to_id or None,
        attachment_ids=list(request.attachment_ids),
    )


class SendBatchRpcs:
    """The batched send, mixed into the MessageServicer."""

    _messages: Messages
    _verifier: TokenVerifier

    async def SendMessages(self, request: pb.SendMessagesRequest, context: Context) -> pb.SendMessagesResponse:
        require_service()
        if len(request.sends) > MAX_SENDS:
            raise errors.invalid("TOO_MANY_SENDS", f"at most {MAX_SENDS} sends per call")
        conversations: set[str] = set()
        for send in request.sends:
            with contextlib.suppress(ChatError):  # a malformed id fails its own send, in Messages.send
                conversations.add(parse_id(send.request.conversation_id, "conversation_id"))
        memberships = await self._messages.memberships(conversations)
        results = await asyncio.gather(*(self._send_one(send, memberships) for send in request.sends))
        return pb.SendMessagesResponse(results=results)

    async def _send_one(
        self, send: pb.BatchedSend, memberships: dict[str, Membership | Exception]
    ) -> pb.BatchedSendResult:
        """One send, in a task of its own (gather): its request id and its trace are its own."""
        request_id_var.set(send.request_id or uuid.uuid4().hex)
        span = tracing.continue_trace(ITEM_SPAN, send.traceparent, SpanKind.SERVER) if send.traceparent else None
        try:
            with trace.use_span(span, end_on_exit=True) if span is not None else contextlib.nullcontext():
                identity = await self._user(send.user_token)
                membership = memberships.get(_canonical(send.request.conversation_id) or "")
                if isinstance(membership, Exception):
                    raise membership
                row, created = await self._messages.send(
                    identity.user_id, new_message(send.request, identity.user_id), membership
                )
        except Exception as exc:  # noqa: BLE001 - answered per send, as the interceptor answers a call
            error = status_of(BATCH_METHOD, exc)
            return pb.BatchedSendResult(
                error=pb.SendError(code=error.status.value[0], reason=error.code, message=error.message)
            )
        return pb.BatchedSendResult(response=pb.SendMessageResponse(message=convert.message(row), created=created))

    async def _user(self, token: str) -> Identity:
        """The send's user, from its own token, refused as SendMessage's interceptor refuses a call."""
        try:
            identity = await self._verifier.averify_bearer(f"Bearer {token}" if token else None)
        except AuthError as exc:
            raise ChatError(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", f"invalid credentials: {exc}") from None
        allow_service_caller(SEND_METHOD, identity)  # a service token: refused, no service sends as a user
        return identity


def _canonical(conversation_id: str) -> str | None:
    try:
        return parse_id(conversation_id, "conversation_id")
    except ChatError:
        return None
