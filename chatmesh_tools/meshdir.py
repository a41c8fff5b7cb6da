"""The data folder of a `chatmesh up` mesh, as the other commands find it.

`up` keeps its development secret (`jwt_secret`) and keyring (`service-keys/`) there, and while it runs
it writes `mesh.json`: the PostgreSQL and Redis URLs it gave the services (the embedded servers' own,
whose ports only `up` knows), the Redis prefix, every service's port and metrics port. `token`,
`migrate`, `dead-letter` and `status` read the folder the way `up` wrote it, so they meet the running
mesh without the user repeating its settings; a CHAT_* variable set in the shell still wins, which is
how the Kubernetes migration Job and a production operator use them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatmesh.service_keys import keyring_env

MESH_FILE = "mesh.json"
SECRET_FILE = "jwt_secret"
KEYRING_DIR = "service-keys"


class NoMesh(Exception):
    """The folder holds no mesh, or not what the command needs from one: a one-line, exit-2 error."""


def data_dir(value: str | None) -> Path:
    """The same default for every command: --data-dir, else $CHAT_DATA_DIR, else ./.chatmesh."""
    return Path(value or os.environ.get("CHAT_DATA_DIR") or ".chatmesh").resolve()


@dataclass(frozen=True)
class MeshInfo:
    """What `up` tells the other commands about the mesh it runs (mesh.json)."""

    database_url: str
    redis_url: str
    redis_prefix: str
    ports: dict[str, int]
    metrics_ports: dict[str, int] = field(default_factory=dict)
    keyring: str = ""
    pid: int = 0


def write(folder: Path, info: MeshInfo) -> Path:
    """Owner-only, since the URLs may carry passwords; replaced whole so a reader never sees half."""
    path = folder / MESH_FILE
    partial = folder / f".{MESH_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(asdict(info), indent=2))
    partial.chmod(0o600)
    partial.replace(path)
    return path


def read(folder: Path) -> MeshInfo | None:
    """The running mesh's settings, or None when `up` is not running in this folder (or never did)."""
    try:
        raw = json.loads((folder / MESH_FILE).read_text())
        return MeshInfo(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise NoMesh(f"{folder / MESH_FILE} is unreadable ({exc}); restart `chatmesh up`") from exc


def remove(folder: Path, pid: int) -> None:
    """Forget the mesh `up` process `pid` ran, and only that one: a second `up` that failed to start in
    the same folder must not hide the first, still running."""
    try:
        info = read(folder)
    except NoMesh:
        info = None
    if info is not None and info.pid == pid:
        (folder / MESH_FILE).unlink(missing_ok=True)


def has_mesh(folder: Path) -> bool:
    """A folder `up` has used: it made the secret there, or runs there now."""
    return (folder / SECRET_FILE).exists() or (folder / MESH_FILE).exists()


def existing_secret(folder: Path) -> str:
    """The development secret `up` made; never made here, so a token always matches a mesh."""
    try:
        return (folder / SECRET_FILE).read_text().strip()
    except FileNotFoundError:
        if (folder / MESH_FILE).exists():
            raise NoMesh(
                f"the mesh in {folder} signs with the CHAT_JWT_SECRET it was started with; set that variable here too"
            ) from None
        raise NoMesh(
            f"{folder} holds no mesh (no {SECRET_FILE}): start one with `chatmesh up --data-dir {folder}`"
            " or pass the --data-dir it uses"
        ) from None


def tool_env(folder: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a tool runs with: the shell's CHAT_* variables, and for what they leave unset
    the running mesh's database, Redis and prefix from mesh.json."""
    env = dict(os.environ if environ is None else environ)
    info = read(folder)
    if info is not None:
        for key, value in (
            ("CHAT_DATABASE_URL", info.database_url),
            ("CHAT_REDIS_URL", info.redis_url),
            ("CHAT_REDIS_PREFIX", info.redis_prefix),
        ):
            if value and not env.get(key):
                env[key] = value
    return env


def service_env(folder: Path, service: str) -> dict[str, str]:
    """The settings a service started by hand needs to join the running mesh: its servers (tool_env),
    the secret, its own key from the mesh's keyring and the other services' targets; the shell's
    CHAT_* variables win."""
    info = read(folder)
    if info is None:
        raise NoMesh(f"no mesh runs in {folder} to join (`chatmesh up` writes {MESH_FILE} there while it runs)")
    env = tool_env(folder)
    found = {
        "CHAT_JWT_SECRET": existing_secret(folder) if not env.get("CHAT_JWT_SECRET") else "",
        **keyring_env(keyring(folder), service, verifies=service != "edge"),
        **{f"CHAT_{name.upper()}_TARGET": f"127.0.0.1:{port}" for name, port in info.ports.items() if name != "edge"},
    }
    return {
        **{key: value for key, value in found.items() if value and not env.get(key)},
        **{key: env[key] for key in ("CHAT_DATABASE_URL", "CHAT_REDIS_URL", "CHAT_REDIS_PREFIX") if key in env},
    }


def keyring(folder: Path) -> Path:
    """The keyring the mesh's services sign with: mesh.json's, else CHAT_SERVICE_KEYRING, else the folder's."""
    info = read(folder)
    if info is not None and info.keyring:
        return Path(info.keyring)
    return Path(os.environ.get("CHAT_SERVICE_KEYRING") or folder / KEYRING_DIR)
