"""What bench measures: a mesh it starts itself (embedded PostgreSQL and Redis in a temporary folder,
services on free ports, exactly as `chatmesh up` runs them) or one already running at --url."""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from chatmesh.auth import sign
from chatmesh.config import Settings
from chatmesh_tools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from chatmesh_tools.launcher import Mesh

NOFILE_WANTED = 200_000  # 50,000 sockets at an edge and at the load generator, with room to spare

# What --no-rate-limits sets for the bench's own mesh. `0` means "no limit" for the per-user limits
# and the per-socket frame budgets (chatmesh/config.py `_rate`, services/edge/frame_limits.py); the
# per-socket frames-per-second rule (and its flood close at 4x) has no "off", so it gets a bound no
# load generator socket reaches.
NO_RATE_LIMITS = {
    "CHAT_RATE_MESSAGES": "0",
    "CHAT_RATE_REST": "0",
    "CHAT_WS_MAX_FRAMES_PER_S": "1000000",
    "CHAT_WS_RATE_PRESENCE": "0",
    "CHAT_WS_RATE_TYPING": "0",
    "CHAT_WS_RATE_RECEIPTS": "0",
    "CHAT_WS_RATE_ACKS": "0",
}


def raise_nofile(wanted: int = NOFILE_WANTED) -> int:
    """Raise this process's open-file limit as far as allowed (children inherit it); returns it.

    The soft limit goes to the hard one; as root (CAP_SYS_RESOURCE) the hard limit itself is raised to
    `wanted` first (at most fs.nr_open), since a box's default hard limit (often 20,000 or less) is
    below 50,000 sockets plus the edge's own files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            ceiling = wanted
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, ceiling), min(wanted, ceiling)))
        except (ValueError, OSError):
            pass  # not privileged: the hard limit stays
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def replica_names(kind: str, count: int) -> list[str]:
    """`message`, `message-2`, ...: the launcher's names for replicas of one service."""
    return [kind if i == 0 else f"{kind}-{i + 1}" for i in range(max(1, count))]


@dataclass
class Target:
    url: str
    jwt_secret: str
    database_url: str = ""
    redis_url: str = ""
    redis_prefix: str = "chat"
    pids: dict[str, int] = field(default_factory=dict)  # process name -> pid, for CPU and RSS
    edge_urls: list[str] = field(default_factory=list)  # every edge, `url` first; sockets spread over them
    # Instance name (`message-2`, `edge`) -> its Prometheus /metrics URL, scraped for each one's share.
    metrics_urls: dict[str, str] = field(default_factory=dict)
    limits_lifted: bool = False
    _mesh: Mesh | None = None
    _embedded: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)
    _tmp: Path | None = None
    _cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return _ws(self.url)

    @property
    def ws_urls(self) -> list[str]:
        """Every edge's WebSocket URL: the load generator spreads its sockets over them round robin."""
        return [_ws(u) for u in (self.edge_urls or [self.url])]

    def token(self, user_id: str, ttl_s: int = 6 * 3600) -> str:
        settings = Settings.from_env({"CHAT_JWT_SECRET": self.jwt_secret})
        return sign(settings, user_id, ttl_s=ttl_s, name=user_id)

    def stop(self) -> None:
        if self._mesh:
            self._mesh.stop()
            self._mesh = None
        for server in reversed(self._embedded):
            server.stop()
        self._embedded.clear()
        for step in self._cleanup:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                print(f"bench cleanup: {exc}", file=sys.stderr)
        self._cleanup.clear()
        if self._tmp and not os.environ.get("CHAT_BENCH_KEEP"):
            shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def log_dir(self) -> Path | None:
        return self._mesh.log_dir if self._mesh else None


def _ws(url: str) -> str:
    return url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/ws"


def _pid_of_postmaster(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _fresh_database(server_url: str) -> str:
    import psycopg

    name = f"chatmesh_bench_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def _drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    server = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


def start_embedded(
    extra_env: dict[str, str] | None = None,
    database_server: str = "",
    redis_server: str = "",
    *,
    message_replicas: int = 1,
    edges: int = 1,
    no_rate_limits: bool = False,
) -> Target:
    """The four services on free ports, on embedded PostgreSQL and Redis in a temp folder; or on the
    given servers, in a fresh database and under a fresh Redis key prefix (both removed at the end).

    With several message replicas or edges, each instance has ports of its own and every caller
    reaches all replicas of a service through one round-robin `ipv4:` target (the launcher's wiring,
    as in tests/test_delivery_faults.py); each message replica serves /metrics on a port of its own."""
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="chatmesh-bench-"))
    target = Target(url="", jwt_secret=secrets.token_urlsafe(32), _tmp=tmp)
    try:
        if database_server:
            target.database_url = _fresh_database(database_server)
            target._cleanup.append(lambda: _drop_database(target.database_url))
        else:
            pg = EmbeddedPostgres(tmp / "postgres", free_port())
            target._embedded.append(pg)
            target.database_url = pg.start()
            if pid := _pid_of_postmaster(pg.data_dir / "pgdata"):
                target.pids["postgres"] = pid  # its backends are its children, counted with it
        if redis_server:
            target.redis_url = redis_server
            target.redis_prefix = f"bench-{secrets.token_hex(6)}"
            target._cleanup.append(lambda: _drop_prefix(target.redis_url, target.redis_prefix))
        else:
            rd = EmbeddedRedis(tmp / "redis", free_port())
            target._embedded.append(rd)
            target.redis_url = rd.start()
            if rd._process:
                target.pids["redis"] = rd._process.pid
        env = {
            "CHAT_JWT_SECRET": target.jwt_secret,
            "CHAT_DATABASE_URL": target.database_url,
            "CHAT_REDIS_URL": target.redis_url,
            "CHAT_REDIS_PREFIX": target.redis_prefix,
            **(NO_RATE_LIMITS if no_rate_limits else {}),
            **(extra_env or {}),
        }
        target.limits_lifted = no_rate_limits
        messages, edge_names = replica_names("message", message_replicas), replica_names("edge", edges)
        ports = {name: free_port() for name in ("conversation", *messages, "presence", *edge_names)}
        mesh = Mesh(env=env, ports=ports, log_dir=tmp / "logs", metrics_ports={name: free_port() for name in messages})
        target._mesh = mesh
        mesh.start()
        target.url = mesh.edge_url
        target.edge_urls = [mesh.url_of(name) for name in edge_names]
        target.metrics_urls = {
            **{name: f"http://127.0.0.1:{port}/metrics" for name, port in mesh.service_metrics_ports.items()},
            **{name: f"{mesh.url_of(name)}/metrics" for name in edge_names},
        }
        target.pids = {**{name: p.pid for name, p in mesh.processes.items()}, **target.pids}
        return target
    except BaseException:
        target.stop()
        raise


def external(
    url: str, jwt_secret: str, database_url: str = "", redis_url: str = "", redis_prefix: str = "chat"
) -> Target:
    raise_nofile()
    return Target(
        url=url.rstrip("/"),
        edge_urls=[url.rstrip("/")],
        metrics_urls={"edge": url.rstrip("/") + "/metrics"},
        jwt_secret=jwt_secret,
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
    )
