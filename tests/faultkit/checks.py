"""The invariants judged after each scenario, and the evidence a failure message carries.

Each count says what a user would notice: a message the mesh acknowledged that a device of a
participant never showed (lost), one send stored twice (duplicated), a conversation's messages shown
out of order on one connection (reordered), holes in history (gaps), and a device that stayed deaf
after the fault ended (never recovered). Every finding names the device, the conversation and the
seqs, with times relative to the moment the fault began.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import redis

from tests.faultkit.cluster import Cluster
from tests.faultkit.device import Arrival, Device, history
from tests.faultkit.load import Load

RECOVERY_LIMIT_S = 20.0
SHOWN = 6  # findings listed per kind in a failure message


@dataclass
class Result:
    recovery_s: float | None = None  # None: some device never got its probes
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    reordered_before: int = 0  # of which arrived before the fault began: not the fault's doing
    gaps: int = 0
    never_recovered: int = 0
    details: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def failed(self) -> bool:
        return any((self.lost, self.duplicated, self.reordered, self.gaps, self.never_recovered))


def spans(seqs: list[int]) -> str:
    """1,2,3,5,7,8 -> '1-3,5,7-8' (a loss reads at a glance)."""
    out: list[str] = []
    for seq in sorted(set(seqs)):
        if out and int(out[-1].split("-")[-1]) == seq - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{seq}"
        else:
            out.append(str(seq))
    return ",".join(out)


def complete(load: Load) -> bool:
    """Every device has every acknowledged message of its conversations."""
    return all(not missing(load, device) for device in load.devices)


def missing(load: Load, device: Device) -> list[str]:
    mine = set(device.conversations)
    return [m for m, a in load.acked.items() if a.conversation_id in mine and m not in device.seen]


def judge(load: Load, fault_start: float, fault_end: float) -> Result:
    """Lost, reordered and recovery, from what the devices recorded."""
    result = Result()
    t = lambda at: f"{at - fault_start:+.1f}s"  # noqa: E731
    for device in load.devices:
        label = f"{device.name} ({device.user_id})"
        lost = [load.acked[m] for m in missing(load, device)]
        result.lost += len(lost)
        by_conversation: dict[str, list[int]] = defaultdict(list)
        for acked in lost:
            by_conversation[acked.conversation_id].append(acked.seq)
        for conversation_id, seqs in by_conversation.items():
            first = min((a for a in lost if a.conversation_id == conversation_id), key=lambda a: a.seq)
            last = device.connections[-1] if device.connections else None
            state = (
                "none ever ready"
                if last is None
                else (
                    f"#{last.number} opened {t(last.opened_at)}, {last.close or 'still open'}, "
                    f"{last.frames} frames, last at {t(last.last_frame_at) if last.frames else '-'}"
                )
            )
            result.details["lost"].append(
                f"{label}: {len(seqs)} acked never arrived in {load.names[conversation_id]} seqs {spans(seqs)} "
                f"(seq {first.seq} {_sent(load, first.message_id, t)}); last connection {state}; "
                f"resync_required {len(device.resyncs)}"
            )
        for conn in device.connections:
            highest: dict[str, Arrival] = {}
            for arrival in conn.arrivals:
                top = highest.get(arrival.conversation_id)
                if top is not None and arrival.seq < top.seq:
                    result.reordered += 1
                    result.reordered_before += arrival.at < fault_start
                    result.details["reordered"].append(
                        f"{label} connection #{conn.number} in {load.names[arrival.conversation_id]}: seq "
                        f"{arrival.seq} {_sent(load, arrival.message_id, t)} arrived at {t(arrival.at)} after seq "
                        f"{top.seq} {_sent(load, top.message_id, t)} (at {t(top.at)})"
                    )
                if top is None or arrival.seq > top.seq:
                    highest[arrival.conversation_id] = arrival
        times = []
        for conversation_id in device.conversations:
            probe = load.probes.get(conversation_id)
            arrival = device.seen.get(probe) if probe else None
            times.append(arrival.at - fault_end if arrival else None)
            if arrival is None or arrival.at - fault_end > RECOVERY_LIMIT_S:
                late = "never" if arrival is None else f"only after {arrival.at - fault_end:.1f}s"
                result.details["never recovered"].append(
                    f"{label}: probe in {load.names[conversation_id]} "
                    f"{'was never acknowledged' if not probe else late} (limit {RECOVERY_LIMIT_S:.0f}s)"
                )
        if any(x is None or x > RECOVERY_LIMIT_S for x in times):
            result.never_recovered += 1
        else:
            result.recovery_s = max([result.recovery_s or 0.0, *(x for x in times if x is not None)])
    if result.never_recovered:
        result.recovery_s = None
    return result


def _sent(load: Load, message_id: str, t: Callable[[float], str]) -> str:
    """How a message was sent: '(u3 over rest, acked -1.2s)'."""
    acked = load.acked.get(message_id)
    if acked is None:
        return "(not acknowledged)"
    sender = acked.sender.rsplit("-", 1)[-1]
    return f"({sender} over {acked.via or '?'}, acked {t(acked.at)})"


async def check_storage(load: Load, cluster: Cluster, result: Result, deadline_s: float = 30) -> None:
    """History gaps and duplicates (REST history and the message schema), and acknowledged messages
    missing from history (counted as lost: "accepted means durable")."""
    stored: dict[str, dict[str, dict[str, Any]]] = {}
    rest_extra = 0
    end = time.monotonic() + deadline_s
    for conversation_id, members in load.conversations.items():
        name = load.names[conversation_id]
        while True:
            try:
                stored[conversation_id] = {
                    m["message_id"]: m for m in await history(load.http, cluster.token(members[0]), conversation_id)
                }
                break
            except (httpx.HTTPError, ValueError) as exc:
                if time.monotonic() > end:
                    result.gaps += 1
                    result.details["gaps"].append(f"{name}: history unreadable ({type(exc).__name__}: {exc})")
                    break
                await asyncio.sleep(0.5)
        messages = list(stored.get(conversation_id, {}).values())
        seqs = sorted(int(m["seq"]) for m in messages)
        holes = sorted(set(range(1, (seqs[-1] if seqs else 0) + 1)) - set(seqs))
        repeated = len(seqs) - len(set(seqs))
        if holes or repeated:
            result.gaps += len(holes) + repeated
            result.details["gaps"].append(
                f"{name}: {len(seqs)} messages, holes at seqs {spans(holes) or '-'}, {repeated} seqs repeated"
            )
        twice: dict[tuple[str, str], list[str]] = defaultdict(list)
        for m in messages:
            if m.get("client_message_id"):
                twice[(m["sender_id"], m["client_message_id"])].append(f"seq {m['seq']}")
        for (sender, cmid), copies in twice.items():
            if len(copies) > 1:
                rest_extra += len(copies) - 1
                result.details["duplicated"].append(
                    f"{name}: {cmid} by {sender} stored {len(copies)} times ({', '.join(copies)}) in REST history"
                )
    if stored:
        for acked in load.acked.values():
            if acked.conversation_id in stored and acked.message_id not in stored[acked.conversation_id]:
                result.lost += 1
                result.details["lost"].append(
                    f"{load.names[acked.conversation_id]}: seq {acked.seq} "
                    f"({acked.client_message_id}) acknowledged but not in history"
                )
    result.duplicated = max(rest_extra, _check_database(load, cluster, result))


def _check_database(load: Load, cluster: Cluster, result: Result) -> int:
    """The same question asked of PostgreSQL: one row per (sender, client_message_id)."""
    try:
        with psycopg.connect(cluster.postgres.url, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT conversation_id::text, sender_id, client_message_id, array_agg(seq ORDER BY seq)"
                " FROM message.messages WHERE client_message_id IS NOT NULL"
                " GROUP BY 1, 2, 3 HAVING count(*) > 1"
            ).fetchall()
    except psycopg.Error as exc:
        result.details["notes"].append(f"message schema unreadable: {exc}")
        return 0
    extra = 0
    for conversation_id, sender, cmid, seqs in rows:
        extra += len(seqs) - 1
        result.details["duplicated"].append(
            f"{load.names.get(conversation_id, conversation_id)}: {cmid} by "
            f"{sender} stored {len(seqs)} times (seqs {seqs}) in message.messages"
        )
    return extra


def locate_losses(load: Load, cluster: Cluster, result: Result) -> None:
    """Where the first lost message stopped on its way (docs/architecture.md "The path of a message"):
    still in the outbox, in the events stream but not fanned out, dead-lettered, or in the recipient's
    inbox (then the hub or the edge never pushed it). Read before the world is torn down."""
    first = next((a for d in load.devices for a in (load.acked[m] for m in missing(load, d))), None)
    if first is None:
        return
    device = next(d for d in load.devices if first.message_id in missing(load, d))
    facts = [f"first lost: {load.names[first.conversation_id]} seq {first.seq} for {device.name}"]
    try:
        with psycopg.connect(cluster.postgres.url, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM message.outbox WHERE published_at IS NULL").fetchone()
        facts.append(f"outbox unpublished rows {row[0] if row else '?'}")
    except psycopg.Error as exc:
        facts.append(f"outbox unreadable ({type(exc).__name__})")
    prefix = cluster.mesh.env["CHAT_REDIS_PREFIX"]
    client = redis.Redis.from_url(cluster.redis.url, socket_timeout=3, socket_connect_timeout=3)
    try:
        streams = [s.decode() for s in client.scan_iter(match=f"{prefix}:events:{{p*}}")]
        for stream in sorted(streams):
            fanout = next((g for g in client.xinfo_groups(stream) if g["name"] == b"fanout"), None)
            last = client.xinfo_stream(stream)["last-generated-id"].decode()
            facts.append(
                f"events stream {stream} {client.xlen(stream)} entries (last {last}), fan-out group "
                + (
                    f"pending {fanout['pending']}, last delivered {fanout['last-delivered-id'].decode()}"
                    if fanout
                    else "missing"
                )
            )
        facts.append(f"dead letters {client.xlen(f'{prefix}:events:dead')}")
        needle = first.message_id.encode()
        inbox = client.xrange(f"{prefix}:inbox:{{{device.user_id}}}")
        found = any(needle in value for _, fields in inbox for value in fields.values())
        facts.append(f"in {device.user_id}'s inbox ({len(inbox)} entries): {'yes' if found else 'no'}")
    except redis.RedisError as exc:
        facts.append(f"Redis unreadable ({type(exc).__name__}: {exc})")
    finally:
        client.close()
    result.details["where the first loss stopped"].append("; ".join(facts))
