"""The generic REST transcoder, checked against google/api/http.proto's own examples and against the
routes our protos declare."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool

from chatmesh.gen.chat.v1 import conversation_pb2, message_pb2, presence_pb2
from services.edge.transcoder import BadRequest, Transcoder, routes_from

ROUTES = Transcoder(routes_from([conversation_pb2, message_pb2, presence_pb2]))


def _example_module() -> object:
    """http.proto's Messaging example, built as a descriptor at run time:
    GetMessage     get: "/v1/{name=messages/*}", additional binding get: "/v1/users/{user_id}/messages/{message_id}"
    UpdateMessage  patch: "/v1/messages/{message_id}" body: "message"
    Search         get: "/v1/{name=shelves/**}:search"
    """
    pool = descriptor_pool.DescriptorPool()
    for dependency in (descriptor_pb2, http_pb2, annotations_pb2):
        pool.AddSerializedFile(dependency.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(
        name="example.proto", package="example.v1", syntax="proto3", dependency=["google/api/annotations.proto"]
    )
    f.message_type.add(name="SubMessage").field.add(name="subfield", number=1, type=9, label=1)
    f.message_type.add(name="Message").field.add(name="text", number=1, type=9, label=1)
    req = f.message_type.add(name="GetMessageRequest")
    for number, (name, kind, label) in enumerate(
        [("name", 9, 1), ("message_id", 9, 1), ("user_id", 9, 1), ("revision", 3, 1), ("tags", 9, 3)], start=1
    ):
        req.field.add(name=name, number=number, type=kind, label=label)
    req.field.add(name="sub", number=6, type=11, label=1, type_name=".example.v1.SubMessage")
    upd = f.message_type.add(name="UpdateMessageRequest")
    upd.field.add(name="message_id", number=1, type=9, label=1)
    upd.field.add(name="message", number=2, type=11, label=1, type_name=".example.v1.Message")
    service = f.service.add(name="Messaging")

    def method(name: str, request: str, rule: http_pb2.HttpRule) -> None:
        m = service.method.add(name=name, input_type=f".example.v1.{request}", output_type=".example.v1.Message")
        m.options.Extensions[annotations_pb2.http].CopyFrom(rule)

    get = http_pb2.HttpRule(get="/v1/{name=messages/*}")
    get.additional_bindings.add(get="/v1/users/{user_id}/messages/{message_id}")
    method("GetMessage", "GetMessageRequest", get)
    method(
        "UpdateMessage", "UpdateMessageRequest", http_pb2.HttpRule(patch="/v1/messages/{message_id}", body="message")
    )
    method("Search", "GetMessageRequest", http_pb2.HttpRule(get="/v1/{name=shelves/**}:search"))
    pool.AddSerializedFile(f.SerializeToString())
    return SimpleNamespace(DESCRIPTOR=pool.FindFileByName("example.proto"))


EXAMPLE = Transcoder(routes_from([_example_module()]))  # type: ignore[list-item]


def test_single_segment_variable_and_query_parameters() -> None:
    # http.proto: GET /v1/messages/123456?revision=2&sub.subfield=foo
    #   -> name: "messages/123456" revision: 2 sub {subfield: "foo"}
    route, path_vars, _ = EXAMPLE.match("GET", "/v1/messages/123456")
    assert route is not None and route.method.name == "GetMessage"
    request = EXAMPLE.build_request(route, path_vars, [("revision", "2"), ("sub.subfield", "foo")], None)
    assert request.name == "messages/123456" and request.revision == 2 and request.sub.subfield == "foo"


def test_additional_binding() -> None:
    # http.proto: GET /v1/users/me/messages/123456 -> user_id: "me" message_id: "123456"
    route, path_vars, _ = EXAMPLE.match("GET", "/v1/users/me/messages/123456")
    assert route is not None and route.method.name == "GetMessage"
    request = EXAMPLE.build_request(route, path_vars, [], None)
    assert (request.user_id, request.message_id) == ("me", "123456")


def test_named_body_field() -> None:
    # http.proto: PATCH /v1/messages/123456 { "text": "Hi!" } -> message_id: "123456" message { text: "Hi!" }
    route, path_vars, _ = EXAMPLE.match("PATCH", "/v1/messages/123456")
    assert route is not None
    request = EXAMPLE.build_request(route, path_vars, [], {"text": "Hi!"})
    assert request.message_id == "123456" and request.message.text == "Hi!"


def test_double_wildcard_and_custom_verb() -> None:
    route, path_vars, _ = EXAMPLE.match("GET", "/v1/shelves/a/b/c:search")
    assert route is not None and route.method.name == "Search"
    assert path_vars == {"name": "shelves/a/b/c"}


def test_repeated_query_parameters_accept_repeats_and_commas() -> None:
    route, path_vars, _ = EXAMPLE.match("GET", "/v1/messages/1")
    assert route is not None
    request = EXAMPLE.build_request(route, path_vars, [("tags", "a,b"), ("tags", "c")], None)
    assert list(request.tags) == ["a", "b", "c"]


def test_literal_route_wins_over_variable() -> None:
    route, _, _ = ROUTES.match("GET", "/api/messages/search")
    assert route is not None and route.method.name == "SearchMessages"
    route, path_vars, _ = ROUTES.match("GET", "/api/messages/1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    assert route is not None and route.method.name == "ListMessages"
    assert path_vars == {"conversation_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}


def test_wrong_method_is_distinguished_from_unknown_path() -> None:
    assert ROUTES.match("PUT", "/api/messages")[2] is True
    assert ROUTES.match("GET", "/api/nowhere")[2] is False
    assert ROUTES.allowed_methods("/api/messages/abc") == ["DELETE", "GET", "PATCH"]  # a 405's Allow
    assert ROUTES.allowed_methods("/api/nowhere") == []


def test_a_single_value_parameter_given_twice_is_refused() -> None:
    route, path_vars, _ = EXAMPLE.match("GET", "/v1/messages/1")
    assert route is not None
    for query in ([("revision", "1"), ("revision", "2")], [("sub.subfield", "a"), ("sub.subfield", "b")]):
        with pytest.raises(BadRequest) as refused:
            EXAMPLE.build_request(route, path_vars, query, None)
        assert refused.value.code == "DUPLICATE_PARAMETER"


def test_bad_parameters_are_bad_requests() -> None:
    route, path_vars, _ = ROUTES.match("GET", "/api/messages/abc")
    assert route is not None
    with pytest.raises(BadRequest):
        ROUTES.build_request(route, path_vars, [("limit", "many")], None)
    with pytest.raises(BadRequest):
        ROUTES.build_request(route, path_vars, [("nope", "1")], None)


def test_responses_use_proto_field_names_and_int64_as_strings() -> None:
    reply = message_pb2.SendMessageResponse(created=True)
    reply.message.seq = 7
    reply.message.created_at.FromJsonString("2026-01-02T03:04:05Z")
    rendered = json.loads(Transcoder.render_json(reply))
    assert rendered["message"]["seq"] == "7"
    assert rendered["message"]["created_at"] == "2026-01-02T03:04:05Z"
    assert rendered["created"] is True and rendered["message"]["conversation_id"] == ""
