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
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tests.faultkit.cluster import Cluster
from tests.faultkit.device import Device, history
from tests.faultkit.load import Load

RECOVERY_LIMIT_S = 20.0
SHOWN = 6  # findings listed per kind in a failure message


@dataclass
class Result:
    recovery_s: float | None = None  # None: some device never got its probes
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
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
            last = device.connections[-1] if device.connections else None
            state = "none ever ready" if last is None else (
                f"#{last.number} opened {t(last.opened_at)}, {last.close or 'still open'}, "
                f"{last.frames} frames, last at {t(last.last_frame_at) if last.frames else '-'}")
            result.details["lost"].append(
                f"{label}: {len(seqs)} acked never arrived in {load.names[conversation_id]} seqs {spans(seqs)}; "
                f"last connection {state}; resync_required {len(device.resyncs)}")
        for conn in device.connections:
            highest: dict[str, int] = {}
            for arrival in conn.arrivals:
                top = highest.get(arrival.conversation_id, 0)
                if arrival.seq < top:
                    result.reordered += 1
                    result.details["reordered"].append(
                        f"{label} connection #{conn.number} in {load.names[arrival.conversation_id]}: seq "
                        f"{arrival.seq} arrived at {t(arrival.at)} after seq {top}")
                highest[arrival.conversation_id] = max(top, arrival.seq)
        times = []
        for conversation_id in device.conversations:
            probe = load.probes.get(conversation_id)
            arrival = device.seen.get(probe) if probe else None
            times.append(arrival.at - fault_end if arrival else None)
            if arrival is None or arrival.at - fault_end > RECOVERY_LIMIT_S:
                late = "never" if arrival is None else f"only after {arrival.at - fault_end:.1f}s"
                result.details["never recovered"].append(
                    f"{label}: probe in {load.names[conversation_id]} "
                    f"{'was never acknowledged' if not probe else late} (limit {RECOVERY_LIMIT_S:.0f}s)")
        if any(x is None or x > RECOVERY_LIMIT_S for x in times):
            result.never_recovered += 1
        else:
            result.recovery_s = max([result.recovery_s or 0.0, *(x for x in times if x is not None)])
    if result.never_recovered:
        result.recovery_s = None
    return result


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
                stored[conversation_id] = {m["message_id"]: m for m in await history(
                    load.http, cluster.token(members[0]), conversation_id)}
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
            result.details["gaps"].append(f"{name}: {len(seqs)} messages, holes at seqs {spans(holes) or '-'}, "
                                          f"{repeated} seqs repeated")
        twice: dict[tuple[str, str], list[str]] = defaultdict(list)
        for m in messages:
            if m.get("client_message_id"):
                twice[(m["sender_id"], m["client_message_id"])].append(f"seq {m['seq']}")
        for (sender, cmid), copies in twice.items():
            if len(copies) > 1:
                rest_extra += len(copies) - 1
                result.details["duplicated"].append(f"{name}: {cmid} by {sender} stored {len(copies)} times "
                                                    f"({', '.join(copies)}) in REST history")
    if stored:
        for acked in load.acked.values():
            if acked.conversation_id in stored and acked.message_id not in stored[acked.conversation_id]:
                result.lost += 1
                result.details["lost"].append(f"{load.names[acked.conversation_id]}: seq {acked.seq} "
                                              f"({acked.client_message_id}) acknowledged but not in history")
    result.duplicated = max(rest_extra, _check_database(load, cluster, result))


def _check_database(load: Load, cluster: Cluster, result: Result) -> int:
    """The same question asked of PostgreSQL: one row per (sender, client_message_id)."""
    try:
        with psycopg.connect(cluster.postgres.url, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT conversation_id::text, sender_id, client_message_id, array_agg(seq ORDER BY seq)"
                " FROM message.messages WHERE client_message_id IS NOT NULL"
                " GROUP BY 1, 2, 3 HAVING count(*) > 1").fetchall()
    except psycopg.Error as exc:
        result.details["notes"].append(f"message schema unreadable: {exc}")
        return 0
    extra = 0
    for conversation_id, sender, cmid, seqs in rows:
        extra += len(seqs) - 1
        result.details["duplicated"].append(f"{load.names.get(conversation_id, conversation_id)}: {cmid} by "
                                            f"{sender} stored {len(seqs)} times (seqs {seqs}) in message.messages")
    return extra
