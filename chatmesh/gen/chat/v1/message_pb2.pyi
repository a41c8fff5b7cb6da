import datetime

from chatmesh.gen.chat.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SendMessageRequest(_message.Message):
    __slots__ = ("conversation_id", "content", "client_message_id", "reply_to_id", "content_encrypted", "encryption", "attachment_ids")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    content: str
    client_message_id: str
    reply_to_id: str
    content_encrypted: bytes
    encryption: _common_pb2.Encryption
    attachment_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, conversation_id: _Optional[str] = ..., content: _Optional[str] = ..., client_message_id: _Optional[str] = ..., reply_to_id: _Optional[str] = ..., content_encrypted: _Optional[bytes] = ..., encryption: _Optional[_Union[_common_pb2.Encryption, _Mapping]] = ..., attachment_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("message", "created")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    message: _common_pb2.Message
    created: bool
    def __init__(self, message: _Optional[_Union[_common_pb2.Message, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class SendMessagesRequest(_message.Message):
    __slots__ = ("sends",)
    SENDS_FIELD_NUMBER: _ClassVar[int]
    sends: _containers.RepeatedCompositeFieldContainer[BatchedSend]
    def __init__(self, sends: _Optional[_Iterable[_Union[BatchedSend, _Mapping]]] = ...) -> None: ...

class BatchedSend(_message.Message):
    __slots__ = ("user_token", "request", "request_id", "traceparent")
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    user_token: str
    request: SendMessageRequest
    request_id: str
    traceparent: str
    def __init__(self, user_token: _Optional[str] = ..., request: _Optional[_Union[SendMessageRequest, _Mapping]] = ..., request_id: _Optional[str] = ..., traceparent: _Optional[str] = ...) -> None: ...

class SendMessagesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchedSendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchedSendResult, _Mapping]]] = ...) -> None: ...

class BatchedSendResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: SendMessageResponse
    error: SendError
    def __init__(self, response: _Optional[_Union[SendMessageResponse, _Mapping]] = ..., error: _Optional[_Union[SendError, _Mapping]] = ...) -> None: ...

class SendError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SearchMessagesRequest(_message.Message):
    __slots__ = ("q", "conversation_id", "limit")
    Q_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    q: str
    conversation_id: str
    limit: int
    def __init__(self, q: _Optional[str] = ..., conversation_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class SearchMessagesResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("conversation_id", "limit", "before_seq", "after_seq")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    limit: int
    before_seq: int
    after_seq: int
    def __init__(self, conversation_id: _Optional[str] = ..., limit: _Optional[int] = ..., before_seq: _Optional[int] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "has_more")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    has_more: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class EditMessageRequest(_message.Message):
    __slots__ = ("message_id", "content")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    content: str
    def __init__(self, message_id: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class EditMessageResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _common_pb2.Message
    def __init__(self, message: _Optional[_Union[_common_pb2.Message, _Mapping]] = ...) -> None: ...

class DeleteMessageRequest(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class DeleteMessageResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _common_pb2.Message
    def __init__(self, message: _Optional[_Union[_common_pb2.Message, _Mapping]] = ...) -> None: ...

class UpdateMessageStatusRequest(_message.Message):
    __slots__ = ("message_id", "status")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    status: _common_pb2.MessageStatus
    def __init__(self, message_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.MessageStatus, str]] = ...) -> None: ...

class UpdateMessageStatusResponse(_message.Message):
    __slots__ = ("delivered_seq", "read_seq")
    DELIVERED_SEQ_FIELD_NUMBER: _ClassVar[int]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    delivered_seq: int
    read_seq: int
    def __init__(self, delivered_seq: _Optional[int] = ..., read_seq: _Optional[int] = ...) -> None: ...

class AddReactionRequest(_message.Message):
    __slots__ = ("message_id", "emoji")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    EMOJI_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    emoji: str
    def __init__(self, message_id: _Optional[str] = ..., emoji: _Optional[str] = ...) -> None: ...

class AddReactionResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _common_pb2.Message
    def __init__(self, message: _Optional[_Union[_common_pb2.Message, _Mapping]] = ...) -> None: ...

class RemoveReactionRequest(_message.Message):
    __slots__ = ("message_id", "emoji")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    EMOJI_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    emoji: str
    def __init__(self, message_id: _Optional[str] = ..., emoji: _Optional[str] = ...) -> None: ...

class RemoveReactionResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _common_pb2.Message
    def __init__(self, message: _Optional[_Union[_common_pb2.Message, _Mapping]] = ...) -> None: ...

class ListMessageAuditEntriesRequest(_message.Message):
    __slots__ = ("conversation_id", "limit", "cursor")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    limit: int
    cursor: str
    def __init__(self, conversation_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListMessageAuditEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_cursor")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.AuditEntry]
    next_cursor: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_common_pb2.AuditEntry, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class SubscribeEventsRequest(_message.Message):
    __slots__ = ("user_id", "resume_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    resume_token: str
    def __init__(self, user_id: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class SubscribeEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.Event, _Mapping]]] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("subscribe", "unsubscribe")
    class Subscribe(_message.Message):
        __slots__ = ("user_id", "resume_token", "subscription_id")
        USER_ID_FIELD_NUMBER: _ClassVar[int]
        RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
        SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
        user_id: str
        resume_token: str
        subscription_id: str
        def __init__(self, user_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., subscription_id: _Optional[str] = ...) -> None: ...
    class Unsubscribe(_message.Message):
        __slots__ = ("subscription_id",)
        SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
        subscription_id: str
        def __init__(self, subscription_id: _Optional[str] = ...) -> None: ...
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    subscribe: StreamEventsRequest.Subscribe
    unsubscribe: StreamEventsRequest.Unsubscribe
    def __init__(self, subscribe: _Optional[_Union[StreamEventsRequest.Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[StreamEventsRequest.Unsubscribe, _Mapping]] = ...) -> None: ...

class StreamEventsResponse(_message.Message):
    __slots__ = ("batches", "deliveries")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[SubscriptionEvents]
    deliveries: _containers.RepeatedCompositeFieldContainer[EventDelivery]
    def __init__(self, batches: _Optional[_Iterable[_Union[SubscriptionEvents, _Mapping]]] = ..., deliveries: _Optional[_Iterable[_Union[EventDelivery, _Mapping]]] = ...) -> None: ...

class EventDelivery(_message.Message):
    __slots__ = ("event", "recipients")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    event: _common_pb2.Event
    recipients: _containers.RepeatedCompositeFieldContainer[EventRecipient]
    def __init__(self, event: _Optional[_Union[_common_pb2.Event, _Mapping]] = ..., recipients: _Optional[_Iterable[_Union[EventRecipient, _Mapping]]] = ...) -> None: ...

class EventRecipient(_message.Message):
    __slots__ = ("subscription_id", "resume_token")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    resume_token: str
    def __init__(self, subscription_id: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class SubscriptionEvents(_message.Message):
    __slots__ = ("subscription_id", "events")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.Event]
    def __init__(self, subscription_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[_common_pb2.Event, _Mapping]]] = ...) -> None: ...

class CreateUploadRequest(_message.Message):
    __slots__ = ("conversation_id", "filename", "size_bytes", "content_type")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    filename: str
    size_bytes: int
    content_type: str
    def __init__(self, conversation_id: _Optional[str] = ..., filename: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class CreateUploadResponse(_message.Message):
    __slots__ = ("attachment", "upload_url", "upload_method", "upload_headers", "expires_at")
    class UploadHeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ATTACHMENT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_METHOD_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_HEADERS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    attachment: _common_pb2.Attachment
    upload_url: str
    upload_method: str
    upload_headers: _containers.ScalarMap[str, str]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, attachment: _Optional[_Union[_common_pb2.Attachment, _Mapping]] = ..., upload_url: _Optional[str] = ..., upload_method: _Optional[str] = ..., upload_headers: _Optional[_Mapping[str, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CompleteUploadRequest(_message.Message):
    __slots__ = ("attachment_id",)
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    attachment_id: str
    def __init__(self, attachment_id: _Optional[str] = ...) -> None: ...

class CompleteUploadResponse(_message.Message):
    __slots__ = ("attachment",)
    ATTACHMENT_FIELD_NUMBER: _ClassVar[int]
    attachment: _common_pb2.Attachment
    def __init__(self, attachment: _Optional[_Union[_common_pb2.Attachment, _Mapping]] = ...) -> None: ...

class GetAttachmentRequest(_message.Message):
    __slots__ = ("attachment_id",)
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    attachment_id: str
    def __init__(self, attachment_id: _Optional[str] = ...) -> None: ...

class GetAttachmentResponse(_message.Message):
    __slots__ = ("attachment",)
    ATTACHMENT_FIELD_NUMBER: _ClassVar[int]
    attachment: _common_pb2.Attachment
    def __init__(self, attachment: _Optional[_Union[_common_pb2.Attachment, _Mapping]] = ...) -> None: ...

class SignedLink(_message.Message):
    __slots__ = ("attachment_id", "variant", "user_id", "expires", "signature")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    attachment_id: str
    variant: str
    user_id: str
    expires: int
    signature: str
    def __init__(self, attachment_id: _Optional[str] = ..., variant: _Optional[str] = ..., user_id: _Optional[str] = ..., expires: _Optional[int] = ..., signature: _Optional[str] = ...) -> None: ...

class WriteAttachmentContentRequest(_message.Message):
    __slots__ = ("link", "chunk")
    LINK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    link: SignedLink
    chunk: bytes
    def __init__(self, link: _Optional[_Union[SignedLink, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class WriteAttachmentContentResponse(_message.Message):
    __slots__ = ("accepted", "size_bytes", "attachment")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENT_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    size_bytes: int
    attachment: _common_pb2.Attachment
    def __init__(self, accepted: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., attachment: _Optional[_Union[_common_pb2.Attachment, _Mapping]] = ...) -> None: ...

class ReadAttachmentContentRequest(_message.Message):
    __slots__ = ("link", "first", "last", "suffix")
    LINK_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    link: SignedLink
    first: int
    last: int
    suffix: int
    def __init__(self, link: _Optional[_Union[SignedLink, _Mapping]] = ..., first: _Optional[int] = ..., last: _Optional[int] = ..., suffix: _Optional[int] = ...) -> None: ...

class ReadAttachmentContentResponse(_message.Message):
    __slots__ = ("head", "chunk")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    head: ContentHead
    chunk: bytes
    def __init__(self, head: _Optional[_Union[ContentHead, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ContentHead(_message.Message):
    __slots__ = ("content_type", "filename", "sha256", "total_bytes", "first", "length", "created_at", "satisfiable")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SATISFIABLE_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    filename: str
    sha256: str
    total_bytes: int
    first: int
    length: int
    created_at: _timestamp_pb2.Timestamp
    satisfiable: bool
    def __init__(self, content_type: _Optional[str] = ..., filename: _Optional[str] = ..., sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., first: _Optional[int] = ..., length: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., satisfiable: _Optional[bool] = ...) -> None: ...

class ListThreadRequest(_message.Message):
    __slots__ = ("message_id", "limit", "before_seq", "after_seq")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    limit: int
    before_seq: int
    after_seq: int
    def __init__(self, message_id: _Optional[str] = ..., limit: _Optional[int] = ..., before_seq: _Optional[int] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ListThreadResponse(_message.Message):
    __slots__ = ("root", "messages", "has_more")
    ROOT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    root: _common_pb2.Message
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    has_more: bool
    def __init__(self, root: _Optional[_Union[_common_pb2.Message, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...
