"""One scenario from start to verdict: world up, load on, fault, probes, settle, checks, world down.

Timeline (t = 0 when the fault begins): load from t = -WARMUP_S; the fault's steps; at its end a
probe in every conversation; load until AFTER_S later; then every send in flight is settled and the
devices get up to SETTLE_S to catch up (the wait ends as soon as every device has everything).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.faultkit.checks import SHOWN, Result, check_storage, complete, judge, locate_losses
from tests.faultkit.cluster import Cluster
from tests.faultkit.load import Load
from tests.faultkit.report import Row
from tests.faultkit.scenarios import Scenario, run_steps

WARMUP_S = 4.0
AFTER_S = 6.0
SETTLE_S = 30.0
LIMIT_S = 300.0  # a scenario that takes longer is wedged: its row says so (pytest's timeout is the backstop)


@dataclass
class Outcome:
    row: Row
    failed: bool
    message: str  # the failure message: which scenario, which devices, which messages, what the logs said
    line: str  # the per-scenario line printed by the test


async def run_scenario(scenario: Scenario, root: Path) -> Outcome:
    started = time.monotonic()
    cluster = Cluster(root)
    played: list[Load] = []  # the load, once there is one (for the evidence of a harness error)
    try:
        async with asyncio.timeout(LIMIT_S):
            load, result = await _play(scenario, cluster, played)
    except Exception as exc:  # noqa: BLE001 - the harness could not judge: the row says so
        load = played[0] if played else None
        why = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} (over {LIMIT_S:.0f}s?)"
        cluster.note(f"harness error: {why}")
        row = Row.unjudged(
            scenario.title,
            f"ERROR: {type(exc).__name__}",
            len(load.acked) if load else 0,
            time.monotonic() - started,
            "; ".join(cluster.notes),
        )
        return Outcome(row, True, _message(scenario, cluster, load, None), f"{scenario.id}: harness error {why}")
    finally:
        await cluster.stop()
    failed = result.failed() or bool(load.failures) or bool(load.internal_errors)
    row = Row(
        fault=scenario.title,
        recovery_s=result.recovery_s,
        lost=result.lost,
        duplicated=result.duplicated,
        reordered=result.reordered,
        reordered_before=result.reordered_before,
        never_recovered=result.never_recovered,
        gaps=result.gaps,
        internal_errors=len(load.internal_errors),
        acked=len(load.acked),
        seconds=time.monotonic() - started,
        verdict="FAIL" if failed else "pass",
        notes=_notes(cluster, load, result),
    )
    recovery = f"{result.recovery_s:.1f}s" if result.recovery_s is not None else "never"
    line = (
        f"{scenario.id}: recovery {recovery}, lost {result.lost}, duplicated {result.duplicated}, "
        f"reordered {result.reordered} ({result.reordered_before} before the fault), gaps {result.gaps}, "
        f"never recovered {result.never_recovered}, "
        f"INTERNAL {len(load.internal_errors)}, failed sends {len(load.failures)}, acked {len(load.acked)}, "
        f"{row.seconds:.0f}s"
    )
    return Outcome(row, failed, _message(scenario, cluster, load, result) if failed else "", line)


async def _play(scenario: Scenario, cluster: Cluster, played: list[Load]) -> tuple[Load, Result]:
    await cluster.start()
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=cluster.edge_url, timeout=20, limits=limits) as http:
        load = Load(cluster, http, f"f{secrets.token_hex(3)}")
        played.append(load)
        try:
            await load.setup()
            sending = asyncio.create_task(load.run())
            await asyncio.sleep(WARMUP_S)
            cluster.t0 = fault_start = time.monotonic()
            await run_steps(cluster, scenario.steps)
            fault_end = time.monotonic()
            cluster.note("fault over")
            for conversation_id, members in load.conversations.items():
                load.start_send(conversation_id, members[0], probe=True)
            await asyncio.sleep(AFTER_S)
            sending.cancel()
            await load.drain()
            settle_end = time.monotonic() + SETTLE_S
            while time.monotonic() < settle_end and not (
                complete(load) and len(load.probes) == len(load.conversations)
            ):
                await asyncio.sleep(0.25)
            result = judge(load, fault_start, fault_end)
            await check_storage(load, cluster, result)
            await asyncio.to_thread(locate_losses, load, cluster, result)
            return load, result
        finally:
            await load.close()


def _notes(cluster: Cluster, load: Load, result: Result) -> str:
    """The row's short story for docs/reliability.md: the timeline, why sends were retried, and the
    first finding of each kind."""
    parts = ["; ".join(cluster.notes)]
    reconnects = sum(max(len(d.connections) - 1, 0) for d in load.devices)
    resyncs = sum(len(d.resyncs) for d in load.devices)
    from_history = sum(a.via == "history" for d in load.devices for a in d.seen.values())
    parts.append(
        f"devices: {reconnects} reconnects, {resyncs} resync_required, {from_history} messages filled from history"
    )
    if load.retries:
        parts.append("retried sends: " + ", ".join(f"{why} x{n}" for why, n in load.retries.most_common(5)))
    for kind in ("lost", "duplicated", "reordered", "never recovered", "gaps", "where the first loss stopped"):
        if found := result.details.get(kind):
            parts.append(f"{kind} ({len(found)} findings), first: {found[0]}")
    if load.failures:
        parts.append(f"failed sends: {load.failures[0]}")
    if load.internal_errors:
        parts.append(f"INTERNAL answers: {', '.join(load.internal_errors[:3])}")
    return ". ".join(p for p in parts if p)


def _message(scenario: Scenario, cluster: Cluster, load: Load | None, result: Result | None) -> str:
    lines = [f"scenario {scenario.id!r} ({scenario.title}) failed"]
    if result is not None:
        lines.append(
            f"counts: lost {result.lost}, duplicated {result.duplicated}, reordered {result.reordered}, "
            f"history gaps {result.gaps}, never recovered {result.never_recovered}"
        )
        for kind, found in result.details.items():
            lines += [f"{kind} ({len(found)}):"] + [f"  {f}" for f in found[:SHOWN]]
            lines += [f"  ... and {len(found) - SHOWN} more"] if len(found) > SHOWN else []
    if load is not None:
        if load.failures:
            lines += [f"sends that failed ({len(load.failures)}):"] + [f"  {f}" for f in load.failures[:SHOWN]]
        if load.internal_errors:
            lines.append(f"sends answered INTERNAL ({len(load.internal_errors)}): {load.internal_errors[:SHOWN]}")
        lines.append(f"retried sends: {dict(load.retries.most_common(8))}")
        lines.append(
            "devices: "
            + ", ".join(f"{d.name} {len(d.connections)} conns/{len(d.resyncs)} resyncs" for d in load.devices)
        )
    lines += ["timeline:"] + [f"  {n}" for n in cluster.notes]
    lines += ["service log errors:"] + [f"  {line}" for line in cluster.log_lines()]
    lines.append(f"logs: {cluster.mesh.log_dir}")
    return "\n".join(lines)
