"""Percentiles and a compact CDF of latency samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    s = sorted(samples)
    n = len(s)

    def at(q: float) -> float:
        return round(s[min(n - 1, int(q * n))], 2)

    return {
        "n": n,
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": round(s[-1], 2),
        "mean": round(sum(s) / n, 2),
    }


def cdf(samples: Sequence[float], points: int = 400) -> list[list[float]]:
    """[[latency, fraction <= latency], ...] at `points` quantiles plus the tail."""
    if not samples:
        return []
    s = sorted(samples)
    n = len(s)
    idx = sorted(
        {min(n - 1, int(i * n / points)) for i in range(points)}
        | {n - 1}
        | {min(n - 1, int(q * n)) for q in (0.99, 0.995, 0.999, 0.9999)}
    )
    return [[round(s[i], 3), round((i + 1) / n, 6)] for i in idx]


def cpu_per_1000(cpu: dict[str, float], count: int) -> dict[str, Any]:
    if count <= 0:
        return {}
    return {name: round(1000 * seconds / count, 4) for name, seconds in cpu.items()}
