"""PostgreSQL: an async connection pool and each service's numbered migrations.

A service owns one schema and a folder of `NNNN_name.sql` files. They are applied in order on start,
each in its own transaction, recorded in `<schema>.schema_migrations`, under an advisory lock so
replicas starting together apply each file once.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)


async def open_pool(url: str, *, min_size: int = 2, max_size: int = 10, name: str = "chatmesh") -> AsyncConnectionPool:
    pool = AsyncConnectionPool(url, min_size=min_size, max_size=max_size, open=False, name=name,
                               kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=30)
    return pool


async def migrate(url: str, schema: str, folder: Path) -> list[str]:
    """Apply the folder's pending migrations to `schema`; returns the names applied."""
    files = sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (zlib.crc32(schema.encode()),))
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute(f'SELECT version FROM "{schema}".schema_migrations')
            done = {row[0] for row in await cur.fetchall()}
            for path in files:
                version = int(path.name[:4])
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    await conn.execute(path.read_text())  # type: ignore[arg-type]
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES (%s, %s)',
                        (version, path.name),
                    )
                applied.append(path.name)
                log.info("applied migration %s.%s", schema, path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (zlib.crc32(schema.encode()),))
    return applied
