"""`GET /openapi.json`: generated from the descriptors the transcoder serves, valid OpenAPI 3, and the
running mesh keeps to it (schemathesis: no 5xx, no response outside the schema)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from chatmesh.auth import sign
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import conversation_pb2, message_pb2, notification_pb2, presence_pb2
from chatmesh_tools.launcher import Mesh
from services.edge.files_openapi import PATH as FILE_PATH
from services.edge.openapi import build_openapi, openapi_paths
from services.edge.transcoder import routes_from
from tests.helpers import bearer, new_user_id

MAX_EXAMPLES = 10  # per operation and mode: 21 operations x 2 modes in about a minute
ROUTES = routes_from([conversation_pb2, message_pb2, presence_pb2, notification_pb2])


def test_document_is_valid_openapi_3_and_covers_every_route() -> None:
    document = build_openapi(ROUTES)
    validate(document)  # raises on any violation of the OpenAPI 3 schema
    paths = openapi_paths(ROUTES)
    served = {(r.http_method.lower(), paths[r.template]) for r in ROUTES} | {("put", FILE_PATH), ("get", FILE_PATH)}
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops if m != "parameters"}
    assert documented == served


def test_proto3_json_types() -> None:
    document = build_openapi(ROUTES)
    schemas = document["components"]["schemas"]
    message = schemas["Message"]["properties"]
    seq = message["seq"]  # int64 is a decimal string (proto3 JSON), with an example and the field's comment
    assert (seq["type"], seq["format"], seq["pattern"], seq["example"]) == ("string", "int64", r"^-?[0-9]+$", "42")
    assert message["created_at"] == {"type": "string", "format": "date-time"}
    body = document["paths"]["/api/messages/{message_id}/status"]["post"]["requestBody"]
    status = body["content"]["application/json"]["schema"]["properties"]["status"]
    assert "MESSAGE_STATUS_READ" in status["enum"] and "read" in status["enum"]
    assert schemas["ListMessagesResponse"]["properties"]["messages"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Message"},
    }
    assert schemas["Error"]["properties"]["error"]["required"] == ["code", "message", "status", "request_id"]


async def test_served_document_is_the_generated_one(http: httpx.AsyncClient) -> None:
    reply = await http.get("/openapi.json")
    assert reply.status_code == 200
    document = reply.json()
    assert document == build_openapi(ROUTES)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    op = document["paths"]["/api/messages/{message_id}/status"]["post"]
    assert op["responses"]["403"] == {"$ref": "#/components/responses/Error"}


@pytest.fixture(scope="session")
def api_schema(mesh: Mesh) -> Any:
    document = httpx.get(f"{mesh.edge_url}/openapi.json", timeout=10).json()
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(scope="session")
def fuzz_token(mesh: Mesh, settings: Settings) -> str:
    """A user who exists, with a conversation and a message of their own (so some ids are real)."""
    user, other = new_user_id("fuzz"), new_user_id("fuzz-peer")
    token = sign(settings, user)
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as client:
        assert client.put("/api/users/me", json={}, headers=bearer(sign(settings, other))).status_code == 200
        reply = client.post("/api/conversations/direct", json={"user_id": other}, headers=bearer(token))
        assert reply.status_code == 200, reply.text
        conversation_id = reply.json()["conversation"]["conversation_id"]
        sent = client.post(
            "/api/messages", json={"conversation_id": conversation_id, "content": "hi"}, headers=bearer(token)
        )
        assert sent.status_code == 200, sent.text
    return token


def _operations() -> list[Any]:
    schema = schemathesis.openapi.from_dict(build_openapi(ROUTES))
    return [result.ok() for result in schema.get_all_operations()]


# schemathesis' pytest plugin does not run on pytest 9 yet, so each operation is driven by its
# hypothesis strategy directly: same generation, same checks. Positive cases keep to the schema;
# negative ones break it (wrong types, missing fields) and must still get a 4xx in the error body.
@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("operation", _operations(), ids=lambda op: op.label)
def test_api_keeps_to_its_schema(operation: Any, mode: GenerationMode, mesh: Mesh, fuzz_token: str) -> None:
    """Valid tokens of a real user, generated requests per operation: no 5xx, no response outside the
    document (status codes, content types, bodies)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(
            base_url=mesh.edge_url,
            headers=bearer(fuzz_token),
            timeout=10,
            checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        )
        statuses.append(response.status_code)

    statuses: list[int] = []
    run()
    if mode == GenerationMode.POSITIVE:
        assert statuses and any(status != 401 for status in statuses), statuses  # the token is accepted
