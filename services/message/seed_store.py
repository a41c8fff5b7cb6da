"""SQL that seeds a long history for benchmarks (chatmesh_tools/bench/scenarios/history.py): the
message service's own tables are written here, by their owner, not by the tool.

Seeded rows are what a send stores, minus the outbox event (nothing is delivered for them): sending
100,000 messages through the mesh first would measure sends, not history.
"""

from __future__ import annotations

import psycopg


async def seed_history(conn: psycopg.AsyncConnection, conversation_id: str, sender: str, count: int) -> None:
    """`count` messages with seqs 1..count (COPY), the conversation's seq moved to the last, and the
    table's statistics refreshed so history reads plan as they would on a real table."""
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY message.messages (conversation_id, seq, sender_id, content, client_message_id) FROM STDIN"
        ) as copy,
    ):
        for seq in range(1, count + 1):
            await copy.write_row((conversation_id, seq, sender, f"history message {seq} " + "y" * 40, f"seed-{seq}"))
    await conn.execute(
        """INSERT INTO message.conversation_seq (conversation_id, last_seq) VALUES (%s, %s)
                          ON CONFLICT (conversation_id) DO UPDATE SET last_seq = EXCLUDED.last_seq""",
        (conversation_id, count),
    )
    await conn.execute("ANALYZE message.messages")
