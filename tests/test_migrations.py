"""Migrations are numbered, applied once, tracked per schema, and safe for replicas starting together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from chatmesh import db


async def test_migrations_apply_once_and_are_tracked(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    (tmp_path / "0002_second.sql").write_text("ALTER TABLE things ADD COLUMN name text;")
    results = await asyncio.gather(*(db.migrate(database_url, "migrtest", tmp_path) for _ in range(3)))
    assert sorted(results, key=len)[-1] == ["0001_first.sql", "0002_second.sql"]
    assert sum(len(r) for r in results) == 2  # each file applied by exactly one of the racing replicas
    assert await db.migrate(database_url, "migrtest", tmp_path) == []
    with psycopg.connect(database_url) as conn:
        versions = conn.execute("SELECT version, name FROM migrtest.schema_migrations ORDER BY version").fetchall()
        columns = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'migrtest'"
                               " AND table_name = 'things' ORDER BY ordinal_position").fetchall()
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
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'migrfail'"
                              " ORDER BY table_name").fetchall()
    assert tables == [("a",), ("schema_migrations",)]
