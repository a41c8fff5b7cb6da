"""Statuses derived from positions (pure functions, no servers)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.message.store import MessageRow, Position
from services.message.views import DELIVERED, MAX_LISTED_RECIPIENTS, READ, SENT, status_at, statuses


def _row(seq: int, sender: str = "alice") -> MessageRow:
    return MessageRow("m", "c", seq, sender, "hi", None, "", "", None, None, datetime.now(UTC), None, None)


def test_a_position_covers_everything_up_to_it() -> None:
    position = Position("bob", delivered_seq=7, read_seq=4)
    assert [status_at(position, seq) for seq in (1, 4, 5, 7, 8)] == [READ, READ, DELIVERED, DELIVERED, SENT]
    assert status_at(None, 1) == SENT


def test_the_sender_sees_the_least_advanced_recipient_and_others_their_own() -> None:
    positions = {"bob": Position("bob", 5, 5), "carol": Position("carol", 5, 0), "alice": Position("alice", 9, 9)}
    members = ["alice", "bob", "carol"]
    assert statuses(_row(3), "alice", members, positions) == (DELIVERED, [("bob", READ), ("carol", DELIVERED)])
    assert statuses(_row(3), "bob", members, positions) == (READ, [])
    assert statuses(_row(3), "alice", ["alice"], positions) == (SENT, [])  # nobody to deliver to yet


def test_large_groups_keep_the_status_but_not_the_list() -> None:
    members = ["alice", *(f"u{i}" for i in range(MAX_LISTED_RECIPIENTS + 1))]
    positions = {m: Position(m, 3, 3) for m in members}
    assert statuses(_row(2), "alice", members, positions) == (READ, [])
