import datetime

from chatmesh.gen.chat.v1 import call_pb2 as _call_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConversationType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONVERSATION_TYPE_UNSPECIFIED: _ClassVar[ConversationType]
    CONVERSATION_TYPE_DIRECT: _ClassVar[ConversationType]
    CONVERSATION_TYPE_GROUP: _ClassVar[ConversationType]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_MEMBER: _ClassVar[Role]
    ROLE_MODERATOR: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]

class MessageStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_STATUS_UNSPECIFIED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_SENT: _ClassVar[MessageStatus]
    MESSAGE_STATUS_DELIVERED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_READ: _ClassVar[MessageStatus]

class PresenceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRESENCE_STATUS_UNSPECIFIED: _ClassVar[PresenceStatus]
    PRESENCE_STATUS_ONLINE: _ClassVar[PresenceStatus]
    PRESENCE_STATUS_OFFLINE: _ClassVar[PresenceStatus]
    PRESENCE_STATUS_UNKNOWN: _ClassVar[PresenceStatus]

class RequestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_STATE_UNSPECIFIED: _ClassVar[RequestState]
    REQUEST_STATE_ACCEPTED: _ClassVar[RequestState]
    REQUEST_STATE_PENDING: _ClassVar[RequestState]
    REQUEST_STATE_DECLINED: _ClassVar[RequestState]
    REQUEST_STATE_BLOCKED: _ClassVar[RequestState]

class AttachmentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTACHMENT_STATE_UNSPECIFIED: _ClassVar[AttachmentState]
    ATTACHMENT_STATE_PENDING: _ClassVar[AttachmentState]
    ATTACHMENT_STATE_READY: _ClassVar[AttachmentState]
    ATTACHMENT_STATE_ATTACHED: _ClassVar[AttachmentState]
CONVERSATION_TYPE_UNSPECIFIED: ConversationType
CONVERSATION_TYPE_DIRECT: ConversationType
CONVERSATION_TYPE_GROUP: ConversationType
ROLE_UNSPECIFIED: Role
ROLE_MEMBER: Role
ROLE_MODERATOR: Role
ROLE_ADMIN: Role
MESSAGE_STATUS_UNSPECIFIED: MessageStatus
MESSAGE_STATUS_SENT: MessageStatus
MESSAGE_STATUS_DELIVERED: MessageStatus
MESSAGE_STATUS_READ: MessageStatus
PRESENCE_STATUS_UNSPECIFIED: PresenceStatus
PRESENCE_STATUS_ONLINE: PresenceStatus
PRESENCE_STATUS_OFFLINE: PresenceStatus
PRESENCE_STATUS_UNKNOWN: PresenceStatus
REQUEST_STATE_UNSPECIFIED: RequestState
REQUEST_STATE_ACCEPTED: RequestState
REQUEST_STATE_PENDING: RequestState
REQUEST_STATE_DECLINED: RequestState
REQUEST_STATE_BLOCKED: RequestState
ATTACHMENT_STATE_UNSPECIFIED: AttachmentState
ATTACHMENT_STATE_PENDING: AttachmentState
ATTACHMENT_STATE_READY: AttachmentState
ATTACHMENT_STATE_ATTACHED: AttachmentState

class User(_message.Message):
    __slots__ = ("user_id", "display_name", "created_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    display_name: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Participant(_message.Message):
    __slots__ = ("user_id", "role", "joined_at", "display_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    JOINED_AT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    role: Role
    joined_at: _timestamp_pb2.Timestamp
    display_name: str
    def __init__(self, user_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., joined_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., display_name: _Optional[str] = ...) -> None: ...

class MessagePreview(_message.Message):
    __slots__ = ("message_id", "sender_id", "text", "sent_at", "deleted", "seq")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    sender_id: str
    text: str
    sent_at: _timestamp_pb2.Timestamp
    deleted: bool
    seq: int
    def __init__(self, message_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., text: _Optional[str] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted: _Optional[bool] = ..., seq: _Optional[int] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("conversation_id", "type", "title", "participants", "participant_count", "created_by", "created_at", "last_message_at", "last_message", "unread_count", "active", "request_state", "archived", "description", "muted", "pinned")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UNREAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_STATE_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MUTED_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    type: ConversationType
    title: str
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    participant_count: int
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    last_message_at: _timestamp_pb2.Timestamp
    last_message: MessagePreview
    unread_count: int
    active: bool
    request_state: RequestState
    archived: bool
    description: str
    muted: bool
    pinned: bool
    def __init__(self, conversation_id: _Optional[str] = ..., type: _Optional[_Union[ConversationType, str]] = ..., title: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ..., participant_count: _Optional[int] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_message_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_message: _Optional[_Union[MessagePreview, _Mapping]] = ..., unread_count: _Optional[int] = ..., active: _Optional[bool] = ..., request_state: _Optional[_Union[RequestState, str]] = ..., archived: _Optional[bool] = ..., description: _Optional[str] = ..., muted: _Optional[bool] = ..., pinned: _Optional[bool] = ...) -> None: ...

class Encryption(_message.Message):
    __slots__ = ("algorithm", "key_id")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    key_id: str
    def __init__(self, algorithm: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class ReactionSummary(_message.Message):
    __slots__ = ("emoji", "count", "user_ids")
    EMOJI_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    emoji: str
    count: int
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, emoji: _Optional[str] = ..., count: _Optional[int] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RecipientStatus(_message.Message):
    __slots__ = ("user_id", "status")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    status: MessageStatus
    def __init__(self, user_id: _Optional[str] = ..., status: _Optional[_Union[MessageStatus, str]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("message_id", "conversation_id", "seq", "sender_id", "content", "content_encrypted", "encryption", "client_message_id", "reply_to_id", "created_at", "edited_at", "deleted", "deleted_at", "status", "reactions", "recipients", "attachments", "reply_count", "last_reply_at")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EDITED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REACTIONS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    REPLY_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_REPLY_AT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    conversation_id: str
    seq: int
    sender_id: str
    content: str
    content_encrypted: bytes
    encryption: Encryption
    client_message_id: str
    reply_to_id: str
    created_at: _timestamp_pb2.Timestamp
    edited_at: _timestamp_pb2.Timestamp
    deleted: bool
    deleted_at: _timestamp_pb2.Timestamp
    status: MessageStatus
    reactions: _containers.RepeatedCompositeFieldContainer[ReactionSummary]
    recipients: _containers.RepeatedCompositeFieldContainer[RecipientStatus]
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    reply_count: int
    last_reply_at: _timestamp_pb2.Timestamp
    def __init__(self, message_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., seq: _Optional[int] = ..., sender_id: _Optional[str] = ..., content: _Optional[str] = ..., content_encrypted: _Optional[bytes] = ..., encryption: _Optional[_Union[Encryption, _Mapping]] = ..., client_message_id: _Optional[str] = ..., reply_to_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., edited_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted: _Optional[bool] = ..., deleted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[MessageStatus, str]] = ..., reactions: _Optional[_Iterable[_Union[ReactionSummary, _Mapping]]] = ..., recipients: _Optional[_Iterable[_Union[RecipientStatus, _Mapping]]] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., reply_count: _Optional[int] = ..., last_reply_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Attachment(_message.Message):
    __slots__ = ("attachment_id", "conversation_id", "uploader_id", "filename", "content_type", "size_bytes", "sha256", "width", "height", "duration_ms", "has_thumbnail", "state", "created_at", "download_url", "thumbnail_url", "urls_expire_at")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    UPLOADER_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    HAS_THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_URL_FIELD_NUMBER: _ClassVar[int]
    URLS_EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    attachment_id: str
    conversation_id: str
    uploader_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    width: int
    height: int
    duration_ms: int
    has_thumbnail: bool
    state: AttachmentState
    created_at: _timestamp_pb2.Timestamp
    download_url: str
    thumbnail_url: str
    urls_expire_at: _timestamp_pb2.Timestamp
    def __init__(self, attachment_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., uploader_id: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., duration_ms: _Optional[int] = ..., has_thumbnail: _Optional[bool] = ..., state: _Optional[_Union[AttachmentState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., download_url: _Optional[str] = ..., thumbnail_url: _Optional[str] = ..., urls_expire_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("entry_id", "conversation_id", "actor_id", "action", "target", "request_id", "created_at", "service")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    conversation_id: str
    actor_id: str
    action: str
    target: str
    request_id: str
    created_at: _timestamp_pb2.Timestamp
    service: str
    def __init__(self, entry_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., actor_id: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., request_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., service: _Optional[str] = ...) -> None: ...

class ReceiptEvent(_message.Message):
    __slots__ = ("conversation_id", "user_id", "message_id", "seq", "status")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    user_id: str
    message_id: str
    seq: int
    status: MessageStatus
    def __init__(self, conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., message_id: _Optional[str] = ..., seq: _Optional[int] = ..., status: _Optional[_Union[MessageStatus, str]] = ...) -> None: ...

class ReactionEvent(_message.Message):
    __slots__ = ("conversation_id", "message_id", "user_id", "emoji")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMOJI_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    message_id: str
    user_id: str
    emoji: str
    def __init__(self, conversation_id: _Optional[str] = ..., message_id: _Optional[str] = ..., user_id: _Optional[str] = ..., emoji: _Optional[str] = ...) -> None: ...

class ConversationEvent(_message.Message):
    __slots__ = ("conversation", "user_id", "role", "actor_id", "preferences")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    user_id: str
    role: Role
    actor_id: str
    preferences: ConversationPreferences
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ..., user_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., actor_id: _Optional[str] = ..., preferences: _Optional[_Union[ConversationPreferences, _Mapping]] = ...) -> None: ...

class ConversationPreferences(_message.Message):
    __slots__ = ("muted", "pinned")
    MUTED_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    muted: bool
    pinned: bool
    def __init__(self, muted: _Optional[bool] = ..., pinned: _Optional[bool] = ...) -> None: ...

class TypingEvent(_message.Message):
    __slots__ = ("conversation_id", "user_id", "is_typing")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    IS_TYPING_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    user_id: str
    is_typing: bool
    def __init__(self, conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., is_typing: _Optional[bool] = ...) -> None: ...

class PresenceEvent(_message.Message):
    __slots__ = ("user_id", "status", "last_seen_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    status: PresenceStatus
    last_seen_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., status: _Optional[_Union[PresenceStatus, str]] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResyncRequired(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "type", "resume_token", "created_at", "conversation_id", "thread", "message", "receipt", "reaction", "conversation", "typing", "presence", "resync", "call")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    REACTION_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    resume_token: str
    created_at: _timestamp_pb2.Timestamp
    conversation_id: str
    thread: ThreadUpdate
    message: Message
    receipt: ReceiptEvent
    reaction: ReactionEvent
    conversation: ConversationEvent
    typing: TypingEvent
    presence: PresenceEvent
    resync: ResyncRequired
    call: _call_pb2.CallEvent
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., resume_token: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., conversation_id: _Optional[str] = ..., thread: _Optional[_Union[ThreadUpdate, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., receipt: _Optional[_Union[ReceiptEvent, _Mapping]] = ..., reaction: _Optional[_Union[ReactionEvent, _Mapping]] = ..., conversation: _Optional[_Union[ConversationEvent, _Mapping]] = ..., typing: _Optional[_Union[TypingEvent, _Mapping]] = ..., presence: _Optional[_Union[PresenceEvent, _Mapping]] = ..., resync: _Optional[_Union[ResyncRequired, _Mapping]] = ..., call: _Optional[_Union[_call_pb2.CallEvent, _Mapping]] = ...) -> None: ...

class ThreadUpdate(_message.Message):
    __slots__ = ("root_message_id", "reply_count", "last_reply_at", "reply")
    ROOT_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_REPLY_AT_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    root_message_id: str
    reply_count: int
    last_reply_at: _timestamp_pb2.Timestamp
    reply: Message
    def __init__(self, root_message_id: _Optional[str] = ..., reply_count: _Optional[int] = ..., last_reply_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reply: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class UserEvents(_message.Message):
    __slots__ = ("user_id", "events")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, user_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...
