"""The content limit is configuration: read from CHAT_MAX_MESSAGE_CHARS, enforced on send and edit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from chatmesh import db, errors
from chatmesh.config import Settings
from services.message import store
from services.message.messages import Limits, Messages
from services.message.store import NewMessage
from tests.test_message_rollback import ALICE, MIGRATIONS, _Roles


def test_the_limit_comes_from_the_environment() -> None:
    base = {"CHAT_JWT_SECRET": "s"}
    assert Settings.from_env(base).max_message_chars == 4000
    assert Settings.from_env(base | {"CHAT_MAX_MESSAGE_CHARS": "12"}).max_message_chars == 12
    with pytest.raises(ValueError):
        Limits(0)


@pytest.fixture
async def small(database_url: str) -> AsyncIterator[Messages]:
    await db.migrate(database_url, store.SCHEMA, MIGRATIONS, shared_ddl=store.SHARED_DDL)
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True)
    yield Messages(pool, _Roles(), Limits(max_content=10))  # type: ignore[arg-type]
    await pool.close()


async def test_a_configured_limit_applies_to_send_and_edit(small: Messages) -> None:
    def new(content: str) -> NewMessage:
        return NewMessage(
            conversation_id=str(uuid.uuid4()),
            sender_id=ALICE,
            content=content,
            content_encrypted=None,
            enc_algorithm="",
            enc_key_id="",
            client_message_id=None,
            reply_to_id=None,
        )

    row, _ = await small.send(ALICE, new("é" * 10))  # characters, not bytes
    with pytest.raises(errors.ChatError) as too_long:
        await small.send(ALICE, new("x" * 11))
    assert too_long.value.code == "CONTENT_TOO_LONG"
    with pytest.raises(errors.ChatError) as edit_too_long:
        await small.edit(ALICE, row.message_id, "y" * 11)
    assert edit_too_long.value.code == "CONTENT_TOO_LONG"
