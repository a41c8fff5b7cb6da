"""The summary table printed at the end of a run, and the targets it is judged against."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "throughput_rate": 1000,
    "throughput_p99_ms": 100,
    "kb_per_socket": 40,
    "sockets": 10_000,
    "history_p99_ms": 20,
}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    if c := results.get("connections"):
        idle = sum(c["idle_cpu_cores"].values())
        out.append(
            (
                "connections",
                f"{c['connected']:,} sockets ({c['failed']} failed), {c['connect_per_s']:,.0f}/s",
                f"edge {c['edge_rss_kb_per_socket']} KB/socket; idle mesh {idle:.3f} cores",
            )
        )
    for run in results.get("throughput", []):
        for s in run["steps"]:
            lat = s["latency_ms"]
            rate = (
                f"{s['offered_per_s']:,.0f} offered -> {s['accepted_per_s']:,.0f} msg/s, "
                f"{s['deliveries_per_s']:,.0f} deliveries/s"
            )
            verdict = (
                f"p50 {lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')} max {lat.get('max')} ms; "
                f"lost {s['lost']} dup {s['duplicated']}{'' if s['counts'] else ' (does not count)'}"
            )
            out.append((f"throughput g{s['group_size']} ack={run['ack']}", rate, verdict))
        if run["mode"] == "ramp":
            out.append(("ramp", f"best {run['best_rate']:,.0f} msg/s", f"p99 <= {run['p99_bound_ms']} ms, no loss"))
    if h := results.get("history"):
        for p in h["phases"]:
            lat = p["latency_ms"]
            verdict = f"p50 {lat.get('p50')} p99 {lat.get('p99')} max {lat.get('max')} ms; errors {p['errors']}"
            out.append((f"history c={p['concurrency']}", f"{p['pages_per_s']:,.0f} pages/s of {h['page']}", verdict))
    if ce := results.get("ceiling"):
        if pg := ce.get("postgres"):
            out.append(("ceiling postgres", f"{pg['commits_per_s']:,.0f} send txns/s", pg["what"]))
        if pg := ce.get("postgres_without_notify"):
            out.append(("ceiling postgres -notify", f"{pg['commits_per_s']:,.0f} send txns/s", pg["what"]))
        if rd := ce.get("redis"):
            out.append(
                (
                    "ceiling redis",
                    f"{rd['messages_per_s']:,.0f} msg/s",
                    f"{rd['deliveries_per_s']:,.0f} inbox entries/s",
                )
            )
    if r := results.get("ratios"):
        out.append(("mesh / ceiling", ", ".join(f"{k} {v}" for k, v in r.items()), ""))
    return out


def table(results: dict[str, Any]) -> str:
    lines = rows(results)
    if not lines:
        return "(no results)"
    w0 = max(len(r[0]) for r in lines)
    w1 = max(len(r[1]) for r in lines)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in lines)


def ratios(results: dict[str, Any]) -> dict[str, float]:
    ce = results.get("ceiling") or {}
    best = 0.0
    for run in results.get("throughput", []):
        for s in run["steps"]:
            if s["counts"]:
                best = max(best, s["accepted_per_s"])
    out: dict[str, float] = {}
    if best and (pg := ce.get("postgres")) and pg["commits_per_s"]:
        out["sends_vs_postgres"] = round(best / pg["commits_per_s"], 3)
    if best and (rd := ce.get("redis")) and rd["messages_per_s"]:
        out["sends_vs_redis"] = round(best / rd["messages_per_s"], 3)
    return out


def markdown(results: dict[str, Any]) -> str:
    """The summary as a Markdown table, with the machine and its load, for docs/performance.md."""
    m = results.get("machine", {})
    intro = (
        f"Run {results.get('started_at', '?')} – {results.get('finished_at', '?')}: {m.get('cpus')} CPUs "
        f"({m.get('cpu')}), {m.get('memory_gib')} GiB, Python {m.get('python')}; `uptime` at start: "
        f"`{m.get('uptime')}`; load at end {results.get('machine_load_end', {}).get('load1')}."
    )
    head = [intro, "", "| scenario | rate | result |", "|---|---|---|"]
    return "\n".join(head + [f"| {a} | {b} | {c} |" for a, b, c in rows(results)]) + "\n"
