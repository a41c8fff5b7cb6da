"""connections: N authenticated idle WebSockets on one edge process (or spread over --edges).

Each socket is its own user, authenticated with a Bearer token on the upgrade (the edge records the
user on first sight, subscribes it on its event stream and reports it to presence). Reports the
connect rate, the edge's RSS against open sockets (and per socket, from the growth over the
pre-connect baseline) and the heartbeat cost: the CPU the mesh spends per second holding the
idle sockets (uvicorn's WebSocket pings every 20 s, the edge's presence heartbeats every TTL/3).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from chatmesh_tools.bench import fixtures, procstats, profile
from chatmesh_tools.bench.pool import LoadGen, log
from chatmesh_tools.bench.progress import Progress
from chatmesh_tools.bench.target import Target, raise_nofile
from chatmesh_tools.launcher import kind_of

MB = 1024 * 1024


def _edges_sample(pids: dict[str, int]) -> procstats.Sample | None:
    """All edges' CPU and RSS together (one edge unless --edges), or None without edge pids."""
    if not pids:
        return None
    samples = procstats.sample(pids).values()
    return procstats.Sample(sum(x.cpu_s for x in samples), sum(x.rss for x in samples))


def run(
    target: Target, *, sockets: int, workers: int, idle_s: float, profile_dir: Path | None = None
) -> dict[str, Any]:
    users, _ = fixtures.make(target, f"conn{int(time.time())}", sockets, 0, register=False)
    edge_pids = {name: pid for name, pid in target.pids.items() if kind_of(name) == "edge"}
    base = _edges_sample(edge_pids)
    series: list[list[float]] = [[0, round(base.rss / MB, 1)]] if base else []
    marks = sorted({max(1, sockets * k // 20) for k in range(1, 21)})

    def on_tick(done: int) -> None:
        if edge_pids and marks and done >= marks[0]:
            while marks and done >= marks[0]:
                marks.pop(0)
            if now := _edges_sample(edge_pids):
                series.append([done, round(now.rss / MB, 1)])

    nofile, per_edge = raise_nofile(), -(-sockets // max(1, len(target.ws_urls)))
    if per_edge > nofile - 200:
        log(
            f"  warning: an edge can hold about {nofile - 200:,} sockets (open-file limit {nofile:,}; raising the "
            f"hard limit needs root with CAP_SYS_RESOURCE), {per_edge:,} asked per edge: the rest will fail"
        )
    gen = LoadGen(target.ws_urls, users, [""] * len(users), workers)
    pids = {**target.pids, **gen.pids}
    load = procstats.machine_load()
    try:
        before_connect = procstats.sample(pids)
        gen.wait_connected(Progress("connect", sockets), on_tick=on_tick)
        connect_cpu = procstats.delta(before_connect, procstats.sample(pids))
        log(f"  {gen.connected} sockets in {gen.connect_s:.1f}s ({gen.failed} failed)")
        time.sleep(min(5.0, idle_s))  # let subscriptions and presence reports settle
        spies = profile.start(edge_pids, profile_dir, idle_s) if profile_dir else []
        before = procstats.sample(pids)
        progress = Progress("idle", idle_s, "s")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < idle_s:
            progress.update(elapsed)
            time.sleep(0.5)
        progress.done()
        after = procstats.sample(pids)
        idle_cpu = procstats.delta(before, after)
        if spies and profile_dir:
            log(profile.finish(spies, profile_dir, top=12))
        loadgen_rss = sum(v.rss for k, v in after.items() if k.startswith("loadgen-"))
        edge = _edges_sample(edge_pids)
        if edge and base:
            series.append([gen.connected, round(edge.rss / MB, 1)])
        result: dict[str, Any] = {
            "sockets": sockets,
            "edges": len(target.ws_urls),
            "workers": len(gen.procs),
            "source_addresses": gen.source_addresses or ["(default)"],
            "nofile": nofile,
            "connected": gen.connected,
            "failed": gen.failed,
            "connect_errors": gen.connect_errors,
            "connect_s": round(gen.connect_s, 2),
            "connect_per_s": round(gen.connected / gen.connect_s, 1) if gen.connect_s else 0,
            "connect_cpu_s": connect_cpu,
            "edge_rss_mb_before": round(base.rss / MB, 1) if base else None,
            "edge_rss_mb_after": round(edge.rss / MB, 1) if edge else None,
            "edge_rss_kb_per_socket": round((edge.rss - base.rss) / 1024 / max(1, gen.connected), 1)
            if edge and base
            else None,
            "rss_mb_after": {k: round(v.rss / MB, 1) for k, v in after.items() if not k.startswith("loadgen-")},
            "loadgen_rss_kb_per_socket": round(loadgen_rss / 1024 / max(1, gen.connected), 1),
            "idle_s": idle_s,
            "idle_cpu_cores": {k: round(v / idle_s, 4) for k, v in idle_cpu.items() if not k.startswith("loadgen-")},
            "heartbeat_cpu_ms_per_socket_per_min": round(
                1000
                * 60
                * sum(v for k, v in idle_cpu.items() if not k.startswith("loadgen-"))
                / idle_s
                / max(1, gen.connected),
                4,
            ),
            "rss_series": series,
            "machine_load": load,
            "machine_load_after": procstats.machine_load(),
        }
        log(
            f"  edge RSS {result['edge_rss_mb_before']} -> {result['edge_rss_mb_after']} MB, "
            f"{result['edge_rss_kb_per_socket']} KB/socket; connect {result['connect_per_s']}/s; idle mesh CPU "
            f"{sum(result['idle_cpu_cores'].values()):.3f} cores"
        )
        return result
    finally:
        gen.stop()
