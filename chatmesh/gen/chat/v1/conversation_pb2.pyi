from chatmesh.gen.chat.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UpsertUserRequest(_message.Message):
    __slots__ = ("display_name", "user_id")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    user_id: str
    def __init__(self, display_name: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class UpsertUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _common_pb2.User
    def __init__(self, user: _Optional[_Union[_common_pb2.User, _Mapping]] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _common_pb2.User
    def __init__(self, user: _Optional[_Union[_common_pb2.User, _Mapping]] = ...) -> None: ...

class CreateDirectConversationRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class CreateDirectConversationResponse(_message.Message):
    __slots__ = ("conversation", "created")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    created: bool
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class CreateGroupConversationRequest(_message.Message):
    __slots__ = ("title", "participant_ids")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_IDS_FIELD_NUMBER: _ClassVar[int]
    title: str
    participant_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, title: _Optional[str] = ..., participant_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateGroupConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class ListConversationsRequest(_message.Message):
    __slots__ = ("limit", "cursor")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    limit: int
    cursor: str
    def __init__(self, limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListConversationsResponse(_message.Message):
    __slots__ = ("conversations", "next_cursor")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Conversation]
    next_cursor: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[_common_pb2.Conversation, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class AddParticipantRequest(_message.Message):
    __slots__ = ("conversation_id", "user_id", "role")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    user_id: str
    role: _common_pb2.Role
    def __init__(self, conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ...) -> None: ...

class AddParticipantResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class RemoveParticipantRequest(_message.Message):
    __slots__ = ("conversation_id", "user_id")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    user_id: str
    def __init__(self, conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class RemoveParticipantResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class ChangeParticipantRoleRequest(_message.Message):
    __slots__ = ("conversation_id", "user_id", "role")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    user_id: str
    role: _common_pb2.Role
    def __init__(self, conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.Role, str]] = ...) -> None: ...

class ChangeParticipantRoleResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("conversation_id", "limit", "cursor")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    limit: int
    cursor: str
    def __init__(self, conversation_id: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_cursor")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.AuditEntry]
    next_cursor: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_common_pb2.AuditEntry, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GetMembershipRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetMembershipResponse(_message.Message):
    __slots__ = ("conversation_id", "type", "active", "participants", "version", "blocked", "archived", "muted_user_ids")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    MUTED_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    type: _common_pb2.ConversationType
    active: bool
    participants: _containers.RepeatedCompositeFieldContainer[_common_pb2.Participant]
    version: int
    blocked: bool
    archived: bool
    muted_user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, conversation_id: _Optional[str] = ..., type: _Optional[_Union[_common_pb2.ConversationType, str]] = ..., active: _Optional[bool] = ..., participants: _Optional[_Iterable[_Union[_common_pb2.Participant, _Mapping]]] = ..., version: _Optional[int] = ..., blocked: _Optional[bool] = ..., archived: _Optional[bool] = ..., muted_user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListContactsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListContactsResponse(_message.Message):
    __slots__ = ("user_ids", "visible_user_ids", "last_seen_hidden_user_ids", "hide_last_seen")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_HIDDEN_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    HIDE_LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    visible_user_ids: _containers.RepeatedScalarFieldContainer[str]
    last_seen_hidden_user_ids: _containers.RepeatedScalarFieldContainer[str]
    hide_last_seen: bool
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., visible_user_ids: _Optional[_Iterable[str]] = ..., last_seen_hidden_user_ids: _Optional[_Iterable[str]] = ..., hide_last_seen: _Optional[bool] = ...) -> None: ...

class ListConversationIdsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListConversationIdsResponse(_message.Message):
    __slots__ = ("conversation_ids",)
    CONVERSATION_IDS_FIELD_NUMBER: _ClassVar[int]
    conversation_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, conversation_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AcceptConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class AcceptConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class DeclineConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class DeclineConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class BlockConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class BlockConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class UserSettings(_message.Message):
    __slots__ = ("hide_last_seen",)
    HIDE_LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    hide_last_seen: bool
    def __init__(self, hide_last_seen: _Optional[bool] = ...) -> None: ...

class GetUserSettingsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetUserSettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: UserSettings
    def __init__(self, settings: _Optional[_Union[UserSettings, _Mapping]] = ...) -> None: ...

class UpdateUserSettingsRequest(_message.Message):
    __slots__ = ("hide_last_seen",)
    HIDE_LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    hide_last_seen: bool
    def __init__(self, hide_last_seen: _Optional[bool] = ...) -> None: ...

class UpdateUserSettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: UserSettings
    def __init__(self, settings: _Optional[_Union[UserSettings, _Mapping]] = ...) -> None: ...

class UpdateConversationRequest(_message.Message):
    __slots__ = ("conversation_id", "title", "description")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    title: str
    description: str
    def __init__(self, conversation_id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class UpdateConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class LeaveConversationRequest(_message.Message):
    __slots__ = ("conversation_id", "close_group")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSE_GROUP_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    close_group: bool
    def __init__(self, conversation_id: _Optional[str] = ..., close_group: _Optional[bool] = ...) -> None: ...

class LeaveConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class ArchiveConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class ArchiveConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class UnarchiveConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class UnarchiveConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...

class UpdateConversationPreferencesRequest(_message.Message):
    __slots__ = ("conversation_id", "muted", "pinned")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    MUTED_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    muted: bool
    pinned: bool
    def __init__(self, conversation_id: _Optional[str] = ..., muted: _Optional[bool] = ..., pinned: _Optional[bool] = ...) -> None: ...

class UpdateConversationPreferencesResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _common_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ...) -> None: ...
