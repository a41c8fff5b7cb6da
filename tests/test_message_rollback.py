"""Every multi-step write is one transaction: a failure at its last step (writing the event to the
outbox) leaves nothing of the change behind. The domain runs in-process against the real test
database; only the conversation service's membership answer is stood in for."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from chatmesh import outbox
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.roles import Role
from services.message import store
from services.message.messages import Messages
from services.message.store import NewMessage
from tests.message_domain import Roles, message_pool, messages_on, new_message, refuse_events_mentioning

ALICE, BOB, ADMIN = "rb-alice", "rb-bob", "rb-admin"
ROLES = Roles({ALICE: Role.MEMBER, BOB: Role.MEMBER, ADMIN: Role.ADMIN})


class _Boom(Exception):
    pass


@pytest.fixture
async def messages(database_url: str) -> AsyncIterator[Messages]:
    async with message_pool(database_url) as pool:
        yield messages_on(pool, ROLES)


def _new(cid: str, content: str = "hi", client_id: str | None = None) -> NewMessage:
    return new_message(cid, content, sender=ALICE, client_id=client_id)


def _snapshot(database_url: str, cid: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the message schema holds about one conversation."""
    queries = {
        "seq": "SELECT last_seq FROM message.conversation_seq WHERE conversation_id = %(c)s",
        "messages": "SELECT seq, content, edited_at, deleted_at, deleted_by FROM message.messages"
        " WHERE conversation_id = %(c)s ORDER BY seq",
        "edits": "SELECT e.version, e.content FROM message.message_edits e JOIN message.messages m USING (message_id)"
        " WHERE m.conversation_id = %(c)s",
        "reactions": "SELECT r.user_id, r.emoji FROM message.reactions r JOIN message.messages m USING (message_id)"
        " WHERE m.conversation_id = %(c)s",
        "positions": "SELECT user_id, delivered_seq, read_seq FROM message.positions WHERE conversation_id = %(c)s",
        "audit": "SELECT actor_id, action FROM message.audit_log WHERE conversation_id = %(c)s",
        "outbox": "SELECT count(*) FROM message.outbox WHERE position(%(b)s::bytea in payload) > 0",
    }
    with psycopg.connect(database_url) as conn:
        return {name: conn.execute(sql, {"c": cid, "b": cid.encode()}).fetchall() for name, sql in queries.items()}


@pytest.fixture
async def failing_outbox(make_database: Callable[[], str]) -> AsyncIterator[tuple[Messages, str]]:
    """Messages on a database of its own whose outbox refuses any event mentioning 'boom': a send
    is one statement, so this is how its last step (the event) is made to fail."""
    url = make_database()
    async with message_pool(url, max_size=2) as pool:
        refuse_events_mentioning(url, "boom")
        yield messages_on(pool, ROLES), url


async def test_a_failed_send_leaves_no_message_no_seq_and_no_event(failing_outbox: tuple[Messages, str]) -> None:
    messages, url = failing_outbox
    cid = str(uuid.uuid4())
    first, _ = await messages.send(ALICE, _new(cid, "one"))
    before = _snapshot(url, cid)
    with pytest.raises(psycopg.errors.RaiseException):
        await messages.send(ALICE, _new(cid, "boom", client_id="c-2"))
    assert _snapshot(url, cid) == before
    second, created = await messages.send(ALICE, _new(cid, "two", client_id="c-2"))
    assert (first.seq, second.seq, created) == (1, 2, True)  # the failed attempt left no gap


async def test_failed_edit_delete_receipt_and_reaction_leave_nothing(
    messages: Messages, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = str(uuid.uuid4())
    row, _ = await messages.send(ALICE, _new(cid, "original"))
    await messages.edit(ALICE, row.message_id, "edited once")
    await messages.reactions.add(BOB, row.message_id, "👍")
    before = _snapshot(database_url, cid)

    async def boom(*args: Any, **kwargs: Any) -> None:
        raise _Boom

    monkeypatch.setattr(outbox, "enqueue", boom)
    attempts = [
        messages.edit(ALICE, row.message_id, "edited twice"),
        messages.delete(ADMIN, row.message_id),  # an audited delete: the audit row must go too
        messages.receipts.update(BOB, row.message_id, common_pb2.MESSAGE_STATUS_READ),
        messages.reactions.add(BOB, row.message_id, "🎉"),
        messages.reactions.remove(BOB, row.message_id, "👍"),
    ]
    for attempt in attempts:
        with pytest.raises(_Boom):
            await attempt
        assert _snapshot(database_url, cid) == before


async def test_the_audit_log_is_append_only(messages: Messages, database_url: str) -> None:
    cid = str(uuid.uuid4())
    row, _ = await messages.send(ALICE, _new(cid))
    await messages.delete(ADMIN, row.message_id)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM message.audit_log WHERE conversation_id = %s", (cid,)).fetchone() == (
            1,
        )
        for statement in (
            "UPDATE message.audit_log SET actor_id = 'x' WHERE conversation_id = %s",
            "DELETE FROM message.audit_log WHERE conversation_id = %s",
        ):
            with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
                conn.execute(statement, (cid,))


@pytest.mark.parametrize("step", ["update_content", "append_audit"])
async def test_a_failure_between_two_sql_steps_rolls_back_the_first(
    messages: Messages, database_url: str, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Fail the second statement of a write (after the old text was kept, after the message was
    marked deleted): the first statement's effect must be gone too. (A send is one statement.)"""
    cid = str(uuid.uuid4())
    row, _ = await messages.send(ALICE, _new(cid, "original"))
    before = _snapshot(database_url, cid)

    async def boom(*args: Any, **kwargs: Any) -> None:
        raise _Boom

    monkeypatch.setattr(store, step, boom)
    attempts = {
        "update_content": lambda: messages.edit(ALICE, row.message_id, "changed"),
        "append_audit": lambda: messages.delete(ADMIN, row.message_id),
    }
    with pytest.raises(_Boom):
        await attempts[step]()
    assert _snapshot(database_url, cid) == before
