"""PostgreSQL: an async connection pool and each service's numbered migrations.

A service owns one schema and a folder of `NNNN_name.sql` files. They are applied in order on start,
each in its own transaction, recorded in `<schema>.schema_migrations`, under an advisory lock so
replicas starting together apply each file once.

Every call on the pool is bounded, so a lost or stalled PostgreSQL becomes an error the interceptor
answers UNAVAILABLE / DEADLINE_EXCEEDED within seconds instead of a request that hangs: waiting for a
connection (`POOL_TIMEOUT_S`, then PoolTimeout), connecting (`connect_timeout`), a peer that vanished
without closing (TCP keepalives), and a statement that runs too long (`statement_timeout`, set per
session rather than as a startup option, so PgBouncer in front does not refuse it). Migrations use a
connection of their own without a statement timeout: a migration may legitimately run long.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)


POOL_TIMEOUT_S = 5.0  # a request waits this long for a connection, then fails (PoolTimeout)
STATEMENT_TIMEOUT_MS = 10_000  # no request-path statement comes near it; one that does is a stall
# libpq's connect_timeout (whole seconds), and keepalives that find a dead peer in ~1 min, not ~2 h.
CONNECT_KWARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


async def open_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    name: str = "chatmesh",
    timeout_s: float = POOL_TIMEOUT_S,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
) -> AsyncConnectionPool:
    """A pool whose every call is bounded (see the module docstring); opening waits up to 30 s."""

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(statement_timeout_ms),))

    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=name,
        timeout=timeout_s,
        configure=configure,
        kwargs={"autocommit": True, **CONNECT_KWARGS},
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def migrate(url: str, schema: str, folder: Path, *, shared_ddl: Sequence[str] = ()) -> list[str]:
    """Apply the folder's pending migrations to `schema`; returns the names applied.

    `shared_ddl`: idempotent DDL of tables a shared module owns in the schema (chatmesh.outbox.DDL),
    run on every migrate before the folder's files, so a new schema has them before its own files use
    them and an existing one is left as it is."""
    files = sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, **CONNECT_KWARGS) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (zlib.crc32(schema.encode()),))
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for ddl in shared_ddl:
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    await conn.execute(ddl)
            cur = await conn.execute(f'SELECT version FROM "{schema}".schema_migrations')
            done = {row[0] for row in await cur.fetchall()}
            for path in files:
                version = int(path.name[:4])
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    await conn.execute(path.read_text())
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES (%s, %s)',
                        (version, path.name),
                    )
                applied.append(path.name)
                log.info("applied migration %s.%s", schema, path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (zlib.crc32(schema.encode()),))
    return applied
