"""`chatmesh bench --quick` as a smoke test: every scenario runs end to end against a mesh of its own and
delivers everything exactly once. Speed is not asserted (the machine running the tests is shared)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")  # a dependency of the embedded servers, so normally there


def bench(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """`chatmesh bench` in a subprocess; past the timeout it gets SIGTERM (bench then stops the mesh it
    started, which SIGKILL would orphan) before the test fails."""
    command = [sys.executable, "-m", "chatmesh_tools.cli", "bench", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=90)
            pytest.fail(f"bench took over {timeout_s:.0f}s\n{out[-3000:]}{err[-5000:]}")
        return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.timeout(600)
def test_quick_bench_loses_and_duplicates_nothing(tmp_path: Path, postgres_server: str, redis_server: str) -> None:
    out = tmp_path / "bench"
    run = bench(
        "--quick",
        "--out",
        str(out),
        "--no-plots",
        "--database-url",
        postgres_server,
        "--redis-url",
        redis_server,
        timeout_s=480,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())

    connections = results["connections"]
    assert connections["connected"] == connections["sockets"] and connections["failed"] == 0
    assert connections["edge_rss_kb_per_socket"] is not None

    assert {r["steps"][0]["group_size"] for r in results["throughput"]} == {10, 2}
    for run_ in results["throughput"]:
        for step in run_["steps"]:
            assert step["sent"] > 0 and step["accepted"] == step["sent"], step["errors"]
            assert step["lost"] == 0 and step["duplicated"] == 0 and step["unexpected"] == 0
            assert step["received"] == step["accepted"] * step["group_size"]
            assert step["latency_ms"]["n"] == step["received"]
            assert step["cpu_s_per_1000_deliveries"]["edge"] > 0 and "loadgen" in step["cpu_s"]

    history = results["history"]
    assert history["seeded_by"].startswith("COPY") and all(
        p["errors"] == 0 and p["pages"] > 0 for p in history["phases"]
    )
    assert results["ceiling"]["postgres"]["commits"] > 0 and results["ceiling"]["redis"]["messages"] > 0
    assert "sends_vs_postgres" in results["ratios"]


@pytest.mark.timeout(400)
def test_bench_spreads_a_group_over_two_edges_and_two_message_replicas(
    tmp_path: Path, postgres_server: str, redis_server: str
) -> None:
    """One group of 10 on two edges (members alternate), two message replicas, limits lifted: every
    message reaches all ten once, both edges push events, and the report names each replica."""
    out = tmp_path / "bench"
    run = bench(
        "--scenarios",
        "throughput",
        "--message-replicas",
        "2",
        "--edges",
        "2",
        "--no-rate-limits",
        "--runs",
        "10:60",
        "--senders",
        "10",
        "--duration",
        "2",
        "--workers",
        "1",
        "--out",
        str(out),
        "--no-plots",
        "--database-url",
        postgres_server,
        "--redis-url",
        redis_server,
        timeout_s=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    assert results["target"]["rate_limits_lifted"] and "LIFTED" in run.stdout
    assert len(results["target"]["edge_urls"]) == 2

    (step,) = results["throughput"][0]["steps"]
    assert step["sent"] > 0 and step["accepted"] == step["sent"], step["errors"]
    assert step["lost"] == 0 and step["duplicated"] == 0 and step["unexpected"] == 0
    assert step["received"] == step["accepted"] * 10
    assert {"message", "message-2", "edge", "edge-2", "loadgen"} <= set(step["cpu_s_per_1000_deliveries"])
    assert set(step["fanout_share_pct"]) == {"message", "message-2"}  # a share, or None where not served
    assert all(n and n > 0 for n in step["pushed_events"].values()), step["pushed_events"]  # deliveries crossed edges
    assert "message-2" in run.stdout and "fan-out share" in run.stdout
