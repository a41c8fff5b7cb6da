import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_STATE_UNSPECIFIED: _ClassVar[CallState]
    CALL_STATE_RINGING: _ClassVar[CallState]
    CALL_STATE_ACCEPTED: _ClassVar[CallState]
    CALL_STATE_ENDED: _ClassVar[CallState]

class CallEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_END_REASON_UNSPECIFIED: _ClassVar[CallEndReason]
    CALL_END_REASON_HANGUP: _ClassVar[CallEndReason]
    CALL_END_REASON_TIMEOUT: _ClassVar[CallEndReason]
    CALL_END_REASON_BUSY: _ClassVar[CallEndReason]
    CALL_END_REASON_DECLINED: _ClassVar[CallEndReason]
CALL_STATE_UNSPECIFIED: CallState
CALL_STATE_RINGING: CallState
CALL_STATE_ACCEPTED: CallState
CALL_STATE_ENDED: CallState
CALL_END_REASON_UNSPECIFIED: CallEndReason
CALL_END_REASON_HANGUP: CallEndReason
CALL_END_REASON_TIMEOUT: CallEndReason
CALL_END_REASON_BUSY: CallEndReason
CALL_END_REASON_DECLINED: CallEndReason

class Call(_message.Message):
    __slots__ = ("call_id", "conversation_id", "caller_id", "callee_id", "state", "end_reason", "ended_by", "created_at", "answered_at", "ended_at")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_ID_FIELD_NUMBER: _ClassVar[int]
    CALLEE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    conversation_id: str
    caller_id: str
    callee_id: str
    state: CallState
    end_reason: CallEndReason
    ended_by: str
    created_at: _timestamp_pb2.Timestamp
    answered_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    def __init__(self, call_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., caller_id: _Optional[str] = ..., callee_id: _Optional[str] = ..., state: _Optional[_Union[CallState, str]] = ..., end_reason: _Optional[_Union[CallEndReason, str]] = ..., ended_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., answered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IceCandidate(_message.Message):
    __slots__ = ("candidate", "sdp_mid", "sdp_mline_index", "username_fragment")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SDP_MID_FIELD_NUMBER: _ClassVar[int]
    SDP_MLINE_INDEX_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FRAGMENT_FIELD_NUMBER: _ClassVar[int]
    candidate: str
    sdp_mid: str
    sdp_mline_index: int
    username_fragment: str
    def __init__(self, candidate: _Optional[str] = ..., sdp_mid: _Optional[str] = ..., sdp_mline_index: _Optional[int] = ..., username_fragment: _Optional[str] = ...) -> None: ...

class CallEvent(_message.Message):
    __slots__ = ("call", "sdp", "candidate", "from_user_id")
    CALL_FIELD_NUMBER: _ClassVar[int]
    SDP_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    FROM_USER_ID_FIELD_NUMBER: _ClassVar[int]
    call: Call
    sdp: str
    candidate: IceCandidate
    from_user_id: str
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ..., sdp: _Optional[str] = ..., candidate: _Optional[_Union[IceCandidate, _Mapping]] = ..., from_user_id: _Optional[str] = ...) -> None: ...

class IceServer(_message.Message):
    __slots__ = ("urls", "username", "credential")
    URLS_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    urls: _containers.RepeatedScalarFieldContainer[str]
    username: str
    credential: str
    def __init__(self, urls: _Optional[_Iterable[str]] = ..., username: _Optional[str] = ..., credential: _Optional[str] = ...) -> None: ...

class StartCallRequest(_message.Message):
    __slots__ = ("conversation_id", "callee_id", "sdp_offer")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALLEE_ID_FIELD_NUMBER: _ClassVar[int]
    SDP_OFFER_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    callee_id: str
    sdp_offer: str
    def __init__(self, conversation_id: _Optional[str] = ..., callee_id: _Optional[str] = ..., sdp_offer: _Optional[str] = ...) -> None: ...

class StartCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class AnswerCallRequest(_message.Message):
    __slots__ = ("call_id", "sdp_answer")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SDP_ANSWER_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    sdp_answer: str
    def __init__(self, call_id: _Optional[str] = ..., sdp_answer: _Optional[str] = ...) -> None: ...

class AnswerCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class SendCallCandidateRequest(_message.Message):
    __slots__ = ("call_id", "candidate")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    candidate: IceCandidate
    def __init__(self, call_id: _Optional[str] = ..., candidate: _Optional[_Union[IceCandidate, _Mapping]] = ...) -> None: ...

class SendCallCandidateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HangUpCallRequest(_message.Message):
    __slots__ = ("call_id",)
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    def __init__(self, call_id: _Optional[str] = ...) -> None: ...

class HangUpCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class GetCallRequest(_message.Message):
    __slots__ = ("call_id",)
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    def __init__(self, call_id: _Optional[str] = ...) -> None: ...

class GetCallResponse(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: Call
    def __init__(self, call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class GetCallConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCallConfigResponse(_message.Message):
    __slots__ = ("ice_servers", "credentials_expire_at", "ring_timeout_ms", "max_sdp_bytes")
    ICE_SERVERS_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    RING_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_SDP_BYTES_FIELD_NUMBER: _ClassVar[int]
    ice_servers: _containers.RepeatedCompositeFieldContainer[IceServer]
    credentials_expire_at: _timestamp_pb2.Timestamp
    ring_timeout_ms: int
    max_sdp_bytes: int
    def __init__(self, ice_servers: _Optional[_Iterable[_Union[IceServer, _Mapping]]] = ..., credentials_expire_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ring_timeout_ms: _Optional[int] = ..., max_sdp_bytes: _Optional[int] = ...) -> None: ...
