"""Migrations are numbered, applied once, tracked per schema, and safe for replicas starting together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from chatmesh import db
from services.message import store


async def test_migrations_apply_once_and_are_tracked(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    (tmp_path / "0002_second.sql").write_text("ALTER TABLE things ADD COLUMN name text;")
    results = await asyncio.gather(*(db.migrate(database_url, "migrtest", tmp_path) for _ in range(3)))
    assert sorted(results, key=len)[-1] == ["0001_first.sql", "0002_second.sql"]
    assert sum(len(r) for r in results) == 2  # each file applied by exactly one of the racing replicas
    assert await db.migrate(database_url, "migrtest", tmp_path) == []
    with psycopg.connect(database_url) as conn:
        versions = conn.execute("SELECT version, name FROM migrtest.schema_migrations ORDER BY version").fetchall()
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'migrtest'"
            " AND table_name = 'things' ORDER BY ordinal_position"
        ).fetchall()
    assert versions == [(1, "0001_first.sql"), (2, "0002_second.sql")]
    assert columns == [("id",), ("name",)]


async def test_a_failing_migration_leaves_nothing_behind(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE b (id int); SELECT no_such_function();")
    try:
        await db.migrate(database_url, "migrfail", tmp_path)
    except psycopg.Error:
        pass
    else:
        raise AssertionError("a broken migration must fail the start")
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'migrfail' ORDER BY table_name"
        ).fetchall()
    assert tables == [("a",), ("schema_migrations",)]


def _outbox_shape(database_url: str, schema: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'outbox' ORDER BY ordinal_position",
            (schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'outbox' ORDER BY indexname",
            (schema,),
        ).fetchall()
    return [*columns, *((d.replace(f"{schema}.", ""),) for (d,) in indexes)]


async def test_the_shared_outbox_ddl_makes_the_table_first_and_leaves_an_older_one_as_it_is(
    database_url: str, tmp_path: Path
) -> None:
    """A new schema gets chatmesh/outbox.py's table before its own files (which may write to it); a
    schema whose 0001_init.sql made the table itself (before the DDL moved to chatmesh/outbox.py)
    migrates again without error and keeps the same table."""
    fresh, older = tmp_path / "fresh", tmp_path / "older"
    fresh.mkdir()
    older.mkdir()
    (fresh / "0001_init.sql").write_text("INSERT INTO outbox (payload) VALUES ('\\x00');")
    assert await db.migrate(database_url, "outbox_fresh", fresh, shared_ddl=store.SHARED_DDL) == ["0001_init.sql"]
    (older / "0001_init.sql").write_text("""
        CREATE TABLE outbox (
            id           bigserial PRIMARY KEY,
            payload      bytea NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;""")
    assert await db.migrate(database_url, "outbox_older", older) == ["0001_init.sql"]  # as it was migrated then
    assert await db.migrate(database_url, "outbox_older", older, shared_ddl=store.SHARED_DDL) == []
    assert _outbox_shape(database_url, "outbox_older") == _outbox_shape(database_url, "outbox_fresh")
    assert len(_outbox_shape(database_url, "outbox_fresh")) == 6  # four columns, the key and the partial index
