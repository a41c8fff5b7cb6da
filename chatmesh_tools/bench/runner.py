"""`chatmesh bench`: start (or reach) a mesh, run the chosen scenarios, print a summary table, and write
results.json plus PNG plots."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chatmesh_tools.bench import plots, procstats, report
from chatmesh_tools.bench import target as targets
from chatmesh_tools.bench.args import SCENARIOS, apply_quick
from chatmesh_tools.bench.pool import log


def _machine() -> dict[str, Any]:
    import psutil  # type: ignore[import-untyped, unused-ignore]

    cpu = ""
    try:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    except OSError:
        pass
    try:
        uptime = subprocess.run(["uptime"], check=False, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ""
    return {
        "cpus": psutil.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uptime": uptime,
    }


def _parse_runs(specs: list[str]) -> list[tuple[int, list[float]]]:
    runs = []
    for spec in specs:
        size, _, rates = spec.partition(":")
        runs.append((int(size), [float(r) for r in rates.split("/") if r]))
    return runs


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    # SIGTERM, and SIGINT even when started in the background (where it is ignored), unwind through
    # the `finally` below: the mesh, its embedded servers and the load generator are stopped, not orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if args.quick:
        apply_quick(args)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    out = Path(args.out or f"bench-results/{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": _machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("func", "jwt_secret")},
    }
    if args.message_replicas < 1 or args.edges < 1:
        print("--message-replicas and --edges must be at least 1", file=sys.stderr)
        return 2
    if args.url and (args.message_replicas > 1 or args.edges > 1 or args.no_rate_limits):
        print(
            "--message-replicas, --edges and --no-rate-limits shape the bench's own mesh: not with --url",
            file=sys.stderr,
        )
        return 2
    if args.url:
        secret = args.jwt_secret or os.environ.get("CHAT_JWT_SECRET", "")
        if not secret:
            print("--url needs --jwt-secret (or CHAT_JWT_SECRET) to sign the bench users' tokens", file=sys.stderr)
            return 2
        target = targets.external(args.url, secret, args.database_url or "", args.redis_url or "")
    else:
        extra = dict(kv.split("=", 1) for kv in args.service_env)
        log(
            f"starting a mesh (conversation, message x{args.message_replicas}, presence, edge x{args.edges}; "
            f"{'PostgreSQL at --database-url' if args.database_url else 'embedded PostgreSQL'}, "
            f"{'Redis at --redis-url' if args.redis_url else 'embedded Redis'}"
            f"{'; rate limits lifted' if args.no_rate_limits else ''}) ..."
        )
        target = targets.start_embedded(
            extra,
            args.database_url or "",
            args.redis_url or "",
            message_replicas=args.message_replicas,
            edges=args.edges,
            no_rate_limits=args.no_rate_limits,
        )
        log(f"  up at {', '.join(target.edge_urls)}; processes {target.pids}")
    results["target"] = {
        "url": target.url,
        "edge_urls": target.edge_urls,
        "embedded": not args.url,
        "nofile": targets.raise_nofile(),
        "processes": sorted(target.pids),
        "message_replicas": args.message_replicas,
        "edges": args.edges,
        "rate_limits_lifted": target.limits_lifted,
        "lifted": targets.NO_RATE_LIMITS if target.limits_lifted else {},
    }
    ok = True
    try:
        if "connections" in chosen:
            log(f"connections: {args.sockets:,} idle WebSockets")
            results["connections"] = __import__("chatmesh_tools.bench.scenarios.connections", fromlist=["run"]).run(
                target,
                sockets=args.sockets,
                workers=max(args.workers, min(8, args.sockets // 2500 + 1)),
                idle_s=args.idle_s,
                profile_dir=out / "profile-idle" if args.profile else None,
            )
            ok &= results["connections"]["failed"] == 0
        if "throughput" in chosen:
            from chatmesh_tools.bench.scenarios import throughput

            results["throughput"] = []
            for size, rates in _parse_runs(args.runs):
                groups = max(1, args.senders // size)
                log(
                    f"throughput: {groups} conversation(s) of {size}, {groups * size} sockets, offered "
                    f"{'/'.join(f'{r:,.0f}' for r in rates)} msg/s for {args.duration:.0f}s"
                    f"{' (ramp)' if args.ramp else ''}, ack={args.ack}"
                )
                r = throughput.run(
                    target,
                    groups=groups,
                    group_size=size,
                    rates=rates,
                    duration_s=args.duration,
                    workers=args.workers,
                    ack=args.ack,
                    ramp=args.ramp,
                    ramp_p99_ms=args.ramp_p99_ms,
                    ramp_max_rate=args.ramp_max,
                    profile_dir=out / f"profile-g{size}" if args.profile else None,
                )
                results["throughput"].append(r)
                if not args.ramp:
                    ok &= all(s["counts"] for s in r["steps"])
        if "history" in chosen:
            from chatmesh_tools.bench.scenarios import history

            log(f"history: {args.history_messages:,} messages, pages of 50")
            results["history"] = history.run(
                target,
                messages=args.history_messages,
                page=50,
                duration_s=args.history_duration,
                concurrency=[int(c) for c in args.history_concurrency.split(",")],
            )
            ok &= all(p["errors"] == 0 for p in results["history"]["phases"])
        if "ceiling" in chosen:
            from chatmesh_tools.bench.scenarios import ceiling

            sizes = [s for s, _ in _parse_runs(args.runs)] or [10]
            log("ceiling: PostgreSQL send transactions, Redis delivery entries")
            results["ceiling"] = ceiling.run(
                target, duration_s=args.ceiling_duration, pg_connections=args.pg_connections, group_size=sizes[0]
            )
        results["ratios"] = report.ratios(results)
    finally:
        results["machine_load_end"] = procstats.machine_load()
        results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if target.log_dir:
            results["service_logs"] = str(target.log_dir)
        target.stop()
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "results.md").write_text(report.markdown(results))
    written = [] if args.no_plots else plots.write(results, out)
    print("\n" + report.table(results))
    print(f"\nresults: {out / 'results.json'}" + (f"; plots: {', '.join(p.name for p in written)}" if written else ""))
    results["ok"] = ok
    if not ok:
        print("FAILED: a run lost or duplicated deliveries, or had errors", file=sys.stderr)
    return 0 if ok else 1
