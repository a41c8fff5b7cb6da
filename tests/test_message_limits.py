"""The content limit is configuration: read from CHAT_MAX_MESSAGE_CHARS, enforced on send and edit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from chatmesh import errors
from chatmesh.config import Settings
from services.message.messages import Limits, Messages
from services.message.store import NewMessage
from tests.message_domain import message_pool, messages_on, new_message
from tests.test_message_rollback import ALICE, ROLES


def test_the_limit_comes_from_the_environment() -> None:
    base = {"CHAT_JWT_SECRET": "s"}
    assert Settings.from_env(base).max_message_chars == 4000
    assert Settings.from_env(base | {"CHAT_MAX_MESSAGE_CHARS": "12"}).max_message_chars == 12
    with pytest.raises(ValueError):
        Limits(0)


@pytest.fixture
async def small(database_url: str) -> AsyncIterator[Messages]:
    async with message_pool(database_url, max_size=2) as pool:
        yield messages_on(pool, ROLES, Limits(max_content=10))


async def test_a_configured_limit_applies_to_send_and_edit(small: Messages) -> None:
    def new(content: str) -> NewMessage:
        return new_message(str(uuid.uuid4()), content, sender=ALICE)

    row, _ = await small.send(ALICE, new("é" * 10))  # characters, not bytes
    with pytest.raises(errors.ChatError) as too_long:
        await small.send(ALICE, new("x" * 11))
    assert too_long.value.code == "CONTENT_TOO_LONG"
    with pytest.raises(errors.ChatError) as edit_too_long:
        await small.edit(ALICE, row.message_id, "y" * 11)
    assert edit_too_long.value.code == "CONTENT_TOO_LONG"
