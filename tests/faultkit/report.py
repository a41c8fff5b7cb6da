"""docs/reliability.md: what the last fault run measured, one row per scenario.

Rows are collected as scenarios finish, failed or passed, and the page is written at the end of the
module, so a red run still shows its numbers (the point of the table is the failing rows).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from tests.faultkit import load
from tests.faultkit.checks import RECOVERY_LIMIT_S
from tests.faultkit.cluster import TIME_SCALE

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


@dataclass
class Row:
    fault: str
    recovery_s: float | None
    lost: int | None
    duplicated: int | None
    reordered: int | None
    reordered_before: int
    never_recovered: int | None
    gaps: int | None
    internal_errors: int
    acked: int
    seconds: float
    verdict: str  # "pass", "FAIL", or "ERROR: ..." when the harness could not judge
    notes: str = ""

    @classmethod
    def unjudged(cls, fault: str, verdict: str, acked: int = 0, seconds: float = 0.0, notes: str = "") -> Row:
        """The row of a scenario the harness could not judge (it broke, or was interrupted)."""
        return cls(
            fault=fault,
            recovery_s=None,
            lost=None,
            duplicated=None,
            reordered=None,
            reordered_before=0,
            never_recovered=None,
            gaps=None,
            internal_errors=0,
            acked=acked,
            seconds=seconds,
            verdict=verdict,
            notes=notes,
        )


def _cell(value: int | float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _reordered(row: Row) -> str:
    if row.reordered_before:
        return f"{row.reordered} ({row.reordered_before} before the fault)"
    return _cell(row.reordered)


def write(rows: list[Row], started: float, command: str) -> Path:
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    took = time.monotonic() - started
    lines = [
        "# Reliability under faults",
        "",
        "Written by the fault suite (`tests/test_faults.py`, harness in `tests/faultkit/`, GitHub issue 14) at"
        " the end of its last run; regenerate it with",
        "",
        f"    {command}",
        "",
        "(`-m slow` keeps `-k faults` to this suite: by name it also matches tests/test_delivery_faults.py.)",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M %Z')} on {platform.node()} ({os.cpu_count()} cores), load average"
        f" at the end {load_avg}; {len(rows)} scenarios in {took / 60:.1f} min.",
        "",
        f"**Load.** Each scenario starts a world of its own (PostgreSQL, Redis with `appendfsync always`, the"
        f" four services as processes with `CHAT_TIME_SCALE={TIME_SCALE}`, a TCP proxy between edge and"
        f" message service) and runs {load.USERS} users in 3 groups and 2 direct chats, every third user with"
        f" two WebSocket devices, about {load.RATE_PER_S:.0f} msg/s, half over REST and half over WebSocket,"
        " each send retried with its `client_message_id` until acknowledged. Devices acknowledge what they"
        " receive, reconnect with jittered backoff and their last resume token, and refetch history on"
        " `resync_required`. The fault lands after a few seconds of load; the load goes on for a few"
        " seconds after it, then every device is given time to catch up.",
        "",
        "**Columns.** *Recovery*: from the end of the fault (the restarted process healthy, the proxy healed,"
        " the SIGCONT sent) until every device has received a probe sent in each of its conversations right"
        f" then. *Lost*: acknowledged messages missing at a participant's device (or from history)."
        " *Duplicated*: a `client_message_id` stored twice. *Reordered*: on one connection, a message's first"
        " arrival after a later seq of its conversation (those that arrived before the fault began are"
        " counted too, and said so: they are not the fault's doing). *Never recovered*: devices without their probes"
        f" {RECOVERY_LIMIT_S:.0f} s after the fault. *Gaps*: holes in a conversation's REST history."
        " *INTERNAL*: sends answered 500 INTERNAL/UNKNOWN (an outage should read 503/504).",
        "",
        "| fault | recovery time (s) | lost | duplicated | reordered | never recovered | history gaps |"
        " INTERNAL | acked | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.fault.replace('|', '/')} | {_cell(row.recovery_s)} | {_cell(row.lost)} |"
            f" {_cell(row.duplicated)} |"
            f" {_reordered(row)} | {_cell(row.never_recovered)} | {_cell(row.gaps)} |"
            f" {row.internal_errors} | {row.acked} | {row.verdict} |"
        )
    noted = [row for row in rows if row.notes]
    if noted:
        lines += ["", "## What happened in each scenario", ""]
        for row in noted:
            lines += [f"**{row.fault}** ({row.seconds:.0f} s): {row.notes}", ""]
    PAGE.write_text("\n".join(lines).rstrip() + "\n")
    return PAGE
