"""docs/websocket.md is the frame reference: it names every frame, error code and close code the
contract lists, and its raw client, run verbatim against a mesh, receives a message, acknowledges it,
and on its next connection does not receive it again."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import httpx

from chatmesh_tools.launcher import Mesh
from services.edge.frame_catalog import CLOSE_CODES, EDGE_ERROR_CODES, FRAMES
from tests.helpers import bearer, direct_conversation, new_user_id, register, send

DOC = Path(__file__).resolve().parents[1] / "docs" / "websocket.md"


def raw_client() -> str:
    """The first Python block under the page's "A raw client" heading, as written."""
    section = DOC.read_text().split("\n## A raw client\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]  # type: ignore[index]


def test_the_page_names_every_frame_error_and_close_code() -> None:
    text = DOC.read_text()
    missing = [f.type for f in FRAMES if f"`{f.type}`" not in text]
    missing += [c for c in EDGE_ERROR_CODES if f"`{c}`" not in text]
    missing += [str(c) for c in CLOSE_CODES if f"| {c} |" not in text]
    assert not missing, missing
    assert len([line for line in raw_client().splitlines() if line.strip()]) <= 16  # "ten lines", give or take


async def _run_client(path: Path, url: str, token: str, on_ready: Any = None) -> list[str]:
    """Run the raw client as a user would (its own process); call `on_ready` once it printed `ready`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(path), url, token, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    lines = []
    try:
        async with asyncio.timeout(30):
            while line := (await process.stdout.readline()).decode():
                lines.append(line.strip())
                if '"ready"' in line and on_ready is not None:
                    await on_ready()
            assert await process.wait() == 0, (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return lines


async def _delivered(http: httpx.AsyncClient, token: str, conversation_id: str, message_id: str) -> None:
    """Wait until the sender sees the message delivered: the acknowledgement moved bob's position."""
    async with asyncio.timeout(15):
        while True:
            page = (await http.get(f"/api/messages/{conversation_id}", headers=bearer(token))).json()
            if any(
                m["message_id"] == message_id and m["status"] == "MESSAGE_STATUS_DELIVERED" for m in page["messages"]
            ):
                return
            await asyncio.sleep(0.05)


async def test_the_raw_client_acknowledges_and_is_not_sent_the_message_again(
    mesh: Mesh, http: httpx.AsyncClient, make_token: Any, tmp_path: Path
) -> None:
    path = tmp_path / "raw_client.py"
    path.write_text(raw_client())
    url = mesh.edge_url.replace("http://", "ws://") + "/ws"
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    await register(http, bob_token)
    conversation_id = await direct_conversation(http, alice_token, bob)
    first = await send(http, alice_token, conversation_id, "while you were away")

    lines = await _run_client(path, url, bob_token)  # gets it from the offline buffer, and acknowledges it
    assert lines[-1] == f"{alice} says while you were away", lines
    await _delivered(http, alice_token, conversation_id, first["message_id"])

    async def alice_sends() -> None:
        await send(http, alice_token, conversation_id, "and now")

    # Reconnected (no token): had the first message not been acknowledged, the offline buffer would
    # give it again, before anything newer; the client prints the first message it gets.
    lines = await _run_client(path, url, bob_token, on_ready=alice_sends)
    assert lines[-1] == f"{alice} says and now", lines
