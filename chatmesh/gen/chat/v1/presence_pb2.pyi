import datetime

from chatmesh.gen.chat.v1 import call_pb2 as _call_pb2
from chatmesh.gen.chat.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Connection(_message.Message):
    __slots__ = ("connection_id", "user_id")
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    connection_id: str
    user_id: str
    def __init__(self, connection_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ReportConnectionsRequest(_message.Message):
    __slots__ = ("edge_id", "connections")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    connections: _containers.RepeatedCompositeFieldContainer[Connection]
    def __init__(self, edge_id: _Optional[str] = ..., connections: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ...) -> None: ...

class ReportConnectionsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DropConnectionsRequest(_message.Message):
    __slots__ = ("edge_id", "connections")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    connections: _containers.RepeatedCompositeFieldContainer[Connection]
    def __init__(self, edge_id: _Optional[str] = ..., connections: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ...) -> None: ...

class DropConnectionsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetPresenceRequest(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.PresenceStatus
    def __init__(self, status: _Optional[_Union[_common_pb2.PresenceStatus, str]] = ...) -> None: ...

class SetPresenceResponse(_message.Message):
    __slots__ = ("presence",)
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    presence: UserPresence
    def __init__(self, presence: _Optional[_Union[UserPresence, _Mapping]] = ...) -> None: ...

class GetPresenceRequest(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPresenceResponse(_message.Message):
    __slots__ = ("presences",)
    PRESENCES_FIELD_NUMBER: _ClassVar[int]
    presences: _containers.RepeatedCompositeFieldContainer[UserPresence]
    def __init__(self, presences: _Optional[_Iterable[_Union[UserPresence, _Mapping]]] = ...) -> None: ...

class UserPresence(_message.Message):
    __slots__ = ("user_id", "status", "last_seen_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    status: _common_pb2.PresenceStatus
    last_seen_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.PresenceStatus, str]] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetTypingRequest(_message.Message):
    __slots__ = ("conversation_id", "is_typing")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    IS_TYPING_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    is_typing: bool
    def __init__(self, conversation_id: _Optional[str] = ..., is_typing: _Optional[bool] = ...) -> None: ...

class SetTypingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamPresenceEventsRequest(_message.Message):
    __slots__ = ("subscribe_user_id", "unsubscribe_user_id")
    SUBSCRIBE_USER_ID_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_USER_ID_FIELD_NUMBER: _ClassVar[int]
    subscribe_user_id: str
    unsubscribe_user_id: str
    def __init__(self, subscribe_user_id: _Optional[str] = ..., unsubscribe_user_id: _Optional[str] = ...) -> None: ...

class StreamPresenceEventsResponse(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[_common_pb2.UserEvents]
    def __init__(self, batches: _Optional[_Iterable[_Union[_common_pb2.UserEvents, _Mapping]]] = ...) -> None: ...
