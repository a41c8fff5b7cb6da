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


ORDER = ("message", "edge", "conversation", "presence", "postgres", "redis", "loadgen")


def _order(name: str) -> tuple[int, str]:
    kind = name.split("-", 1)[0]
    return (ORDER.index(kind) if kind in ORDER else len(ORDER), name)


def _pct(shares: dict[str, float | None]) -> str:
    return ", ".join(
        f"{k} {'n/a' if v is None else f'{v:g}%'}" for k, v in sorted(shares.items(), key=lambda kv: _order(kv[0]))
    )


def work_rows(step: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Each process's CPU seconds and CPU per 1,000 deliveries in a step, and each replica's share of the
    fan-out (message replicas) and of the events pushed onto sockets (edges); n/a where a replica does
    not serve the counter."""
    cpu: dict[str, float] = step.get("cpu_s") or {}
    per: dict[str, float] = step.get("cpu_s_per_1000_deliveries") or {}
    names = sorted(cpu, key=_order)
    line = ", ".join(f"{n} {cpu[n]:.2f}s ({per[n]:.3f})" if n in per else f"{n} {cpu[n]:.2f}s" for n in names)
    out = [("  CPU s (per 1k deliveries)", line, f"{step.get('cpu_cores_busy', 0)} cores busy")]
    if step.get("fanout_share_pct"):
        out.append(("  fan-out share", _pct(step["fanout_share_pct"]), "chat_fanout_events_total"))
    if step.get("pushed_share_pct"):
        pushed = step["pushed_share_pct"]
        frames = step.get("edge_frames") or {}
        extra = "; ".join(
            f"{series}: " + ", ".join(f"{k} {'n/a' if v is None else f'{v:,.0f}'}" for k, v in by.items())
            for series, by in frames.items()
        )
        out.append(("  edge pushes share", _pct(pushed), extra or "chat_delivery_lag_seconds_count"))
    return out


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    if t := results.get("target"):
        if t.get("message_replicas", 1) > 1 or t.get("edges", 1) > 1:
            out.append(
                ("mesh", f"message x{t['message_replicas']}, edge x{t['edges']}", ", ".join(t.get("processes", [])))
            )
        if t.get("rate_limits_lifted"):
            out.append(
                ("rate limits", "LIFTED (--no-rate-limits)", ", ".join(f"{k}={v}" for k, v in t["lifted"].items()))
            )
    if c := results.get("connections"):
        idle = sum(c["idle_cpu_cores"].values())
        out.append(
            (
                "connections",
                f"{c['connected']:,} sockets ({c['failed']} failed"
                f"{', ' + str(c['connect_errors']) if c.get('connect_errors') else ''}), {c['connect_per_s']:,.0f}/s",
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
            out.extend(work_rows(s))
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
    """Aligned columns; a step's detail rows (indented labels) are printed beneath it unaligned, so
    their long lines do not widen the table."""
    lines = rows(results)
    if not lines:
        return "(no results)"
    main = [r for r in lines if not r[0].startswith("  ")]
    w0 = max(len(r[0]) for r in main)
    w1 = max(len(r[1]) for r in main)
    return "\n".join(
        f"{a}: {b}" + (f"  [{c}]" if c else "") if a.startswith("  ") else f"{a:<{w0}}  {b:<{w1}}  {c}"
        for a, b, c in lines
    )


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
