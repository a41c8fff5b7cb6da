"""The client's typed view of the edge's JSON: conversations, messages and events (dataclasses).

The edge renders protobuf as JSON with snake_case names, int64 as strings and enums by name
(`MESSAGE_STATUS_READ`); these helpers turn that into plain Python values (ints, short lowercase
names such as `read`) so callers never parse wire strings themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatmesh_client.attachments import Attachment

STATUS_ORDER = ("pending", "sent", "delivered", "read")


def _enum(value: Any, prefix: str, default: str = "") -> str:
    """`MESSAGE_STATUS_READ` -> `read` (numbers and unknown names kept as given, lowercased)."""
    if not value:
        return default
    text = str(value)
    return text[len(prefix) :].lower() if text.startswith(prefix) else text.lower()


def _int(value: Any) -> int:
    return int(value or 0)


@dataclass
class Reaction:
    emoji: str
    count: int
    user_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reaction:
        return cls(data.get("emoji", ""), _int(data.get("count")), list(data.get("user_ids") or []))


@dataclass
class Message:
    """A message as the caller sees it. A pending (optimistic) one has no `message_id` and `seq` 0 yet,
    only its `client_message_id`; `status` is `pending`, `sent`, `delivered` or `read` (for the sender,
    the least advanced recipient)."""

    message_id: str
    conversation_id: str
    seq: int
    sender_id: str
    content: str
    client_message_id: str = ""
    reply_to_id: str = ""
    created_at: str = ""
    edited_at: str = ""
    deleted: bool = False
    status: str = "sent"
    reactions: list[Reaction] = field(default_factory=list)
    recipients: dict[str, str] = field(default_factory=dict)  # user id -> status (sender's view)
    attachments: list[Attachment] = field(default_factory=list)  # metadata; links come from attachments.get
    reply_count: int = 0  # its thread: live replies, and when the latest was sent
    last_reply_at: str = ""

    @property
    def pending(self) -> bool:
        return not self.message_id

    @property
    def key(self) -> str:
        """The id the store files it under: the server's id, or the temporary one while pending."""
        return self.message_id or f"pending:{self.client_message_id}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            message_id=data.get("message_id", ""),
            conversation_id=data.get("conversation_id", ""),
            seq=_int(data.get("seq")),
            sender_id=data.get("sender_id", ""),
            content=data.get("content", ""),
            client_message_id=data.get("client_message_id", ""),
            reply_to_id=data.get("reply_to_id", ""),
            created_at=data.get("created_at", ""),
            edited_at=data.get("edited_at", ""),
            deleted=bool(data.get("deleted")),
            status=_enum(data.get("status"), "MESSAGE_STATUS_", "sent"),
            reactions=[Reaction.from_json(r) for r in data.get("reactions") or []],
            recipients={
                r.get("user_id", ""): _enum(r.get("status"), "MESSAGE_STATUS_", "sent")
                for r in data.get("recipients") or []
            },
            attachments=[Attachment.from_json(a) for a in data.get("attachments") or []],
            reply_count=_int(data.get("reply_count")),
            last_reply_at=data.get("last_reply_at", ""),
        )


@dataclass
class Participant:
    user_id: str
    role: str = "member"
    display_name: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Participant:
        return cls(data.get("user_id", ""), _enum(data.get("role"), "ROLE_", "member"), data.get("display_name", ""))


@dataclass
class Preview:
    message_id: str
    sender_id: str
    text: str
    seq: int
    sent_at: str = ""
    deleted: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preview:
        return cls(
            data.get("message_id", ""),
            data.get("sender_id", ""),
            data.get("text", ""),
            _int(data.get("seq")),
            data.get("sent_at", ""),
            bool(data.get("deleted")),
        )


@dataclass
class Conversation:
    conversation_id: str
    type: str  # direct | group
    title: str = ""
    participants: list[Participant] = field(default_factory=list)
    participant_count: int = 0
    created_by: str = ""
    last_message: Preview | None = None
    last_message_at: str = ""
    unread_count: int = 0
    active: bool = True
    # Direct conversations: accepted | pending (a request) | declined | blocked; "" for groups.
    request_state: str = ""
    archived: bool = False  # read-only: sends, reactions and edits fail with CONVERSATION_ARCHIVED
    description: str = ""
    muted: bool = False  # the caller's own; events every participant receives leave them out
    pinned: bool = False

    def is_request_to(self, user_id: str) -> bool:
        """A pending request this user received (offer Accept / Decline / Block). The requester is
        `created_by`; they see none of the recipient's presence until the recipient replies or accepts."""
        return self.request_state == "pending" and self.created_by != user_id

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        last = data.get("last_message")
        return cls(
            conversation_id=data.get("conversation_id", ""),
            type=_enum(data.get("type"), "CONVERSATION_TYPE_", "direct"),
            title=data.get("title", ""),
            participants=[Participant.from_json(p) for p in data.get("participants") or []],
            participant_count=_int(data.get("participant_count")),
            created_by=data.get("created_by", ""),
            last_message=Preview.from_json(last) if last else None,
            last_message_at=data.get("last_message_at", ""),
            unread_count=_int(data.get("unread_count")),
            active=bool(data.get("active")),  # proto3 JSON leaves false out of event frames
            request_state=_enum(data.get("request_state"), "REQUEST_STATE_"),
            archived=bool(data.get("archived")),
            description=data.get("description", ""),
            muted=bool(data.get("muted")),
            pinned=bool(data.get("pinned")),
        )


@dataclass
class UserSettings:
    """The caller's privacy settings."""

    hide_last_seen: bool = False  # contacts see online / offline, never when last seen

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserSettings:
        return cls(hide_last_seen=bool(data.get("hide_last_seen")))


@dataclass
class Presence:
    user_id: str
    status: str  # online | offline | unknown
    last_seen_at: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Presence:
        return cls(
            data.get("user_id", ""),
            _enum(data.get("status"), "PRESENCE_STATUS_", "unknown"),
            data.get("last_seen_at", ""),
        )


# Events ------------------------------------------------------------------------------------------


@dataclass
class Event:
    """Any event. `durable` ones (messages, receipts, reactions, membership) are seen exactly once and
    in order; ephemeral ones (typing, presence, connection state) may be missed across a reconnect."""

    type: str
    conversation_id: str = ""
    event_id: str = ""
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def durable(self) -> bool:
        return bool(self.event_id)


@dataclass
class MessageEvent(Event):
    """`chat:message_received`, `chat:message_updated`, `chat:message_deleted`. `recovered` is true for
    messages fetched over REST after a `resync_required` rather than pushed on the socket."""

    message: Message = field(default_factory=lambda: Message("", "", 0, "", ""))
    recovered: bool = False


@dataclass
class ReceiptEvent(Event):
    """`chat:message_delivered` / `chat:message_read`: `user_id` has reached `seq` in the conversation."""

    user_id: str = ""
    message_id: str = ""
    seq: int = 0
    status: str = ""


@dataclass
class ReactionEvent(Event):
    """`chat:reaction_added` / `chat:reaction_removed`."""

    message_id: str = ""
    user_id: str = ""
    emoji: str = ""

    @property
    def added(self) -> bool:
        return self.type == "chat:reaction_added"


@dataclass
class ConversationEvent(Event):
    """`conversation:created`, `conversation:participant_added`, `..._removed`, `conversation:role_changed`,
    `conversation:updated`, `:archived`, `:unarchived`, `:closed`; `conversation:preferences_changed`
    (the user's own devices only) has no conversation but `preferences`: {"muted": bool, "pinned": bool}."""

    conversation: Conversation | None = None
    user_id: str = ""
    role: str = ""
    actor_id: str = ""
    preferences: dict[str, bool] | None = None


@dataclass
class TypingEvent(Event):
    user_id: str = ""
    is_typing: bool = False


@dataclass
class PresenceEvent(Event):
    user_id: str = ""
    status: str = ""
    last_seen_at: str = ""


@dataclass
class ThreadEvent(Event):
    """`chat:thread_updated` (ephemeral): a reply to `root_message_id` was sent or deleted; the thread
    now has `reply_count` live replies, the latest sent at `last_reply_at` ("" when none is left)."""

    root_message_id: str = ""
    reply_count: int = 0
    last_reply_at: str = ""
    reply: Message | None = None


@dataclass
class ResyncEvent(Event):
    """The server could not replay from the resume token (`reason`); the client fetched the missing
    messages over REST and delivers them as `MessageEvent(recovered=True)` right after this one."""

    reason: str = ""


@dataclass
class StateEvent(Event):
    """The connection's state changed: `connecting`, `connected`, `reconnecting`, `closed`."""

    state: str = ""
    attempt: int = 0


@dataclass
class Call:
    """A one-to-one call's signaling state. `state`: ringing | accepted | ended; `end_reason`, once
    ended: hangup | timeout | busy | declined. Read from socket frames (lowercase) or REST (enum names)."""

    call_id: str
    conversation_id: str
    caller_id: str
    callee_id: str
    state: str
    end_reason: str = ""
    ended_by: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Call:
        return cls(
            data.get("call_id", ""),
            data.get("conversation_id", ""),
            data.get("caller_id", ""),
            data.get("callee_id", ""),
            _enum(data.get("state"), "CALL_STATE_"),
            _enum(data.get("end_reason"), "CALL_END_REASON_").replace("unspecified", ""),
            data.get("ended_by", ""),
        )


@dataclass
class CallEvent(Event):
    """`call:incoming` (with the caller's offer in `sdp`), `call:accepted` (the caller's with the
    answer in `sdp`), `call:candidate` (an ICE `candidate`: candidate, sdp_mid, sdp_mline_index,
    username_fragment), `call:ended`. Ephemeral: a party that was not connected misses them."""

    call: Call = field(default_factory=lambda: Call("", "", "", "", ""))
    sdp: str = ""
    candidate: dict[str, Any] | None = None
    from_user_id: str = ""


def event_from_frame(frame: dict[str, Any]) -> Event:
    kind = str(frame.get("type", ""))
    data = frame.get("data") or {}
    base: dict[str, Any] = {
        "type": kind,
        "conversation_id": frame.get("conversation_id", "") or data.get("conversation_id", ""),
        "event_id": frame.get("event_id", "") if frame.get("resume_token") else "",
        "data": data,
    }
    if kind in ("chat:message_received", "chat:message_updated", "chat:message_deleted"):
        return MessageEvent(**base, message=Message.from_json(data))
    if kind in ("chat:message_delivered", "chat:message_read"):
        return ReceiptEvent(
            **base,
            user_id=data.get("user_id", ""),
            message_id=data.get("message_id", ""),
            seq=_int(data.get("seq")),
            status=_enum(data.get("status"), "MESSAGE_STATUS_"),
        )
    if kind in ("chat:reaction_added", "chat:reaction_removed"):
        return ReactionEvent(
            **base, message_id=data.get("message_id", ""), user_id=data.get("user_id", ""), emoji=data.get("emoji", "")
        )
    if kind.startswith("conversation:"):
        conversation = data.get("conversation")
        preferences = data.get("preferences")
        return ConversationEvent(
            **base,
            conversation=Conversation.from_json(conversation) if conversation else None,
            user_id=data.get("user_id", ""),
            role=_enum(data.get("role"), "ROLE_"),
            actor_id=data.get("actor_id", ""),
            preferences=None
            if preferences is None
            else {"muted": bool(preferences.get("muted")), "pinned": bool(preferences.get("pinned"))},
        )
    if kind == "chat:user_typing":
        return TypingEvent(**base, user_id=data.get("user_id", ""), is_typing=bool(data.get("is_typing")))
    if kind == "user:status_changed":
        return PresenceEvent(
            **base,
            user_id=data.get("user_id", ""),
            status=str(data.get("status", "")),
            last_seen_at=data.get("last_seen_at", ""),
        )
    if kind.startswith("call:"):
        return CallEvent(
            **base,
            call=Call.from_json(data.get("call") or {}),
            sdp=data.get("sdp", ""),
            candidate=data.get("candidate"),
            from_user_id=data.get("from_user_id", ""),
        )
    if kind == "chat:thread_updated":
        reply = data.get("reply")
        return ThreadEvent(
            **base,
            root_message_id=data.get("root_message_id", ""),
            reply_count=_int(data.get("reply_count")),
            last_reply_at=data.get("last_reply_at", ""),
            reply=Message.from_json(reply) if reply else None,
        )
    if kind == "resync_required":
        return ResyncEvent(**base, reason=data.get("reason", ""))
    return Event(**base)
