"""A socket's message sends are answered in the order it sent them while its acknowledgements are
handled meanwhile; a socket whose user directory is overloaded or down is told to try again later
(1013)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from services.edge.ws import CLOSE_TRY_AGAIN_LATER
from tests.helpers import Socket, collect, direct_conversation, new_user_id, register

SENDS = 20


async def test_sends_keep_their_order_while_acks_are_answered(mesh: Mesh, http: httpx.AsyncClient, make_token) -> None:  # type: ignore[no-untyped-def]
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    sender = await Socket.open(mesh.edge_url, make_token(alice))
    reader = await Socket.open(mesh.edge_url, make_token(bob))
    for n in range(SENDS):
        await sender.ws.send(
            json.dumps(
                {
                    "type": "chat:message_send",
                    "id": f"s{n}",
                    "data": {"conversation_id": conversation_id, "content": f"m{n}", "client_message_id": f"c{n}"},
                }
            )
        )
    await sender.ws.send(json.dumps({"type": "events_ack", "id": "ack", "data": {"event_ids": ["nothing"]}}))

    answers: list[dict] = []
    async with asyncio.timeout(20):
        while len(answers) < SENDS + 1:
            frame = await sender.recv()
            if frame.get("id") is not None:
                answers.append(frame)
    ids = [a["id"] for a in answers]
    assert ids.index("ack") < ids.index(f"s{SENDS - 1}"), ids  # not held behind the socket's own sends
    sends = [a for a in answers if a["id"] != "ack"]
    assert [a["id"] for a in sends] == [f"s{n}" for n in range(SENDS)]  # answered in the order sent
    assert all(a["type"] == "ack" for a in sends), sends
    seqs = [int(a["data"]["message"]["seq"]) for a in sends]
    assert seqs == sorted(seqs) and len(set(seqs)) == SENDS  # and stored in that order
    received = await collect(reader, "chat:message_received", SENDS)
    assert [f["data"]["content"] for f in received] == [f"m{n}" for n in range(SENDS)]


@pytest.fixture
def mesh_without_directory(isolated_env: Callable[..., dict[str, str]], tmp_path: Path) -> Iterator[Mesh]:
    """A mesh whose conversation service (the user directory) is not running."""
    mesh = Mesh(
        env=isolated_env(),
        ports={n: free_port() for n in ("conversation", "message", "presence", "edge")},
        log_dir=tmp_path / "logs",
    )
    mesh.start("message", "presence", "edge")
    yield mesh
    mesh.stop()


async def test_an_unreachable_user_directory_closes_with_1013(mesh_without_directory: Mesh, make_token) -> None:
    ws = await connect(mesh_without_directory.edge_url.replace("http://", "ws://") + "/ws")
    await ws.send(json.dumps({"type": "auth", "data": {"token": make_token(new_user_id("early"))}}))
    frame = json.loads(await asyncio.wait_for(ws.recv(), 20))  # after the UpsertUser deadline (5 s)
    assert frame["type"] == "error" and frame["data"]["code"] == "UNAVAILABLE"
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TRY_AGAIN_LATER
