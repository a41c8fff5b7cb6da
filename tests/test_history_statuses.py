"""A page's statuses, prepared once per page, equal the per-message definition for every row.

The definition (views' module docstring): the sender sees the least advanced recipient's status and,
in a group of at most MAX_LISTED_RECIPIENTS, each recipient's; anyone else sees their own status.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from services.message.store import MessageRow, Position
from services.message.views import DELIVERED, MAX_LISTED_RECIPIENTS, READ, SENT, _Statuses, status_at


def _definition(
    row: MessageRow, reader: str, participants: list[str], positions: dict[str, Position]
) -> tuple[int, list[tuple[str, int]]]:
    """The per-row reference: what views.statuses computed for each row before pages were prepared."""
    if row.sender_id != reader:
        return status_at(positions.get(reader), row.seq), []
    recipients = [
        (user, status_at(positions.get(user), row.seq)) for user in sorted(participants) if user != row.sender_id
    ]
    status = min(s for _, s in recipients) if recipients else SENT
    return status, recipients if len(recipients) <= MAX_LISTED_RECIPIENTS else []


def _row(seq: int, sender: str) -> MessageRow:
    return MessageRow(f"m{seq}", "c", seq, sender, "hi", None, "", "", None, None, datetime.now(UTC), None, None)


def test_prepared_statuses_equal_the_definition_for_every_row() -> None:
    rng = random.Random(10)
    for size in (1, 2, 3, 10, MAX_LISTED_RECIPIENTS, MAX_LISTED_RECIPIENTS + 1, MAX_LISTED_RECIPIENTS + 2, 300):
        for _ in range(8):
            users = [f"u{i:03d}" for i in range(size)]
            rng.shuffle(users)
            positions = {}
            for user in users:
                if rng.random() < 0.8:  # some never had a position; delivered is usually >= read, not always
                    read = rng.choice([0, rng.randrange(0, 120)])
                    delivered = max(0, read + rng.choice([0, 0, rng.randrange(-20, 40)]))
                    positions[user] = Position(user, delivered, read)
            reader = rng.choice(users)
            rows = [_row(seq, rng.choice([reader, reader, *users[:3]])) for seq in range(1, 130)]
            page = _Statuses(reader, users, positions)
            for row in rows:
                status, read_by = page.of(row)
                listed = [] if read_by is None else [(r.user_id, r.status) for r in read_by.recipients]
                assert (status, listed) == _definition(row, reader, users, positions), (size, row.seq)


def test_a_reader_without_a_position_sees_sent_and_the_list_is_shared_between_changes() -> None:
    positions = {"bob": Position("bob", 5, 3), "carol": Position("carol", 9, 9)}
    page = _Statuses("alice", ["alice", "bob", "carol"], positions)
    lists = [page.of(_row(seq, "alice"))[1] for seq in range(1, 12)]
    assert [page.of(_row(seq, "alice"))[0] for seq in (3, 4, 5, 6)] == [READ, DELIVERED, DELIVERED, SENT]
    assert lists[0] is lists[2] and lists[3] is not lists[2]  # seqs 1-3 share one list; 4 starts another
    assert _Statuses("dave", ["alice", "bob"], {}).of(_row(4, "alice")) == (SENT, None)
