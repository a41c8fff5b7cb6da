"""CPU seconds and RSS of named processes (psutil); PostgreSQL's backends are counted with the postmaster."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the dev deps yet


@dataclass
class Sample:
    cpu_s: float
    rss: int


def _tree(pid: int, with_children: bool) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)] if with_children else [proc]
    except psutil.Error:
        return []


def sample(pids: dict[str, int]) -> dict[str, Sample]:
    """PostgreSQL counts its live backends and, through the postmaster's children times, the ones that
    have exited (a connection opened and closed between two samples, as the ceiling's are)."""
    out: dict[str, Sample] = {}
    for name, pid in pids.items():
        cpu, rss = 0.0, 0
        for proc in _tree(pid, with_children=name == "postgres"):
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system
                if name == "postgres" and proc.pid == pid:
                    cpu += times.children_user + times.children_system
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        out[name] = Sample(cpu, rss)
    return out


def delta(before: dict[str, Sample], after: dict[str, Sample]) -> dict[str, float]:
    """CPU seconds each process spent between two samples."""
    return {name: round(after[name].cpu_s - before[name].cpu_s, 3) for name in after if name in before}


def machine_load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {
        "load1": round(one, 2),
        "load5": round(five, 2),
        "load15": round(fifteen, 2),
        "cpus": psutil.cpu_count() or 0,
    }
