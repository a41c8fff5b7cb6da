"""throughput: open-loop senders at a fixed offered rate into groups, receivers on WebSockets.

Every user of a group has one socket that both sends (its share of the offered rate, on a fixed
schedule: a late reply cannot slow the senders, so queueing shows as latency) and receives. Latency
is from a message's scheduled send time to its arrival at each recipient, the sender's own copy
included. A step counts only with zero lost and zero duplicated deliveries and every send accepted.
The ramp mode raises the rate by 25% a step (until two steps in a row miss the p99 bound, or one loses
or duplicates) and reports the highest rate whose p99 stayed under the bound.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from chatmesh_tools.bench import fixtures, procstats, profile, shares
from chatmesh_tools.bench.pool import LoadGen, log
from chatmesh_tools.bench.progress import Progress
from chatmesh_tools.bench.stats import cdf, cpu_per_1000, percentiles
from chatmesh_tools.bench.target import Target
from chatmesh_tools.launcher import kind_of

SETTLE_S = 3.0


def _step(
    gen: LoadGen,
    target: Target,
    step: int,
    rate: float,
    duration_s: float,
    group_size: int,
    label: str,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    pids = {**target.pids, **gen.pids}
    load = procstats.machine_load()
    spies = profile.start(target.pids, profile_dir, duration_s) if profile_dir else []
    counters = shares.scrape(target.metrics_urls)
    before = procstats.sample(pids)
    started = time.monotonic()
    result = gen.run_step(step, duration_s, rate, group_size, Progress(label, duration_s, "s"))
    wall = time.monotonic() - started
    cpu = procstats.delta(before, procstats.sample(pids))
    work = shares.summarize(
        counters,
        shares.scrape(target.metrics_urls),
        [n for n in target.pids if kind_of(n) == "message"],
        [n for n in target.pids if kind_of(n) == "edge"] or list(target.metrics_urls),
    )
    if spies and profile_dir:
        log(profile.finish(spies, profile_dir, top=12))
    lat = result.pop("latencies_ms")
    acks = result.pop("ack_ms")
    cpu["loadgen"] = round(sum(v for k, v in cpu.items() if k.startswith("loadgen-")), 3)
    cpu = {k: v for k, v in cpu.items() if not k.startswith("loadgen-")}
    ok = (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["accepted"] == result["sent"]
        and result["sent"] > 0
        and result["unexpected"] == 0
    )
    out = {
        "offered_per_s": rate,
        "duration_s": duration_s,
        "group_size": group_size,
        **result,
        "accepted_per_s": round(result["accepted"] / duration_s, 1),
        "deliveries_per_s": round(result["received"] / duration_s, 1),
        "latency_ms": percentiles(lat),
        "send_ack_ms": percentiles(acks),
        "cdf": cdf(lat),
        "cpu_s": cpu,
        "cpu_s_per_1000_deliveries": cpu_per_1000(cpu, result["received"]),
        "cpu_cores_busy": round(sum(cpu.values()) / wall, 2),
        **work,
        "wall_s": round(wall, 1),
        "machine_load_before": load,
        "machine_load_after": procstats.machine_load(),
        "counts": ok,
    }
    log(
        f"  rate {rate:,.0f}/s: accepted {out['accepted_per_s']:,.0f}/s, deliveries {out['deliveries_per_s']:,.0f}/s, "
        f"p50/p99/max {out['latency_ms'].get('p50')}/{out['latency_ms'].get('p99')}/{out['latency_ms'].get('max')} ms, "
        f"lost {result['lost']}, dup {result['duplicated']}, errors {result['errors'] or '-'}, load {load['load1']}"
    )
    return out


def run(
    target: Target,
    *,
    groups: int,
    group_size: int,
    rates: list[float],
    duration_s: float,
    workers: int,
    ack: str,
    ramp: bool,
    ramp_p99_ms: float,
    ramp_max_rate: float,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    users, conversations = fixtures.make(target, f"tp{int(time.time())}-{group_size}", groups * group_size, group_size)
    gen = LoadGen(target.ws_urls, users, conversations, workers, ack=ack)
    try:
        gen.wait_connected(Progress("connect", len(users)))
        log(f"  {gen.connected} sockets in {gen.connect_s:.1f}s ({gen.failed} failed)")
        time.sleep(SETTLE_S)  # subscriptions (offline buffers, presence) finish before the first step
        steps: list[dict[str, Any]] = []
        if ramp:
            rate, step, misses = rates[0], 0, 0
            best: dict[str, Any] | None = None
            while rate <= ramp_max_rate:
                step += 1
                result = _step(gen, target, step, rate, duration_s, group_size, f"ramp {rate:,.0f}/s")
                steps.append(result)
                good = result["counts"] and result["latency_ms"].get("p99", 1e9) <= ramp_p99_ms
                # On a shared machine one step can miss by a noise spike: stop after two misses in a row.
                misses = 0 if good else misses + 1
                if good and (best is None or rate > best["offered_per_s"]):
                    best = result
                if misses >= 2 or not result["counts"]:
                    break
                rate = round(rate * 1.25)
            return {
                "mode": "ramp",
                "p99_bound_ms": ramp_p99_ms,
                "steps": steps,
                "best_rate": best["offered_per_s"] if best else 0,
                "sockets": gen.connected,
                "ack": ack,
            }
        for step, rate in enumerate(rates, 1):
            steps.append(
                _step(
                    gen,
                    target,
                    step,
                    rate,
                    duration_s,
                    group_size,
                    f"{rate:,.0f} msg/s",
                    profile_dir if step == 1 else None,
                )
            )
        return {"mode": "fixed", "steps": steps, "sockets": gen.connected, "ack": ack}
    finally:
        gen.stop()
