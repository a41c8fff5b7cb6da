"""Shared by the production tests (drain, metrics, readiness): a private mesh gets a database of its own.

Meshes that share a database share its outboxes: each mesh's relay would publish every mesh's rows to
its own Redis prefix, so a private mesh beside the session's must not share the session's database.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg


@contextmanager
def private_database(postgres_server: str) -> Iterator[str]:
    name = f"chatmesh_private_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(postgres_server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
