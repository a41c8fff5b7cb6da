"""`chatmesh status`: is the mesh in a data folder well, and is delivery keeping up?

Each service's health (the gRPC health service, the edge's /healthz), then the three numbers that say
delivery is behind: the outbox rows not yet published to the events streams (per schema), the events
fan-out has read but not acknowledged (summed over the K partitions, and the pre-partitioning stream
while an upgrade has left it), and the events it gave up on (the dead-letter stream). They
are read from PostgreSQL and Redis directly rather than scraped from /metrics, so they answer
whether or not metrics ports are set.
"""

from __future__ import annotations

import asyncio
import importlib
import urllib.error
import urllib.request
from dataclasses import dataclass

import grpc
import psycopg
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatmesh.redis_conn import DEFAULT_PARTITIONS, Keys, open_redis
from chatmesh.tls import ClientTls
from chatmesh_tools.launcher import kind_of
from chatmesh_tools.meshdir import MeshInfo

FANOUT_GROUP = "fanout"  # services/message/delivery/fanout.py GROUP
SCHEMA_OWNERS = ("conversation", "message")


@dataclass(frozen=True)
class Report:
    health: dict[str, str]  # instance name -> SERVING, NOT_SERVING, unreachable
    outbox: dict[str, int | str]  # schema -> unpublished rows, or why it could not be counted
    fanout_pending: int | str
    dead_letters: int | str

    @property
    def healthy(self) -> bool:
        return all(state == "SERVING" for state in self.health.values())


def _health(name: str, port: int, tls: ClientTls | None) -> str:
    if kind_of(name) == "edge":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                return "SERVING" if reply.status == 200 else f"HTTP {reply.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except OSError:
            return "unreachable"
    target = f"127.0.0.1:{port}"
    with (
        grpc.secure_channel(target, tls.credentials, options=tls.options()) if tls else grpc.insecure_channel(target)
    ) as channel:
        try:
            # types-grpcio-health-checking's HealthStub declares no methods (grpc adds them at run time).
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)  # type: ignore[attr-defined]
        except grpc.RpcError as exc:
            return "unreachable" if exc.code() == grpc.StatusCode.UNAVAILABLE else exc.code().name
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def _outbox(database_url: str) -> dict[str, int | str]:
    backlog: dict[str, int | str] = {}
    try:
        async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=5) as conn:
            for owner in SCHEMA_OWNERS:
                schema = importlib.import_module(f"services.{owner}.store").SCHEMA
                try:
                    # Capped as the relay's gauge is (chatmesh/outbox.py): a huge backlog is counted fast.
                    cur = await conn.execute(
                        f'SELECT count(*) FROM (SELECT 1 FROM "{schema}".outbox'
                        " WHERE published_at IS NULL LIMIT 1000000) AS unpublished"
                    )
                    row = await cur.fetchone()
                    backlog[schema] = int(row[0]) if row else 0
                except psycopg.errors.UndefinedTable:
                    await conn.rollback()
                    backlog[schema] = "not migrated"
    except (OSError, psycopg.Error) as exc:
        return {
            owner: f"unavailable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            for owner in SCHEMA_OWNERS
        }
    return backlog


async def _streams(redis_url: str, keys: Keys) -> tuple[int | str, int | str]:
    client = open_redis(redis_url)
    try:
        pending = 0
        for stream in [*keys.event_streams, keys.legacy_events]:
            try:
                pending += int((await client.xpending(stream, FANOUT_GROUP))["pending"])
            except redis.ResponseError:  # NOGROUP: fan-out has not started on this stream yet
                pass
        return pending, int(await client.xlen(keys.dead_letter))
    except (OSError, redis.RedisError) as exc:
        return (f"unavailable ({exc})",) * 2
    finally:
        await client.aclose()


def gather(
    info: MeshInfo,
    database_url: str,
    redis_url: str,
    prefix: str,
    tls: ClientTls | None = None,
    partitions: int = DEFAULT_PARTITIONS,
) -> Report:
    """`tls`: the mesh's client certificate when it runs with mTLS (CHAT_TLS_* in the shell, as for `up`);
    `partitions`: the mesh's CHAT_FANOUT_PARTITIONS."""
    health = {name: _health(name, port, tls) for name, port in info.ports.items()}

    async def numbers() -> tuple[dict[str, int | str], tuple[int | str, int | str]]:
        return await asyncio.gather(_outbox(database_url), _streams(redis_url, Keys(prefix, partitions)))

    outbox, (pending, dead) = asyncio.run(numbers())
    return Report(health=health, outbox=outbox, fanout_pending=pending, dead_letters=dead)


def render(info: MeshInfo, report: Report) -> str:
    width = max(len(name) for name in info.ports)
    lines = []
    for name, port in info.ports.items():
        where = f"http://127.0.0.1:{port}" if kind_of(name) == "edge" else f"127.0.0.1:{port}"
        metrics = info.metrics_ports.get(name)
        lines.append(
            f"{name:<{width}}  {report.health[name]:<11}  {where}"
            + (f"  metrics http://127.0.0.1:{metrics}/metrics" if metrics else "")
        )
    lines.append("outbox backlog: " + ", ".join(f"{schema} {count}" for schema, count in report.outbox.items()))
    lines.append(f"fan-out pending: {report.fanout_pending}")
    lines.append(
        f"dead letters: {report.dead_letters}"
        + ("  (chatmesh dead-letter list)" if isinstance(report.dead_letters, int) and report.dead_letters else "")
    )
    return "\n".join(lines)
