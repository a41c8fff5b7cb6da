"""The world one scenario controls: its PostgreSQL and Redis, the four services as real processes, and
the proxy the edge reaches the message service through.

A fresh world per scenario (about 5 s to start): a scenario that leaves something broken must not
turn the next one red. Services that die are restarted the way Kubernetes would (after ~2 s, again
with backoff if they exit on start), so a crash shows in the notes instead of wedging the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from chatmesh.auth import sign
from chatmesh.config import Settings
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import SERVICES, Mesh, kind_of
from tests.faultkit.proxy import Proxy
from tests.faultkit.stores import Postgres, Redis

# Production timings halved: retry and redelivery budgets stay well above a 2 s restart (at 0.25 the
# fan-out's whole retry budget, 2+4+8 s scaled, would be 3.5 s: shorter than a service's restart, so
# it would dead-letter what production would deliver), while recovery stays quick enough to measure.
TIME_SCALE = 0.5
RESTART_AFTER_S = 2.0
START_TIMEOUT_S = 60.0


@dataclass
class ProxiedMesh(Mesh):
    """The launcher's mesh, with the edge pointed at the proxy instead of the message service."""

    message_via: str = ""
    closed: bool = False  # set at teardown: a restart still in flight must not leave a process behind

    def spawn(self, name: str) -> None:
        if self.closed:
            raise RuntimeError(f"not starting {name}: the scenario is over")
        super().spawn(name)

    def service_env(self, name: str) -> dict[str, str]:
        env = super().service_env(name)
        if kind_of(name) == "edge" and self.message_via:
            env["CHAT_MESSAGE_TARGET"] = self.message_via
        return env


@dataclass
class Cluster:
    root: Path
    t0: float = 0.0  # when the fault began (monotonic); notes are stamped relative to it
    notes: list[str] = field(default_factory=list)
    postgres: Postgres = field(init=False)
    redis: Redis = field(init=False)
    proxy: Proxy = field(init=False)
    mesh: ProxiedMesh = field(init=False)
    settings: Settings = field(init=False)
    data_root: Path = field(init=False)  # PostgreSQL's and Redis's folders
    _down: set[str] = field(default_factory=set)  # services down on purpose (or being restarted)
    _paused: set[str] = field(default_factory=set)
    _watchdog: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        # The stores' data lives outside pytest's tmp_path: PostgreSQL runs as an unprivileged user
        # when we are root, and every pytest session that starts on this machine (another engineer's)
        # turns /tmp/pytest-of-root back to 0700, which made initdb and pg_ctl fail midway.
        self.data_root = Path(tempfile.mkdtemp(prefix="chatmesh-faults-"))
        self.data_root.chmod(0o755)
        log_dir = self.root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.postgres = Postgres(self.data_root / "postgres", free_port())
        self.redis = Redis(self.data_root / "redis", free_port(), log_dir / "redis.log")
        ports = {name: free_port() for name in SERVICES}
        self.proxy = Proxy(free_port(), ports["message"])
        env = {
            "CHAT_DATABASE_URL": self.postgres.url,
            "CHAT_REDIS_URL": self.redis.url,
            "CHAT_REDIS_PREFIX": "faults",
            "CHAT_JWT_SECRET": secrets.token_urlsafe(32),
            "CHAT_TIME_SCALE": str(TIME_SCALE),
            "CHAT_RATE_MESSAGES": "0",
            "CHAT_RATE_REST": "0",
            "CHAT_LOG_LEVEL": "INFO",
        }
        self.mesh = ProxiedMesh(
            env=env, ports=ports, log_dir=log_dir, message_via=f"ipv4:127.0.0.1:{self.proxy.listen_port}"
        )
        self.settings = Settings.from_env(env)

    @property
    def edge_url(self) -> str:
        return self.mesh.edge_url

    def token(self, user_id: str) -> str:
        return sign(self.settings, user_id)

    def now(self) -> float:
        return time.monotonic() - self.t0 if self.t0 else 0.0

    def note(self, text: str) -> None:
        self.notes.append(f"t={self.now():+.1f}s {text}")

    async def start(self) -> None:
        await asyncio.to_thread(self.postgres.start)
        await asyncio.to_thread(self.postgres.create_database)
        await asyncio.to_thread(self.redis.start)
        self.proxy.start()
        await asyncio.to_thread(self.mesh.start, timeout_s=START_TIMEOUT_S)
        self._watchdog = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.mesh.closed = True
        for name in list(self._paused):
            self.resume(name)
        self.mesh.stop(sig=signal.SIGKILL, timeout_s=5)
        self.proxy.stop()
        self.redis.stop()
        await asyncio.to_thread(self.postgres.stop)
        with contextlib.suppress(OSError):
            shutil.copy(self.postgres.log, self.mesh.log_dir / "postgres.log")
        shutil.rmtree(self.data_root, ignore_errors=True)  # ~50 MB each; the logs stay in tmp_path

    # faults on services -------------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        self._down.add(name)
        self._paused.discard(name)
        self.mesh.stop(name, sig=signal.SIGKILL, timeout_s=5)
        self.note(f"{name} killed (SIGKILL)")

    def pause(self, name: str) -> None:
        self.mesh.processes[name].send_signal(signal.SIGSTOP)
        self._paused.add(name)
        self.note(f"{name} stopped (SIGSTOP)")

    def resume(self, name: str) -> None:
        if name in self._paused and name in self.mesh.processes:
            self.mesh.processes[name].send_signal(signal.SIGCONT)
        self._paused.discard(name)
        self.note(f"{name} continued (SIGCONT)")

    async def restart(self, name: str) -> None:
        """Start it again and wait until it is healthy; if it exits on start, start it again with
        backoff, as a crash-looping pod would be."""
        self._down.add(name)
        delay = 1.0
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    await asyncio.to_thread(self.mesh.start, name, timeout_s=max(deadline - time.monotonic(), 1))
                    self.note(f"{name} restarted and healthy")
                    return
                except RuntimeError as exc:
                    first = str(exc).splitlines()[0]
                    self.note(f"{name} failed to start: {first}")
                    if self.mesh.closed or time.monotonic() + delay > deadline:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
        finally:
            self._down.discard(name)

    async def _watch(self) -> None:
        """Restart what exits on its own (after RESTART_AFTER_S), noting it: a service that crashes
        under a fault is a finding, and the rest of the scenario still runs."""
        while True:
            await asyncio.sleep(0.5)
            for name, process in list(self.mesh.processes.items()):
                if name in self._down or process.poll() is None:
                    continue
                self._down.add(name)
                self.note(f"{name} exited by itself with code {process.returncode}; restarting")
                self.mesh.processes.pop(name, None)
                asyncio.create_task(self._restart_later(name))

    async def _restart_later(self, name: str) -> None:
        await asyncio.sleep(RESTART_AFTER_S)
        try:
            await self.restart(name)
        except RuntimeError:
            self.note(f"{name} did not come back within {START_TIMEOUT_S:.0f}s")

    # evidence -----------------------------------------------------------------------------------------

    def log_lines(self, levels: tuple[str, ...] = ("ERROR", "CRITICAL"), limit: int = 12) -> list[str]:
        """The services' log lines at these levels, deduplicated by message (most frequent first)."""
        counts: dict[str, int] = {}
        for log in sorted(self.mesh.log_dir.glob("*.log")):
            for raw in log.read_text(errors="replace").splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    if "Traceback" in raw or "Error" in raw:
                        key = f"{log.stem}: {raw.strip()[:200]}"
                        counts[key] = counts.get(key, 0) + 1
                    continue
                if isinstance(line, dict) and line.get("level") in levels:
                    exc = str(line.get("exc", "")).strip().splitlines()
                    key = f"{log.stem}: {line.get('level')} {str(line.get('msg', ''))[:200]}"
                    key += f" [{exc[-1][:120]}]" if exc else ""
                    counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
        return [f"{text} (x{count})" for text, count in ranked]
