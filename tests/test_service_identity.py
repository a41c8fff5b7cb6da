"""Service identity (issue 15, items 4 and 6): a token is a service's only if that service's own key
signed it; no process holds a key that speaks as another service (the edge holds `edge.key` alone);
each internal RPC answers only the services that really call it; a missing key stops a process at
start, naming the setting. On the session's mesh of real processes."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from google.api import annotations_pb2

from chatmesh.auth import AuthError, ServiceCredentials, TokenVerifier
from chatmesh.config import Settings
from chatmesh.errors import error_code_of
from chatmesh.gen.chat.v1 import (
    conversation_pb2,
    conversation_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    notification_pb2,
    presence_pb2,
    presence_pb2_grpc,
)
from chatmesh.grpc_server import SERVICE_CALLERS
from chatmesh.service_keys import keyring_env
from chatmesh_tools import cli
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import SERVICES, Mesh

ROOT = Path(__file__).resolve().parent.parent
Metadata = tuple[tuple[str, str], ...]
Stubs = dict[str, Any]


@pytest.fixture
async def stubs(mesh: Mesh) -> AsyncIterator[Stubs]:
    channels = {
        name: grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports[name]}")
        for name in ("conversation", "message", "presence")
    }
    yield {
        "conversation": conversation_pb2_grpc.ConversationServiceStub(channels["conversation"]),
        "message": message_pb2_grpc.MessageServiceStub(channels["message"]),
        "presence": presence_pb2_grpc.PresenceServiceStub(channels["presence"]),
    }
    for channel in channels.values():
        await channel.close()


def _bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def _claims(sub: str) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "typ": "service", "iat": now, "exp": now + 300}


async def _membership(stubs: Stubs, metadata: Metadata) -> Any:
    return await stubs["conversation"].GetMembership(
        conversation_pb2.GetMembershipRequest(conversation_id="00000000-0000-0000-0000-000000000000"),
        metadata=metadata,
        timeout=5,
    )


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    return refused.value


# --- 1. a service token comes from a service key, and from nothing else ------------------------------


async def test_the_user_token_secret_cannot_mint_a_service_identity(stubs: Stubs, mesh_env: dict[str, str]) -> None:
    """Whoever holds CHAT_JWT_SECRET (the edge does, in the base setup) signs `typ: service` in vain."""
    forged = jwt.encode(_claims("service:message"), mesh_env["CHAT_JWT_SECRET"], "HS256")
    refused = await _refused(lambda: _membership(stubs, _bearer(forged)))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED, refused


async def test_the_edge_key_speaks_only_as_the_edge(stubs: Stubs, keyring: Path) -> None:
    edge_key = serialization.load_pem_private_key((keyring / "edge.key").read_bytes(), password=None)
    as_message = jwt.encode(
        _claims("service:message"),
        edge_key,
        "EdDSA",  # type: ignore[arg-type]
        headers={"kid": "chatmesh:message"},
    )
    edge_claiming_message = jwt.encode(
        _claims("service:message"),
        edge_key,
        "EdDSA",  # type: ignore[arg-type]
        headers={"kid": "chatmesh:edge"},
    )
    for forged in (as_message, edge_claiming_message):
        refused = await _refused(lambda forged=forged: _membership(stubs, _bearer(forged)))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED, refused


def test_a_verifier_takes_a_service_token_only_from_that_services_key(keyring: Path) -> None:
    verifier = TokenVerifier(Settings.from_env({"CHAT_JWT_SECRET": "x" * 32, **keyring_env(keyring, "message")}))
    credentials = ServiceCredentials(
        Settings.from_env(keyring_env(keyring, "presence") | {"CHAT_JWT_SECRET": "x"}), "presence"
    )
    identity = verifier.verify(credentials.token())
    assert (identity.service, identity.user_id, identity.is_service) == ("presence", "service:presence", True)
    # The same key naming itself as another service: refused.
    liar = ServiceCredentials(Settings.from_env(keyring_env(keyring, "presence") | {"CHAT_JWT_SECRET": "x"}), "message")
    with pytest.raises(AuthError):
        verifier.verify(liar.token())
    # The edge verifies no service token at all: it holds no public key.
    edge = TokenVerifier(
        Settings.from_env({"CHAT_JWT_SECRET": "x" * 32, **keyring_env(keyring, "edge", verifies=False)})
    )
    with pytest.raises(AuthError):
        edge.verify(credentials.token())


# --- 2. the edge holds no key that signs another service's tokens -----------------------------------


def test_each_process_gets_its_own_key_and_the_edge_no_public_keys(mesh: Mesh, keyring: Path) -> None:
    for name in SERVICES:
        env = mesh.service_env(name)
        assert env["CHAT_SERVICE_KEY_FILE"] == str(keyring / f"{name}.key")
        others = [v for k, v in env.items() if k != "CHAT_SERVICE_KEY_FILE" and v.endswith(".key")]
        assert not others, (name, others)
        if name == "edge":
            assert "CHAT_SERVICE_PUBLIC_KEYS" not in env
        else:
            assert env["CHAT_SERVICE_PUBLIC_KEYS"] == str(keyring / "public")


def _start_fails(kind: str, env: dict[str, str], tmp_path: Path) -> str:
    """The output of a service process that must exit at start."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}, **env}
    if kind == "edge":
        env["CHAT_EDGE_PORT"] = str(free_port())
    else:
        env["CHAT_LISTEN_ADDR"] = f"127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", f"services.{kind}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_missing_key_is_a_start_error_naming_the_setting(
    mesh_env: dict[str, str], keyring: Path, tmp_path: Path
) -> None:
    base = {k: v for k, v in mesh_env.items() if k != "CHAT_SERVICE_KEYRING"}
    assert "CHAT_SERVICE_KEY_FILE is not set" in _start_fails("edge", base, tmp_path)
    assert "CHAT_SERVICE_KEY_FILE is not set" in _start_fails("presence", base, tmp_path)
    own_key_only = {**base, **keyring_env(keyring, "presence", verifies=False)}
    assert "CHAT_SERVICE_PUBLIC_KEYS is not set" in _start_fails("presence", own_key_only, tmp_path)


def test_keygen_makes_a_pair_per_service(tmp_path: Path) -> None:
    assert cli.main(["keygen", str(tmp_path / "keys")]) == 0
    for name in SERVICES:
        env = keyring_env(tmp_path / "keys", name)
        settings = Settings.from_env({"CHAT_JWT_SECRET": "x", **env})
        token = ServiceCredentials(settings, name).token()
        assert TokenVerifier(settings).verify(token).service == name
        assert (tmp_path / "keys" / f"{name}.key").stat().st_mode & 0o077 == 0


# --- 3. each internal RPC answers only its real callers ---------------------------------------------


@pytest.mark.parametrize(
    ("caller", "callee", "call"),
    [
        ("presence", "message", lambda s, md: s.StreamEvents(iter(()), metadata=md, timeout=5)),
        (
            "edge",
            "message",
            lambda s, md: s.ListMessageAuditEntries(
                message_pb2.ListMessageAuditEntriesRequest(conversation_id="c"), metadata=md, timeout=5
            ),
        ),
        (
            "edge",
            "conversation",
            lambda s, md: s.GetMembership(
                conversation_pb2.GetMembershipRequest(conversation_id="c"), metadata=md, timeout=5
            ),
        ),
        (
            "message",
            "conversation",
            lambda s, md: s.ListContacts(conversation_pb2.ListContactsRequest(user_id="u"), metadata=md, timeout=5),
        ),
        (
            "conversation",
            "presence",
            lambda s, md: s.ReportConnections(
                presence_pb2.ReportConnectionsRequest(edge_id="e"), metadata=md, timeout=5
            ),
        ),
        ("message", "presence", lambda s, md: s.StreamPresenceEvents(iter(()), metadata=md, timeout=5)),
        (
            "edge",
            "conversation",
            lambda s, md: s.ListConversations(  # a user RPC: no service acts as a user
                conversation_pb2.ListConversationsRequest(), metadata=md, timeout=5
            ),
        ),
    ],
)
async def test_a_service_off_the_list_is_refused(
    stubs: Stubs, service_metadata: Callable[[str], Metadata], caller: str, callee: str, call: Any
) -> None:
    refused = await _refused(lambda: call(stubs[callee], service_metadata(caller)))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED, refused
    assert error_code_of(refused) == "CALLER_NOT_ALLOWED"


async def test_a_listed_caller_is_served(stubs: Stubs, service_metadata: Callable[[str], Metadata]) -> None:
    reply = await stubs["conversation"].ListContacts(
        conversation_pb2.ListContactsRequest(user_id="nobody"), metadata=service_metadata("presence"), timeout=5
    )
    assert list(reply.user_ids) == []
    await stubs["presence"].DropConnections(
        presence_pb2.DropConnectionsRequest(edge_id="e"), metadata=service_metadata("edge"), timeout=5
    )


PROTOS = (conversation_pb2, message_pb2, presence_pb2, notification_pb2)
RPCS = {
    m.name: f"/{s.full_name}/{m.name}"
    for pb in PROTOS
    for s in pb.DESCRIPTOR.services_by_name.values()
    for m in s.methods
}
INTERNAL = {
    path
    for pb in PROTOS
    for s in pb.DESCRIPTOR.services_by_name.values()
    for m in s.methods
    if not m.GetOptions().HasExtension(annotations_pb2.http)
    for path in [f"/{s.full_name}/{m.name}"]
}


def _rpcs_in(node: ast.AST) -> set[str]:
    """The RPCs called in a piece of code: `<stub>.Method(...)` with an RPC's name."""
    return {
        RPCS[n.func.attr]
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in RPCS
    }


def _called_by(service: str) -> set[str]:
    """The RPCs a service's code calls: in its package, and in the shared chatmesh classes and
    functions it imports (a module's other names do not count: conversation imports
    chatmesh.membership's version counter, not its cache that calls GetMembership)."""
    called: set[str] = set()
    for source in (ROOT / "services" / service).rglob("*.py"):
        tree = ast.parse(source.read_text())
        called |= _rpcs_in(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chatmesh."):
                module = ROOT / (node.module or "").replace(".", "/")
                if not module.with_suffix(".py").exists():
                    continue
                shared = {
                    d.name: d
                    for d in ast.parse(module.with_suffix(".py").read_text()).body
                    if isinstance(d, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                }
                for alias in node.names:
                    if alias.name in shared:
                        called |= _rpcs_in(shared[alias.name])
    return called


def test_the_allow_list_is_exactly_the_callers_the_code_has() -> None:
    assert set(SERVICE_CALLERS) == INTERNAL, "every internal RPC has a row, and only they"
    called = {service: _called_by(service) for service in SERVICES}
    # The push workers are the host application's; `chatmesh push-worker` is the reference one.
    called["push"] = _rpcs_in(ast.parse((ROOT / "chatmesh_tools" / "push_worker.py").read_text()))
    for method, allowed in SERVICE_CALLERS.items():
        real = {service for service, methods in called.items() if method in methods}
        if method.endswith("/SubscribeEvents"):  # StreamEvents' one-user form: the edge's, no caller today
            real = {"edge"}
        assert allowed == real, (method, allowed, real)
