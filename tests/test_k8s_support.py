"""Shared by the production tests (drain, metrics, readiness, the manifests).

A private mesh gets a database of its own: meshes that share a database share its outboxes, and each
mesh's relay would publish every mesh's rows to its own Redis prefix, so a private mesh beside the
session's must not share the session's database.

deploy/k8s rendered with kustomize, and the few ways tests/test_k8s.py and
tests/test_k8s_security.py look into what it renders.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
TREES = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
Doc = dict[str, Any]


def kustomize() -> list[str]:
    if path := shutil.which("kustomize"):
        return [path, "build"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize"]
    pytest.fail("rendering deploy/k8s needs kustomize or kubectl (which embeds it) on PATH")


def render(path: Path) -> list[Doc]:
    result = subprocess.run([*kustomize(), str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def main_container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def config_of(docs: list[Doc]) -> dict[str, str]:
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("chatmesh-config")]
    assert len(maps) == 1
    return dict(maps[0]["data"])


def chatmesh_workloads(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(name, pod spec) of every workload running the chatmesh image."""
    for d in docs:
        if d["kind"] in ("Deployment", "Job", "StatefulSet"):
            spec = d["spec"]["template"]["spec"]
            if any("chatmesh" in c["image"] for c in spec["containers"]):
                yield d["metadata"]["name"], spec


@contextmanager
def private_database(postgres_server: str) -> Iterator[str]:
    name = f"chatmesh_private_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(postgres_server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
