"""Service identity keys: which process may speak as which service.

Each process signs its service tokens with its own Ed25519 private key (CHAT_SERVICE_KEY_FILE), and
each gRPC service verifies them with its callers' public keys (CHAT_SERVICE_PUBLIC_KEYS, a folder of
`<service>.pub` files). Asymmetric on purpose: a verifier holds nothing that can sign, so no pod
holds a key that mints another service's tokens. The internet-facing edge holds only `edge.key`: if
it is taken over, it can speak as the edge and nothing more (and the edge's RPCs are allow-listed,
chatmesh/grpc_server.py).

The file name is the identity: `message.pub` verifies the tokens of the service `message` and no
other. `message.<label>.pub` beside it is a second key of the same service, so a rotation publishes
the new public key first, then switches the signer (docs/security.md).

For `chatmesh up` and the tests, `ensure_keyring` makes a development keyring: `<folder>/<service>.key`
and `<folder>/public/<service>.pub` for every service, on first use.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chatmesh.config import ENV_VARS, ConfigError

KEY_FILE_VAR = "CHAT_SERVICE_KEY_FILE"
PUBLIC_KEYS_VAR = "CHAT_SERVICE_PUBLIC_KEYS"
_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_PUBLIC_FILE = re.compile(r"(?P<service>[a-z][a-z0-9-]{0,62})(?:\.[A-Za-z0-9_-]+)?\.pub")


def load_private_key(path: str | None) -> Ed25519PrivateKey:
    """This process's signing key; a missing or wrong file is a start-up error naming the setting."""
    if not path:
        raise ConfigError(f"{KEY_FILE_VAR} is not set: {ENV_VARS[KEY_FILE_VAR]}")
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{KEY_FILE_VAR}={path!r} is not a readable PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{KEY_FILE_VAR}={path!r} must be an Ed25519 key (openssl genpkey -algorithm ed25519)")
    return key


def load_public_keys(folder: str | None) -> dict[str, list[Ed25519PublicKey]]:
    """The callers' public keys by service name, from `<service>[.<label>].pub` files (others ignored,
    such as the `..data` links of a mounted Kubernetes volume)."""
    if not folder:
        raise ConfigError(f"{PUBLIC_KEYS_VAR} is not set: {ENV_VARS[PUBLIC_KEYS_VAR]}")
    keys: dict[str, list[Ed25519PublicKey]] = {}
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError as exc:
        raise ConfigError(f"{PUBLIC_KEYS_VAR}={folder!r} is not a readable folder: {exc}") from exc
    for entry in entries:
        match = _PUBLIC_FILE.fullmatch(entry.name)
        if not match or not entry.is_file():
            continue
        try:
            key = serialization.load_pem_public_key(entry.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{PUBLIC_KEYS_VAR}: {entry} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{PUBLIC_KEYS_VAR}: {entry} must be an Ed25519 public key")
        keys.setdefault(match.group("service"), []).append(key)
    if not keys:
        raise ConfigError(f"{PUBLIC_KEYS_VAR}={folder!r} holds no <service>.pub file")
    return keys


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_keyring(folder: Path, services: Iterable[str]) -> Path:
    """A key pair per service in `folder`, made for those that lack one (under a lock, so meshes
    started side by side agree on the keys). Development and tests only: production mounts keys."""
    public = folder / "public"
    public.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for service in services:
            if not _NAME.fullmatch(service):
                raise ValueError(f"not a service name: {service!r}")
            private_file, public_file = folder / f"{service}.key", public / f"{service}.pub"
            if private_file.exists() and public_file.exists():
                continue
            key = Ed25519PrivateKey.generate()
            _write(private_file, private_pem(key), 0o600)
            _write(public_file, public_pem(key), 0o644)
    return folder


def keyring_env(folder: Path, service: str, *, verifies: bool = True) -> dict[str, str]:
    """The settings of one process of a development keyring: its own private key and, for a service
    that answers calls (not the edge), the folder of public keys."""
    env = {KEY_FILE_VAR: str(folder / f"{service}.key")}
    if verifies:
        env[PUBLIC_KEYS_VAR] = str(folder / "public")
    return env


def _write(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all: a reader never sees half a key."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.chmod(mode)
    partial.replace(path)
