"""The message domain in-process, for the tests that drive it without the mesh (test_message_rollback,
test_message_limits, test_message_send_path, test_tracing_hops): its schema migrated into a database,
a pool on it as the service opens one (autocommit), membership stood in for, and a send's input."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from chatmesh import db
from chatmesh.membership import Membership
from chatmesh.redis_conn import Keys, open_redis
from chatmesh.roles import Role
from services.message import store
from services.message.messages import Limits, Messages
from services.message.store import NewMessage

MIGRATIONS = Path(__file__).parents[1] / "services" / "message" / "migrations"


class Roles:
    """Membership as the conversation service would answer it, for any conversation: these users with
    these roles (the domain asks only `get`)."""

    def __init__(self, roles: Mapping[str, Role]) -> None:
        self._roles = dict(roles)

    async def get(self, conversation_id: str) -> Membership:
        return Membership(conversation_id, True, dict(self._roles), 1)


@asynccontextmanager
async def message_pool(url: str, *, max_size: int = 4) -> AsyncIterator[AsyncConnectionPool]:
    """The message schema migrated into `url` (as the service does on start), and a pool on it."""
    await db.migrate(url, store.SCHEMA, MIGRATIONS, shared_ddl=store.SHARED_DDL)
    pool = AsyncConnectionPool(url, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


def messages_on(pool: AsyncConnectionPool, roles: Roles, limits: Limits | None = None) -> Messages:
    return Messages(pool, roles, limits or Limits())  # type: ignore[arg-type]  # Roles answers `get` only


def new_message(
    cid: str, content: str, *, sender: str, client_id: str | None = None, reply_to: str | None = None
) -> NewMessage:
    """A plain-text send of `content` into `cid` (a reply to `reply_to` if given)."""
    return NewMessage(
        conversation_id=cid,
        sender_id=sender,
        content=content,
        content_encrypted=None,
        enc_algorithm="",
        enc_key_id="",
        client_message_id=client_id,
        reply_to_id=reply_to,
    )


def refuse_events_mentioning(url: str, word: str) -> None:
    """Make the outbox of the database at `url` refuse any event whose payload holds `word`: a send is
    one statement, so this is how its last step (the event) is made to fail."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""CREATE FUNCTION message.refuse_{word}() RETURNS trigger LANGUAGE plpgsql AS $$
                         BEGIN
                             IF position('{word}'::bytea in NEW.payload) > 0 THEN RAISE EXCEPTION '{word}'; END IF;
                             RETURN NEW;
                         END $$""")
        conn.execute(
            f"CREATE TRIGGER refuse_{word} BEFORE INSERT ON message.outbox"
            f" FOR EACH ROW EXECUTE FUNCTION message.refuse_{word}()"
        )


@dataclass
class DomainEnv:
    url: str
    messages: Messages
    pool: AsyncConnectionPool
    redis: aioredis.Redis
    keys: Keys  # a prefix of the test's own, with one partition: every event in one stream, in commit order

    @property
    def stream(self) -> str:
        return self.keys.event_partition(0)


@asynccontextmanager
async def domain_env(url: str, redis_url: str, roles: Roles, *, max_size: int = 4) -> AsyncIterator[DomainEnv]:
    """The domain on the database `url` (one of the test's own, so a relay sees only this test's
    outbox), with a Redis client and a fresh key prefix, whose keys are deleted afterwards."""
    async with message_pool(url, max_size=max_size) as pool:
        client = open_redis(redis_url)
        keys = Keys(f"test-domain-{secrets.token_hex(6)}", 1)
        try:
            yield DomainEnv(url, messages_on(pool, roles), pool, client, keys)
        finally:
            for key in [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]:
                await client.delete(key)
            await client.aclose()
