"""chat_delivery_lag_seconds measures from the message's send on every path, the offline buffer too:
a message a socket gets 100 s after it was stored counts 100 s, not the few ms of the replay."""

from __future__ import annotations

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, direct_conversation, new_user_id, register, send

OLD_S = 100


async def lag_buckets(http) -> dict[str, float]:  # type: ignore[no-untyped-def]
    reply = await http.get("/metrics")
    assert reply.status_code == 200
    return {
        sample.labels["le"]: sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == "chat_delivery_lag_seconds_bucket"
    }


async def test_a_message_from_the_offline_buffer_counts_from_its_send(
    mesh: Mesh, http, make_token, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    await register(http, bob_token)
    cid = await direct_conversation(http, alice_token, bob)
    sent = await send(http, alice_token, cid, "sent while bob was away")
    with psycopg.connect(database_url, autocommit=True) as conn:  # as if it had been sent 100 s ago
        conn.execute(
            "UPDATE message.messages SET created_at = created_at - make_interval(secs => %s) WHERE message_id = %s",
            (OLD_S, sent["message_id"]),
        )
    before = await lag_buckets(http)

    bob_socket = await Socket.open(mesh.edge_url, bob_token)  # no resume token: the offline buffer
    frame = await bob_socket.next_of("chat:message_received")
    assert frame["data"]["message_id"] == sent["message_id"]

    after = await lag_buckets(http)
    older = after["+Inf"] - after["30.0"] - (before.get("+Inf", 0) - before.get("30.0", 0))
    assert older >= 1, {le: after[le] - before.get(le, 0) for le in after}
