"""Every WebSocket frame, both ways: the one list /asyncapi.json and docs/websocket.md are written from.

A frame is a JSON object `{"type", "id"?, "data"}`. Client frames that carry an `id` get a reply with
the same id (`ack`, `pong` or `error`); without an id only errors are answered. Events carry
`event_id`, and durable ones a `resume_token`, which the client acknowledges (outgoing.py).

tests/test_asyncapi.py holds this list to the code both ways: every frame type the edge dispatches or
sends, and every event type a service emits, is here and nothing else is; every error code the edge
itself sends and every close code it uses is listed; and each client frame's example, sent to a running
mesh, gets one of the replies listed for it, in the documented shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatmesh.gen.chat.v1 import common_pb2, message_pb2, presence_pb2
from services.edge.openapi_hints import UUID_EXAMPLE

MESSAGE_ID = "9d1e7a52-0b3c-4f8e-8a6d-5e4f3c2b1a09"
RESUME_TOKEN = "1733140800123-4f2a:1733140800456-0"
CALL_ID = "5f0c3a9e2b7d4e18a6c9f1b3d5e7a2c4"


@dataclass(frozen=True)
class Frame:
    type: str
    client: bool  # sent by the client (the edge receives it); else sent by the edge
    summary: str
    description: str
    data: dict[str, Any] | Any  # a JSON schema, or a proto message descriptor (its proto3 JSON)
    example: dict[str, Any]  # the whole frame
    replies: tuple[str, ...] = ()  # client frames: what answers them
    durable: bool = False  # an event with a resume_token: acknowledge it
    ephemeral: bool = False  # an event without one (typing, presence): dropped first when the queue is full
    envelope: dict[str, Any] = field(default_factory=dict)  # top-level keys beside type and data


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


_STR = {"type": "string"}
_EVENT_ENVELOPE = {
    "event_id": {"type": "string", "description": "Deduplicate by it: a redelivered or replayed event keeps its id."},
    "resume_token": {"type": "string", "description": "Reconnect with the last one you received to resume after it."},
    "conversation_id": {"type": "string", "description": "The event's conversation, when it has one."},
}
_EPHEMERAL_ENVELOPE = {"conversation_id": _EVENT_ENVELOPE["conversation_id"]}
ERRORS = ("error",)
_CALL = _obj(
    ["call_id", "conversation_id", "caller_id", "callee_id", "state"],
    call_id=_STR,
    conversation_id=_STR,
    caller_id=_STR,
    callee_id=_STR,
    state={"type": "string", "enum": ["ringing", "accepted", "ended", "unknown"]},
    end_reason={"type": "string", "enum": ["hangup", "timeout", "busy", "declined", "unknown"]},
    ended_by=_STR,
    created_at={"type": "string", "format": "date-time"},
    answered_at={"type": "string", "format": "date-time"},
    ended_at={"type": "string", "format": "date-time"},
)
_CANDIDATE = _obj(
    ["candidate"],
    candidate={"type": "string", "description": "One `candidate:` line; empty: the end."},
    sdp_mid=_STR,
    sdp_mline_index={"type": "integer", "minimum": 0},
    username_fragment=_STR,
)
_SDP = {"type": "string", "description": "A session description (starts with v=0; at most 16 KiB)."}
_CALL_ERRORS = (
    "Errors: INVALID_ARGUMENT (malformed data), INVALID_CALL_ID, CALL_NOT_FOUND, NOT_CALL_PARTICIPANT, CALL_ENDED"
)


def _durable(kind: str, summary: str, data: Any, example_data: dict[str, Any], description: str = "") -> Frame:
    ack = (
        "Acknowledge it with `chat:message_delivered` {message_id}."
        if kind == "chat:message_received"
        else "Acknowledge it with `events_ack` {event_ids}."
    )
    return Frame(
        kind,
        False,
        summary,
        f"{description} {ack}".strip(),
        data,
        {
            "type": kind,
            "data": example_data,
            "event_id": f"e-{kind.split(':')[-1]}",
            "resume_token": RESUME_TOKEN,
            "conversation_id": UUID_EXAMPLE,
        },
        durable=True,
        envelope=_EVENT_ENVELOPE,
    )


_MESSAGE = {
    "message_id": MESSAGE_ID,
    "conversation_id": UUID_EXAMPLE,
    "seq": "42",
    "sender_id": "alice",
    "content": "hi",
    "created_at": "2026-01-15T09:30:00Z",
    "status": "MESSAGE_STATUS_SENT",
}
_RECEIPT = {"conversation_id": UUID_EXAMPLE, "user_id": "bob", "message_id": MESSAGE_ID, "seq": "42"}
_REACTION = {"conversation_id": UUID_EXAMPLE, "message_id": MESSAGE_ID, "user_id": "bob", "emoji": "👍"}
_CONVERSATION = {
    "conversation": {
        "conversation_id": UUID_EXAMPLE,
        "type": "CONVERSATION_TYPE_GROUP",
        "title": "Weekend plans",
        "created_by": "alice",
    },
    "actor_id": "alice",
}
_MEMBERSHIP = {
    "conversation:created": "A conversation the user takes part in was created (or a direct request reached them).",
    "conversation:accepted": "A direct conversation request was accepted.",
    "conversation:declined": "A direct conversation request was declined.",
    "conversation:blocked": "A participant blocked the other in a direct conversation.",
    "conversation:participant_added": "Someone joined a group (`user_id`, `role`).",
    "conversation:participant_removed": "Someone left or was removed from a group (`user_id`).",
    "conversation:role_changed": "A participant's role changed (`user_id`, `role`).",
    "conversation:updated": "An admin renamed a group or changed its description (`title`, `description`).",
    "conversation:archived": "An admin archived a group (read-only: writes answer CONVERSATION_ARCHIVED).",
    "conversation:unarchived": "An admin unarchived a group (writable again).",
    "conversation:closed": "The last admin closed a group (everyone left it, and it is inactive).",
}

FRAMES: tuple[Frame, ...] = (
    # client -> edge
    Frame(
        "auth",
        True,
        "Authenticate the socket, or renew its token",
        "The first frame, unless the upgrade carried `Authorization: Bearer`; answered with `ready`, or "
        "an `error` (UNAUTHENTICATED) and close 1008. `resume_token`: the last one received, to resume "
        "after it. Later, with an `id`, it replaces the token (same user) before it expires: `ack` "
        "{expires_at}.",
        _obj(
            ["token"],
            token={"type": "string", "description": "A user's JWT."},
            resume_token={"type": "string", "description": "The last resume_token received."},
        ),
        {"type": "auth", "data": {"token": "<JWT>"}},
        replies=("ready", "ack", *ERRORS),
    ),
    Frame(
        "ping",
        True,
        "Check the socket is alive",
        "Answered with `pong` carrying the same id.",
        _obj([]),
        {"type": "ping", "id": "p1", "data": {}},
        replies=("pong", *ERRORS),
    ),
    Frame(
        "chat:message_send",
        True,
        "Send a message",
        "As POST /api/messages. Answered in the order sent, one at a time, with `ack` {message, created} "
        "once the message is stored. Resend with the same `client_message_id` after a retryable error "
        "or a lost socket: it is stored once.",
        message_pb2.SendMessageRequest.DESCRIPTOR,
        {
            "type": "chat:message_send",
            "id": "1",
            "data": {"conversation_id": UUID_EXAMPLE, "content": "hi", "client_message_id": "c-1f6e"},
        },
        replies=("ack", *ERRORS),
    ),
    Frame(
        "chat:message_delivered",
        True,
        "Acknowledge a message",
        "Acknowledges the `chat:message_received` event of `message_id` (it is not pushed again) and "
        "moves the user's delivered position, so the message is not in the next offline buffer and the "
        "sender's tick turns to delivered. `ack` {} when the frame has an id.",
        _obj(["message_id"], message_id={"type": "string", "format": "uuid"}),
        {"type": "chat:message_delivered", "id": "2", "data": {"message_id": MESSAGE_ID}},
        replies=("ack", *ERRORS),
    ),
    Frame(
        "events_ack",
        True,
        "Acknowledge durable events",
        "Acknowledges events by `event_id` (any durable event; a message's too, without moving the "
        "delivered position). Batch them: ids count against CHAT_WS_RATE_ACKS. `ack` {} with an id.",
        _obj(["event_ids"], event_ids={"type": "array", "items": _STR}),
        {"type": "events_ack", "id": "3", "data": {"event_ids": ["e-message_read"]}},
        replies=("ack", *ERRORS),
    ),
    Frame(
        "chat:typing",
        True,
        "Say the user is typing, or stopped",
        "Contacts in the conversation get `chat:user_typing`. `ack` {} with an id.",
        _obj(
            ["conversation_id", "is_typing"],
            conversation_id={"type": "string", "format": "uuid"},
            is_typing={"type": "boolean"},
        ),
        {"type": "chat:typing", "id": "4", "data": {"conversation_id": UUID_EXAMPLE, "is_typing": True}},
        replies=("ack", *ERRORS),
    ),
    Frame(
        "presence:online",
        True,
        "Show the user online",
        "Explicit presence (clears invisible mode). At most one toggle per user per interval goes on, "
        "the last wins; `ack` {presence} with an id.",
        _obj([]),
        {"type": "presence:online", "id": "5", "data": {}},
        replies=("ack", *ERRORS),
    ),
    Frame(
        "presence:offline",
        True,
        "Show the user offline (invisible)",
        "As presence:online, the other way.",
        _obj([]),
        {"type": "presence:offline", "id": "6", "data": {}},
        replies=("ack", *ERRORS),
    ),
    # call signaling (call_frames.py; the rules in services/presence/calls.py): the others hear of it in call:* events
    Frame(
        "call:invite",
        True,
        "Call someone in a conversation",
        "Rings the callee with an SDP offer (`callee_id` may be left out in a direct conversation). `ack` "
        "{call}: ringing, or ended with end_reason `busy` when the callee is in a call already. Errors: "
        "SDP_TOO_LARGE, INVALID_SDP, CALLEE_REQUIRED, CANNOT_CALL_SELF, CALLEE_NOT_PARTICIPANT, ALREADY_IN_CALL "
        "(hang up first), RATE_LIMITED, and the conversation's own (NOT_PARTICIPANT, CONVERSATION_ARCHIVED, "
        "BLOCKED, ...).",
        _obj(
            ["conversation_id", "sdp"],
            conversation_id={"type": "string", "format": "uuid"},
            callee_id={"type": "string", "description": "Needed in a group."},
            sdp=_SDP,
        ),
        {
            "type": "call:invite",
            "id": "7",
            "data": {"conversation_id": UUID_EXAMPLE, "sdp": "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"},
        },
        replies=("ack", *ERRORS),
    ),
    Frame(
        "call:answer",
        True,
        "Accept a ringing call",
        "The callee's SDP answer. `ack` {call} (accepted); the caller gets `call:accepted` with the answer, "
        f"the callee's other devices stop ringing. {_CALL_ERRORS}, NOT_CALLEE, CALL_ALREADY_ANSWERED, "
        "SDP_TOO_LARGE, INVALID_SDP.",
        _obj(["call_id", "sdp"], call_id=_STR, sdp=_SDP),
        {
            "type": "call:answer",
            "id": "8",
            "data": {"call_id": CALL_ID, "sdp": "v=0\r\no=- 7302 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"},
        },
        replies=("ack", *ERRORS),
    ),
    Frame(
        "call:ice",
        True,
        "Relay an ICE candidate to the other party",
        "RTCIceCandidate.toJSON()'s camelCase names are taken too. `ack` {}; the other party gets "
        f"`call:candidate`. {_CALL_ERRORS}, CANDIDATE_TOO_LARGE, INVALID_CANDIDATE.",
        _obj(["call_id", "candidate"], call_id=_STR, candidate=_CANDIDATE),
        {
            "type": "call:ice",
            "id": "9",
            "data": {
                "call_id": CALL_ID,
                "candidate": {
                    "candidate": "candidate:1 1 udp 2122260223 192.0.2.7 54400 typ host",
                    "sdp_mid": "0",
                    "sdp_mline_index": 0,
                },
            },
        },
        replies=("ack", *ERRORS),
    ),
    Frame(
        "call:hangup",
        True,
        "End a call",
        "Either party, in any state (the callee hanging up a ringing call declines it). `ack` {call} "
        "(ended); both parties get `call:ended`. Errors: INVALID_ARGUMENT, INVALID_CALL_ID, CALL_NOT_FOUND, "
        "NOT_CALL_PARTICIPANT.",
        _obj(["call_id"], call_id=_STR),
        {"type": "call:hangup", "id": "10", "data": {"call_id": CALL_ID}},
        replies=("ack", *ERRORS),
    ),
    # edge -> client: replies and the socket's own
    Frame(
        "ready",
        False,
        "The socket is authenticated",
        "Events start after it: first what the resume token had not reached (or, without a token, the "
        "offline buffer: messages past the delivered position), then live.",
        _obj(["user_id"], user_id=_STR),
        {"type": "ready", "data": {"user_id": "bob"}},
    ),
    Frame(
        "ack",
        False,
        "A request succeeded",
        "Carries the request's `id`. `data`: for chat:message_send the stored message and `created`; "
        "for presence toggles the presence; for auth `expires_at`; for call:invite, call:answer and "
        "call:hangup the call; otherwise {}.",
        {
            "anyOf": [
                message_pb2.SendMessageResponse.DESCRIPTOR,
                presence_pb2.SetPresenceResponse.DESCRIPTOR,
                _obj(["call"], call=_CALL),
                _obj(["expires_at"], expires_at={"type": "integer"}),
                _obj([]),
            ]
        },
        {"type": "ack", "id": "1", "data": {"message": _MESSAGE, "created": True}},
        envelope={"id": {"description": "The id of the frame answered."}},
    ),
    Frame(
        "error",
        False,
        "A request, or the socket, failed",
        "`id`: the frame answered (null: the socket itself, or a frame without an id). `code` is "
        "machine-readable: the edge's own (see `x-error-codes`) or a service's (NOT_PARTICIPANT, "
        "CONVERSATION_NOT_FOUND, CONVERSATION_ARCHIVED, a call frame's: see each). `retryable`: send the "
        "same frame again (after `retry_after` seconds when given).",
        _obj(
            ["code", "message"],
            code=_STR,
            message=_STR,
            retryable={"type": "boolean"},
            retry_after={"type": "number", "description": "Seconds until the same frame would pass."},
        ),
        {
            "type": "error",
            "id": "1",
            "data": {
                "code": "RATE_LIMITED",
                "message": "too many messages; slow down",
                "retry_after": 1.5,
                "retryable": True,
            },
        },
        envelope={"id": {"description": "The id of the frame answered, or null."}},
    ),
    Frame(
        "pong",
        False,
        "The answer to ping",
        "Carries the ping's id.",
        _obj([]),
        {"type": "pong", "id": "p1"},
        envelope={"id": {"description": "The ping's id."}},
    ),
    Frame(
        "token_expiring",
        False,
        "The token expires soon",
        "Sent 60 s before the token's `exp`: send `auth` with a new token (same user) or the socket closes "
        "with 4001 at `expires_at`.",
        _obj(["expires_at"], expires_at={"type": "integer", "description": "Unix seconds."}),
        {"type": "token_expiring", "data": {"expires_at": 1767000000}},
    ),
    Frame(
        "resync_required",
        False,
        "The resume token cannot be used",
        "Too old (the inbox was trimmed), malformed, or from before Redis lost its data (`reason`: "
        "token_expired, token_invalid, epoch_changed). The offline buffer follows; fetch older history "
        "over REST. Needs no acknowledgement.",
        common_pb2.ResyncRequired.DESCRIPTOR,
        {"type": "resync_required", "data": {"reason": "token_expired"}},
    ),
    # edge -> client: durable events
    _durable(
        "chat:message_received",
        "A new message",
        common_pb2.Message.DESCRIPTOR,
        _MESSAGE,
        "Also the user's own messages (other devices). Its event_id is `received:<message_id>` however it arrives.",
    ),
    _durable(
        "chat:message_updated",
        "A message was edited",
        common_pb2.Message.DESCRIPTOR,
        {**_MESSAGE, "content": "hi!", "edited_at": "2026-01-15T09:31:00Z"},
    ),
    _durable(
        "chat:message_deleted",
        "A message was deleted",
        common_pb2.Message.DESCRIPTOR,
        {**_MESSAGE, "content": "", "deleted": True},
    ),
    _durable(
        "chat:message_delivered",
        "A recipient received messages up to this one",
        common_pb2.ReceiptEvent.DESCRIPTOR,
        {**_RECEIPT, "status": "MESSAGE_STATUS_DELIVERED"},
    ),
    _durable(
        "chat:message_read",
        "A recipient read messages up to this one",
        common_pb2.ReceiptEvent.DESCRIPTOR,
        {**_RECEIPT, "status": "MESSAGE_STATUS_READ"},
    ),
    _durable("chat:reaction_added", "A reaction was added", common_pb2.ReactionEvent.DESCRIPTOR, _REACTION),
    _durable("chat:reaction_removed", "A reaction was taken back", common_pb2.ReactionEvent.DESCRIPTOR, _REACTION),
    *(
        _durable(
            kind, text.split(" (")[0].removesuffix("."), common_pb2.ConversationEvent.DESCRIPTOR, _CONVERSATION, text
        )
        for kind, text in _MEMBERSHIP.items()
    ),
    _durable(
        "conversation:preferences_changed",
        "The user muted, unmuted, pinned or unpinned a conversation",
        common_pb2.ConversationEvent.DESCRIPTOR,
        {"user_id": "bob", "actor_id": "bob", "preferences": {"muted": True}},
        "To the user's own sockets only; no `conversation`, but `preferences` as they now stand "
        "(a false flag is left out, so `{}` means neither).",
    ),
    # edge -> client: ephemeral events
    Frame(
        "chat:user_typing",
        False,
        "Someone is typing in a conversation, or stopped",
        "Ephemeral: no resume token, not replayed, dropped first when the socket's queue is full.",
        _obj(
            ["conversation_id", "user_id", "is_typing"],
            conversation_id=_STR,
            user_id=_STR,
            is_typing={"type": "boolean"},
        ),
        {
            "type": "chat:user_typing",
            "conversation_id": UUID_EXAMPLE,
            "data": {"conversation_id": UUID_EXAMPLE, "user_id": "alice", "is_typing": True},
        },
        ephemeral=True,
        envelope=_EPHEMERAL_ENVELOPE,
    ),
    Frame(
        "user:status_changed",
        False,
        "A contact came online or went offline",
        "Ephemeral, as chat:user_typing. `last_seen_at` only when the contact shows it.",
        _obj(
            ["user_id", "status"],
            user_id=_STR,
            status={"type": "string", "enum": ["online", "offline", "unknown"]},
            last_seen_at={"type": "string", "format": "date-time"},
        ),
        {
            "type": "user:status_changed",
            "data": {"user_id": "alice", "status": "offline", "last_seen_at": "2026-01-15T09:30:00Z"},
        },
        ephemeral=True,
    ),
    Frame(
        "chat:thread_updated",
        False,
        "A thread's reply count changed",
        "Right after a reply's chat:message_received or chat:message_deleted: the root's live `reply_count` "
        "and `last_reply_at` (absent when no reply is left), and the reply. Ephemeral: the count is absolute, "
        "so the last wins; read the thread (ListThread) to catch up.",
        common_pb2.ThreadUpdate.DESCRIPTOR,
        {
            "type": "chat:thread_updated",
            "conversation_id": UUID_EXAMPLE,
            "data": {
                "root_message_id": MESSAGE_ID,
                "reply_count": 3,
                "last_reply_at": "2026-01-15T09:32:00Z",
                "reply": {
                    **_MESSAGE,
                    "message_id": "0b7e4c21-5d9a-4f36-9e1b-2c8a7d6f5e43",
                    "seq": "45",
                    "reply_to_id": MESSAGE_ID,
                    "created_at": "2026-01-15T09:32:00Z",
                },
            },
        },
        ephemeral=True,
        envelope=_EPHEMERAL_ENVELOPE,
    ),
    Frame(
        "call:incoming",
        False,
        "Someone is calling",
        "To the callee's sockets: the ringing `call`, the caller's SDP offer and `from_user_id`. Answer with "
        "call:answer, decline with call:hangup; it rings out after CHAT_CALL_RING_TIMEOUT_S (call:ended `timeout`).",
        _obj(["call", "sdp", "from_user_id"], call=_CALL, sdp=_SDP, from_user_id=_STR),
        {
            "type": "call:incoming",
            "conversation_id": UUID_EXAMPLE,
            "data": {
                "call": {
                    "call_id": CALL_ID,
                    "conversation_id": UUID_EXAMPLE,
                    "caller_id": "alice",
                    "callee_id": "bob",
                    "state": "ringing",
                    "created_at": "2026-01-15T09:30:00Z",
                },
                "sdp": "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
                "from_user_id": "alice",
            },
        },
        ephemeral=True,
        envelope=_EPHEMERAL_ENVELOPE,
    ),
    Frame(
        "call:accepted",
        False,
        "The call was answered",
        "To the caller with the callee's SDP answer (`sdp`), and to the callee's sockets without it (the "
        "device that answered has it; the others stop ringing).",
        _obj(["call"], call=_CALL, sdp=_SDP, from_user_id=_STR),
        {
            "type": "call:accepted",
            "conversation_id": UUID_EXAMPLE,
            "data": {
                "call": {
                    "call_id": CALL_ID,
                    "conversation_id": UUID_EXAMPLE,
                    "caller_id": "alice",
                    "callee_id": "bob",
                    "state": "accepted",
                    "created_at": "2026-01-15T09:30:00Z",
                    "answered_at": "2026-01-15T09:30:04Z",
                },
                "sdp": "v=0\r\no=- 7302 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
                "from_user_id": "bob",
            },
        },
        ephemeral=True,
        envelope=_EPHEMERAL_ENVELOPE,
    ),
    Frame(
        "call:candidate",
        False,
        "The other party's ICE candidate",
        "Add it to the peer connection (`addIceCandidate`).",
        _obj(["call", "candidate", "from_user_id"], call=_CALL, candidate=_CANDIDATE, from_user_id=_STR),
        {
            "type": "call:candidate",
            "conversation_id": UUID_EXAMPLE,
            "data": {
                "call": {
                    "call_id": CALL_ID,
                    "conversation_id": UUID_EXAMPLE,
                    "caller_id": "alice",
                    "callee_id": "bob",
                    "state": "accepted",
                },
                "candidate": {
                    "candidate": "candidate:1 1 udp 2122260223 192.0.2.7 54400 typ host",
                    "sdp_mid": "0",
                    "sdp_mline_index": 0,
                    "username_fragment": "",
                },
                "from_user_id": "alice",
            },
        },
        ephemeral=True,
        envelope=_EPHEMERAL_ENVELOPE,
    ),
    Frame(
        "call:ended",
        False,
        "The call ended",
        "To both parties: `call.end_reason` is `hangup` (`ended_by` who), `declined` or `timeout` (it rang "
        "out). (A `busy` call ends at once: only the caller's ack says so.)",
        _obj(["call"], call=_CALL, from_user_id=_STR),
        {
            "type": "call:ended",
            "conversation_id": UUID_EXAMPLE,
            "data": {
                "call": {
                    "call_id": CALL_ID,
                    "conversation_id": UUID_EXAMPLE,
                    "caller_id": "alice",
                    "callee_id": "bob",
                    "state": "ended",
                    "end_reason": "hangup",
                    "ended_by": "bob",
                    "ended_at": "2026-01-15T09:41:00Z",
                },
                "from_user_id": "bob",
            },
        },
        ephemeral=True,
        envelope=_EPHEMERAL_ENVELOPE,
    ),
)

# Error codes the edge itself sends in error frames (services add their own: NOT_PARTICIPANT, ...).
EDGE_ERROR_CODES: dict[str, str] = {
    "UNAUTHENTICATED": "A bad, expired or missing token (on the first frame: then close 1008).",
    "TOKEN_EXPIRED": "The token expired without a renewal: close 4001 follows.",
    "TOO_MANY_SOCKETS": "The user holds CHAT_WS_MAX_SOCKETS sockets already: close 1008 follows.",
    "UNAVAILABLE": "An upstream is away: retryable (at connect: close 1013, reconnect with backoff).",
    "DEADLINE_EXCEEDED": "An upstream was too slow: retryable.",
    "RATE_LIMITED": "Over a limit (frames per second, sends, a frame kind's budget): retryable after `retry_after`.",
    "FRAME_TOO_LARGE": "Over CHAT_WS_MAX_FRAME_BYTES (16 times that: close 1009).",
    "JSON_TOO_DEEP": "JSON nested deeper than 32 levels.",
    "BAD_FRAME": "Not a JSON object with a string `type`, or `data` not an object.",
    "UNKNOWN_TYPE": "A frame type the edge does not know.",
    "INVALID_ARGUMENT": "A frame's data does not fit its type (a missing message_id, a malformed send).",
}

# Close codes: what each means and what a client does.
CLOSE_CODES: dict[int, str] = {
    1000: "Normal close.",
    1008: "Policy: authentication failed, too many sockets, or frames flooding past four times the limit. "
    "Do not reconnect with the same token.",
    1009: "A frame over 16 times CHAT_WS_MAX_FRAME_BYTES.",
    1011: "No answer to the edge's keepalive ping within one ping interval (20 s): reconnect with your resume token.",
    1012: "The edge is restarting: reconnect (jittered backoff) with your resume token.",
    1013: "An upstream is unavailable at connect: reconnect with backoff.",
    4001: "The token expired: reconnect with a new one (and the resume token).",
    4008: "Too slow: the client read slower than its events came. Reconnect with the last resume_token; "
    "the inbox holds the rest.",
}
