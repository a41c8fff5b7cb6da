"""/openapi.json passes Redocly's linter (its recommended rules) with no error, and says what a reader
of the docs needs: one path per template, summaries and descriptions from the proto comments, and the
bounds and formats the services enforce."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from chatmesh.gen.chat.v1 import conversation_pb2, message_pb2, notification_pb2, presence_pb2
from services.edge.openapi import build_openapi
from services.edge.transcoder import routes_from
from tests.helpers import bearer

DOCUMENT = build_openapi(routes_from([conversation_pb2, message_pb2, presence_pb2, notification_pb2]))
QUIET_NODE_TOOL = {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true", "NO_COLOR": "1"}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, ops in DOCUMENT["paths"].items()
        for method, op in ops.items()
        if method != "parameters"
    ]


def test_redocly_lint_recommended_finds_no_error(tmp_path: Path) -> None:
    redocly = shutil.which("redocly")
    assert redocly, "the Redocly CLI is not on PATH: run the tests with ./scripts/test.sh, which installs it"
    (tmp_path / "openapi.json").write_text(json.dumps(DOCUMENT))
    result = subprocess.run(
        [redocly, "lint", "openapi.json", "--format=json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **QUIET_NODE_TOOL},
    )
    report = json.loads(result.stdout[result.stdout.index("{") :])
    problems = [(p["severity"], p["ruleId"], p["message"]) for p in report["problems"]]
    assert report["totals"]["errors"] == 0 and result.returncode == 0, problems
    assert report["totals"]["warnings"] == 0, problems  # none today: keep it so


def test_paths_are_unique_and_the_shared_one_names_its_parameter_once() -> None:
    shapes = [re.sub(r"\{[^}]*\}", "{}", path) for path in DOCUMENT["paths"]]
    assert len(shapes) == len(set(shapes))
    shared = DOCUMENT["paths"]["/api/messages/{id}"]
    assert {m: shared[m]["operationId"] for m in shared} == {
        "get": "ListMessages",
        "patch": "EditMessage",
        "delete": "DeleteMessage",
    }
    (history_id,) = [p for p in shared["get"]["parameters"] if p["in"] == "path"]
    (edit_id,) = [p for p in shared["patch"]["parameters"] if p["in"] == "path"]
    assert (history_id["name"], edit_id["name"]) == ("id", "id")
    assert "conversation_id" in history_id["description"] and "message_id" in edit_id["description"]


def test_summaries_and_descriptions_come_from_the_proto_comments() -> None:
    for path, method, op in _operations():
        assert op["summary"], (method, path)
    send = DOCUMENT["paths"]["/api/messages"]["post"]
    assert send["summary"] == "Send a message to a conversation"  # the RPC's comment in message.proto
    assert "client_message_id" in send["description"]
    limit = next(p for p in DOCUMENT["paths"]["/api/conversations"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["description"] == "Page size: 1 to 100; 0 (unset) means 20."  # the field's comment
    assert DOCUMENT["components"]["schemas"]["Message"]["properties"]["seq"]["description"].startswith(
        "Per-conversation sequence number"
    )
    assert {t["name"] for t in DOCUMENT["tags"]} >= {"ConversationService", "MessageService", "PresenceService"}
    assert all(t["description"] for t in DOCUMENT["tags"])


def test_ids_and_limits_carry_formats_bounds_and_examples() -> None:
    history = DOCUMENT["paths"]["/api/messages/{id}"]["get"]["parameters"]
    by_name = {p["name"]: p["schema"] for p in history}
    assert by_name["id"]["format"] == "uuid" and by_name["id"]["example"]
    assert (by_name["limit"]["minimum"], by_name["limit"]["maximum"], by_name["limit"]["default"]) == (0, 200, 50)
    send = DOCUMENT["components"]["schemas"]["SendMessageRequest_Input"]["properties"]
    assert send["conversation_id"]["format"] == "uuid" and send["client_message_id"]["maxLength"] == 128
    user = next(p for p in DOCUMENT["paths"]["/api/users/{user_id}"]["get"]["parameters"] if p["in"] == "path")
    assert (user["schema"]["minLength"], user["schema"]["maxLength"]) == (1, 128)
    # Responses show what is stored: examples, but no bounds (an unset id prints as "").
    message = DOCUMENT["components"]["schemas"]["Message"]["properties"]
    assert message["reply_to_id"].get("format") is None and message["seq"]["example"] == "42"
    assert DOCUMENT["info"]["license"]["name"] == "Apache-2.0" and DOCUMENT["servers"]


async def test_documented_limit_bounds_are_the_services(http: httpx.AsyncClient, make_token: Any, user_id: str) -> None:
    """The documented maximum is accepted and one past it is refused, as the document says."""
    limit = next(p for p in DOCUMENT["paths"]["/api/conversations"]["get"]["parameters"] if p["name"] == "limit")
    headers = bearer(make_token(user_id))
    ok = await http.get("/api/conversations", params={"limit": limit["schema"]["maximum"]}, headers=headers)
    assert ok.status_code == 200, ok.text
    over = await http.get("/api/conversations", params={"limit": limit["schema"]["maximum"] + 1}, headers=headers)
    assert over.status_code == 400 and over.json()["error"]["code"] == "INVALID_LIMIT"
