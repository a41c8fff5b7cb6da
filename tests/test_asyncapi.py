"""/asyncapi.json, the WebSocket's contract: valid to the official AsyncAPI parser, equal to the code
both ways (every frame type the edge dispatches or sends and every event type a service emits is in it,
and nothing else), and true of a running edge: each client frame's example, sent as documented, gets a
documented reply in the documented shape, and the events that come back fit their schemas."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from chatmesh_tools.launcher import Mesh
from services.edge import call_frames, frame_limits, presence_link, ws
from services.edge.asyncapi import build_asyncapi
from services.edge.frame_catalog import CALL_ID, CLOSE_CODES, EDGE_ERROR_CODES, FRAMES, MESSAGE_ID, Frame
from services.edge.openapi_hints import UUID_EXAMPLE
from tests.helpers import Socket, direct_conversation, new_user_id, register, send

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = build_asyncapi()
MESSAGES = DOCUMENT["components"]["messages"]
EDGE_FRAME_MODULES = (
    "ws",
    "sends",
    "errors",
    "presence_link",
    "presence_toggles",
    "delivered",
    "outgoing",
    "frames",
    "call_frames",
    "threads",
)
NAMESPACES = ("chat:", "conversation:", "user:", "presence:", "call:")


def _validator(message: dict[str, Any]) -> jsonschema.Draft7Validator:
    """A validator of a message's payload, its $refs resolved within the document."""
    return jsonschema.Draft7Validator({**message["payload"], "components": DOCUMENT["components"]})


def _documented(client: bool | None = None) -> set[str]:
    """Frame types in the document (those a client sends, those the edge sends, or all)."""
    return {m["name"] for key, m in MESSAGES.items() if client is None or key.startswith("client.") == client}


def test_the_asyncapi_parser_finds_no_problem(tmp_path: Path) -> None:
    node = shutil.which("node")
    redocly = shutil.which("redocly")  # installed beside @asyncapi/parser by ./scripts/test.sh
    assert node and redocly, "node and the .tools folder are needed: run the tests with ./scripts/test.sh"
    modules = Path(redocly).parent.parent
    assert (modules / "@asyncapi" / "parser").is_dir(), f"@asyncapi/parser is not installed in {modules}"
    (tmp_path / "asyncapi.json").write_text(json.dumps(DOCUMENT))
    result = subprocess.run(
        [node, str(ROOT / "tests" / "asyncapi" / "validate.mjs"), "asyncapi.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["parsed"] and report["version"] == "3.1.0", result.stdout + result.stderr
    assert report["diagnostics"] == []  # no error, and no warning either


def test_every_example_fits_its_message() -> None:
    for key, message in MESSAGES.items():
        for example in message["examples"]:
            _validator(message).validate(example["payload"])
        assert message["payload"]["properties"]["type"]["const"] == message["name"], key


def _strings(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _sources(*folders: str) -> list[Path]:
    return [
        p
        for folder in folders
        for p in (ROOT / folder).rglob("*.py")
        if "gen" not in p.parts and "bench" not in p.parts
    ]


def _emitted_event_types() -> set[str]:
    """Event types the services and the edge write: namespaced names anywhere in their code, and any
    `Event(type=...)` constant (resync_required)."""
    found: set[str] = set()
    for path in _sources("services", "chatmesh"):
        tree = ast.parse(path.read_text())
        found |= {
            s for s in _strings(tree) if s.startswith(NAMESPACES) and s.split(":", 1)[1].replace("_", "").isalpha()
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "Event":
                found |= {k.value.value for k in node.keywords if k.arg == "type" and isinstance(k.value, ast.Constant)}
    return found


def _edge_frames() -> tuple[set[str], set[str]]:
    """(frame types the edge compares an incoming frame's type against, those it writes as `"type": X`)."""
    compared: set[str] = set()
    written: set[str] = set()
    for name in EDGE_FRAME_MODULES:
        tree = ast.parse((ROOT / "services" / "edge" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "type" and isinstance(value, ast.Constant):
                        written.add(value.value)
            if name == "ws" and isinstance(node, ast.Compare):
                compared |= {s for s in _strings(node) if s.replace(":", "").replace("_", "").isalpha()}
    return compared - {"type", "data", "id", "text", "bytes"}, written


def test_the_document_lists_exactly_the_frames_of_the_code() -> None:
    compared, written = _edge_frames()
    dispatched = compared | set(presence_link.PRESENCE_FRAMES) | set(call_frames.CALL_FRAMES)  # (handed on whole)
    assert dispatched == _documented(client=True)  # what ws.py's dispatcher handles is what a client may send
    emitted = _emitted_event_types() | written
    assert emitted | dispatched == _documented()
    assert set(frame_limits.KIND_OF) <= _documented()  # (chat:message_read: an event, its limit never applies)


def test_the_edge_error_and_close_codes_are_documented() -> None:
    sent: set[str] = set()
    for name in EDGE_FRAME_MODULES:
        for node in ast.walk(ast.parse((ROOT / "services" / "edge" / f"{name}.py").read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("error_frame", "_error")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                sent.add(node.args[1].value)
    assert sent <= set(EDGE_ERROR_CODES), sent - set(EDGE_ERROR_CODES)
    assert set(EDGE_ERROR_CODES) <= sent | {"DEADLINE_EXCEEDED"}  # (upstream timeouts, from from_rpc_error)
    closes = {value for name, value in vars(ws).items() if name.startswith("CLOSE_")}
    assert closes <= set(CLOSE_CODES) and {1009, 1012} <= set(CLOSE_CODES)
    assert DOCUMENT["info"]["x-close-codes"] == {str(k): v for k, v in CLOSE_CODES.items()}


async def test_served_document_names_the_edge_it_was_asked_on(mesh: Mesh, http: httpx.AsyncClient) -> None:
    reply = await http.get("/asyncapi.json")
    assert reply.status_code == 200
    served = reply.json()
    host = mesh.edge_url.removeprefix("http://")
    assert served["servers"]["edge"] == {**DOCUMENT["servers"]["edge"], "host": host}
    assert {k: v for k, v in served.items() if k != "servers"} == json.loads(
        json.dumps({k: v for k, v in DOCUMENT.items() if k != "servers"})
    )


async def test_every_client_frame_example_gets_a_documented_reply(
    mesh: Mesh, http: httpx.AsyncClient, make_token: Any
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    token = make_token(alice)
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, token, bob)
    message_id = (await send(http, token, conversation_id, "hello"))["message_id"]
    real = {UUID_EXAMPLE: conversation_id, MESSAGE_ID: message_id, "<JWT>": token}

    def substituted(example: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(example)
        for placeholder, value in real.items():
            text = text.replace(placeholder, value)
        return dict(json.loads(text))

    socket = await Socket.open(mesh.edge_url, token)  # opened with the auth example's shape
    answered: dict[str, dict[str, Any]] = {}
    requests = {}
    for frame in FRAMES:
        if frame.client and frame.type != "auth" and frame.type not in call_frames.CALL_FRAMES:
            example = substituted(frame.example)
            requests[example["id"]] = frame
            await socket.ws.send(json.dumps(example))
    renewal = {"type": "auth", "id": "renew", "data": {"token": make_token(alice)}}  # auth, later, with an id
    requests["renew"] = next(f for f in FRAMES if f.type == "auth")
    await socket.ws.send(json.dumps(renewal))
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while len(answered) < len(requests):
            reply = await socket.recv()
            seen.append(reply)
            if reply.get("id") in requests and reply["type"] in ("ack", "error", "pong"):
                answered[reply["id"]] = reply
    for request_id, frame in requests.items():
        reply = answered[request_id]
        assert reply["type"] in frame.replies and reply["type"] != "error", (frame.type, reply)
    seen += await _call_examples(mesh, socket, make_token(bob), substituted, real)
    documented = {m["name"]: m for key, m in MESSAGES.items() if key.startswith("edge.")}
    for frame in seen:  # replies and events alike fit the document
        _validator(documented[frame["type"]]).validate(frame)
    assert any(f["type"] == "chat:message_received" for f in seen)  # its own send, as another device sees it
    unknown = await socket.request("chat:teleport", {})
    assert unknown["type"] == "error" and unknown["data"]["code"] == "UNKNOWN_TYPE"


async def _call_examples(
    mesh: Mesh, alice: Socket, bob_token: str, substituted: Any, real: dict[str, str]
) -> list[dict[str, Any]]:
    """The call frames' examples, one call through: alice invites bob (their direct conversation), bob
    answers, alice relays a candidate and hangs up. Each gets a documented reply that is no error, and
    each party hears the events the catalog says it does; returns every frame both sockets got."""
    bob = await Socket.open(mesh.edge_url, bob_token)
    examples = {f.type: f for f in FRAMES if f.client and f.type in call_frames.CALL_FRAMES}
    assert list(examples) == list(call_frames.CALL_FRAMES)
    got: dict[Socket, list[dict[str, Any]]] = {alice: [], bob: []}

    async def reply_to(socket: Socket, frame: Frame) -> dict[str, Any]:
        example = substituted(frame.example)
        await socket.ws.send(json.dumps(example))
        async with asyncio.timeout(10):
            while True:
                got[socket].append(reply := await socket.recv())
                if reply.get("id") == example["id"]:
                    break
        assert reply["type"] in frame.replies and reply["type"] != "error", (frame.type, reply)
        return reply

    invited = await reply_to(alice, examples["call:invite"])
    assert invited["data"]["call"]["state"] == "ringing"
    real[CALL_ID] = invited["data"]["call"]["call_id"]
    assert (await reply_to(bob, examples["call:answer"]))["data"]["call"]["state"] == "accepted"
    await reply_to(alice, examples["call:ice"])
    assert (await reply_to(alice, examples["call:hangup"]))["data"]["call"]["end_reason"] == "hangup"
    for socket, kinds in (
        (alice, ("call:accepted", "call:ended")),
        (bob, ("call:incoming", "call:candidate", "call:ended")),
    ):
        for kind in kinds:
            if not any(f["type"] == kind for f in got[socket]):
                got[socket].append(await socket.next_of(kind))
    return got[alice] + got[bob]
