"""PNG plots of a results file (matplotlib, the `bench` extra): latency percentiles against offered
load, the latency CDF, and the edge's RSS against open sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write(results: dict[str, Any], folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    runs = [r for r in results.get("throughput", []) if r.get("steps")]

    steps = sorted((s for r in runs for s in r["steps"] if s["latency_ms"].get("n")), key=lambda s: s["offered_per_s"])
    if steps:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        x = [s["offered_per_s"] for s in steps]
        for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-"), ("max", "x--")):
            ax.plot(x, [s["latency_ms"][key] for s in steps], style, label=key)
        for s in steps:
            if not s["counts"]:
                ax.annotate("loss/dup", (s["offered_per_s"], s["latency_ms"]["p99"]), fontsize=7, color="red")
        ax.axhline(100, color="grey", lw=0.8, ls=":", label="target p99 100 ms")
        ax.set_yscale("log")
        written.append(
            _finish(
                plt,
                fig,
                ax,
                folder / "latency_vs_load.png",
                f"offered messages/s (groups of {steps[0]['group_size']})",
                "send → receive latency, ms",
                "Latency against offered load",
            )
        )

        fig, ax = plt.subplots(figsize=(7, 4.2))
        for s in steps:
            if s.get("cdf"):
                ax.plot(
                    [p[0] for p in s["cdf"]],
                    [p[1] for p in s["cdf"]],
                    label=f"{s['offered_per_s']:,.0f} msg/s" + ("" if s["counts"] else " (loss/dup)"),
                )
        ax.set_xscale("log")
        written.append(
            _finish(
                plt,
                fig,
                ax,
                folder / "latency_cdf.png",
                "send → receive latency, ms",
                "fraction of deliveries",
                "Latency CDF",
            )
        )

    conn = results.get("connections")
    if conn and conn.get("rss_series"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        series = conn["rss_series"]
        ax.plot([p[0] for p in series], [p[1] for p in series], "o-", label="edge RSS")
        if series:
            base = series[0][1]
            xs = [p[0] for p in series]
            ax.plot(xs, [base + x * 40 / 1024 for x in xs], ":", color="grey", label="budget: 40 KB/socket")
        written.append(
            _finish(
                plt,
                fig,
                ax,
                folder / "rss_vs_connections.png",
                "open authenticated WebSockets",
                "edge RSS, MB",
                "Edge memory against connections",
            )
        )
    return written


def _finish(plt: Any, fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, legend and grid as every plot here has them, then write the PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
