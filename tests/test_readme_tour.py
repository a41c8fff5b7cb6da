"""The README's tour, run as a reader copies it: every code block marked ```sh tour or ```python tour,
verbatim and in order, in one bash shell against a real `chatmesh up` (on free ports, in a data folder
of its own, named by the tour's own EDGE and DATA variables), the Python example saved as tour.py and
run twice. What each block prints is checked: the conversation, the message sent and found in the
history, the photo's message, and the Python client printing the new message it sent on each run."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chatmesh_tools.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARKER = "@@ tour block {} @@"


@dataclass(frozen=True)
class Block:
    lang: str
    tour: bool
    code: str


def tour_section() -> str:
    text = README.read_text()
    return text[text.index("## A 60-second tour") : text.index("## Looking at a running mesh")]


def blocks(text: str) -> list[Block]:
    return [Block(m.group(1), m.group(2).split() == ["tour"], m.group(3)) for m in BLOCK.finditer(text)]


def test_every_command_of_the_tour_is_marked_to_run() -> None:
    """Nothing a reader copies escapes the run below: in the tour, only the interactive WebSocket
    session (a transcript of what one types and sees) is not a `tour` block."""
    found = blocks(tour_section())
    exempt = [b for b in found if not b.tour]
    assert [b.code.splitlines()[0] for b in exempt] == ['python3 -m websockets "${EDGE/http/ws}/ws"']
    assert {b.lang for b in found if b.tour} == {"sh", "python"}
    assert len([b for b in found if b.tour and b.lang == "python"]) == 1
    assert not [b for b in blocks(README.read_text()) if b.tour and b not in found], "tour blocks outside the tour"


def clean_env(**extra: str) -> dict[str, str]:
    """A newcomer's shell: no CHAT_* settings; this checkout's code, and the venv's commands first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "clients" / "python"), env.get("PYTHONPATH")]))
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, "PYTHONPATH": pythonpath, "PATH": path, **extra}


@pytest.fixture(scope="module")
def up(
    tmp_path_factory: pytest.TempPathFactory, make_database: Callable[[], str], redis_server: str
) -> Iterator[tuple[str, Path]]:
    """`chatmesh up` on free ports in a data folder of its own (the test servers stand in for the
    embedded ones). Yields the tour's EDGE and DATA."""
    data_dir = tmp_path_factory.mktemp("tour") / "data"
    ports = {name: free_port() for name in ("conversation", "message", "presence", "edge")}
    env = clean_env(
        CHAT_DATABASE_URL=make_database(), CHAT_REDIS_URL=redis_server, CHAT_REDIS_PREFIX=f"tour-{secrets.token_hex(4)}"
    )
    log = data_dir.parent / "up.out"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatmesh_tools.cli",
                "up",
                "--data-dir",
                str(data_dir),
                *(f"--{name}-port={port}" for name, port in ports.items()),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{ports['edge']}", data_dir
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def json_lines(output: str) -> list[Any]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_the_readme_tour_runs_as_written(up: tuple[str, Path], tmp_path: Path) -> None:
    edge, data_dir = up
    found = [b for b in blocks(tour_section()) if b.tour]
    (python,) = [b for b in found if b.lang == "python"]
    (tmp_path / "tour.py").write_text(python.code)  # "Save as tour.py"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(tmp_path / "cat.png")  # "any cat.png in the current folder"
    shell = [b.code for b in found if b.lang == "sh"]
    assert shell[-1].strip().startswith("python3 tour.py")
    shell.append(shell[-1])  # the Python example once more: a new message again, not the last one
    script = "set -euo pipefail\n" + "".join(f"echo '{MARKER.format(i)}'\n{code}" for i, code in enumerate(shell))

    run = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(EDGE=edge, DATA=str(data_dir)),
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    parts = re.split(r"^@@ tour block \d+ @@$\n", run.stdout, flags=re.MULTILINE)[1:]
    assert len(parts) == len(shell), run.stdout
    first, send, photo, tour_1, tour_2 = parts

    (bob,) = json_lines(first)
    assert bob["user"]["user_id"] == "bob"
    cid = re.fullmatch(r"conversation ([0-9a-f-]{36})\n", first.split("\n", 1)[1])
    assert cid, first
    conversation_id = cid.group(1)

    sent, history = json_lines(send)
    assert sent["message"]["content"] == "hi" and sent["message"]["sender_id"] == "alice"
    assert sent["message"]["conversation_id"] == conversation_id
    assert sent["message"]["message_id"] in [m["message_id"] for m in history["messages"]]

    (with_photo,) = json_lines(photo)
    (attachment,) = with_photo["message"]["attachments"]
    assert attachment["content_type"] == "image/png" and attachment["filename"] == "cat.png"

    seqs = []
    for output in (tour_1, tour_2):
        stored = re.fullmatch(
            r"stored as seq (\d+)\nbob got seq (\d+) from alice: hi from Python at [\d:]{8}\n", output
        )
        assert stored and stored.group(1) == stored.group(2), output  # bob printed the message just sent
        seqs.append(int(stored.group(1)))
    assert seqs[1] == seqs[0] + 1 == 4  # "hi", the photo, then one new message per run
