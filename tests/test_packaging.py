"""A wheel install is a whole mesh: the wheel carries the browser page as package data (the edge of a
wheel install serves it at `/`), and declares what `chatmesh_client` imports (httpx).

The wheel is built from a copy of the sources (so the tree's own build/ folder cannot leak into it)
and installed with --no-deps into a fresh venv that sees this venv's site-packages for the
dependencies, but not its editable install of the project (a path listed in a .pth file has its own
.pth files ignored), so every import of chatmesh, services and chatmesh_client comes from the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmesh.service_keys import keyring_env
from chatmesh_tools.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
PAGE = sorted(p.name for p in (ROOT / "clients" / "web").iterdir() if p.is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in (
        "chatmesh",
        "chatmesh_tools",
        "services",
        "clients/python",
        "clients/web",
    ):  # what the Dockerfile copies
        shutil.copytree(
            ROOT / folder,
            src / folder,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        )
    # No build isolation: this venv's setuptools builds it offline, in seconds.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = dist.glob("chatmesh-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield python


def test_the_wheel_carries_the_page_and_the_client(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert PAGE and {f"services/edge/page/{name}" for name in PAGE} <= names
    assert {"chatmesh_client/__init__.py", "services/edge/web.py", "chatmesh_tools/cli.py"} <= names


def test_the_wheel_carries_the_api_docs_assets(wheel: Path) -> None:
    """/docs and /favicon.ico (services/edge/assets) and the proto comments /openapi.json is written from."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = {f"services/edge/assets/{n}" for n in ("docs.html", "redoc.standalone.js", "favicon.ico", "redoc.LICENSE")}
    assert assets | {"chatmesh/gen/chat/v1/comments.json", "services/edge/asyncapi.py"} <= names


def test_the_installed_wheel_finds_its_page_and_declares_httpx(fresh_python: Path) -> None:
    code = """if True:
        import importlib.metadata, json, sys, chatmesh_client, services.edge.web as web
        print(json.dumps({"prefix": sys.prefix, "page": str(web.page_dir()), "client": chatmesh_client.__file__,
                          "requires": importlib.metadata.requires("chatmesh")}))"""
    import json

    out = subprocess.run(
        [str(fresh_python), "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    found = json.loads(out.stdout)
    prefix = found["prefix"]
    assert found["page"].startswith(prefix) and sorted(p.name for p in Path(found["page"]).iterdir()) == PAGE
    assert found["client"].startswith(prefix)
    assert any(req.split(">")[0].split("<")[0].split("=")[0].strip() == "httpx" for req in found["requires"])


def test_the_edge_of_a_wheel_install_serves_the_page(fresh_python: Path, keyring: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHAT_") and k != "PYTHONPATH"},
        "CHAT_JWT_SECRET": "x" * 32,
        "CHAT_EDGE_PORT": str(port),
        **keyring_env(keyring, "edge", verifies=False),
    }
    log = tmp_path / "edge.log"
    with open(log, "wb") as out:
        edge = subprocess.Popen(
            [str(fresh_python), "-m", "services.edge"], env=env, cwd="/", stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    assert reply.status == 200 and b"<html" in reply.read().lower()
                    break
            except OSError:
                assert edge.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
    finally:
        edge.terminate()
        edge.wait(30)
