"""`chatmesh bench --quick` as a smoke test: every scenario runs end to end against a mesh of its own and
delivers everything exactly once. Speed is not asserted (the machine running the tests is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")  # a dependency of the embedded servers, so normally there


@pytest.mark.timeout(300)
def test_quick_bench_loses_and_duplicates_nothing(tmp_path: Path, postgres_server: str, redis_server: str) -> None:
    out = tmp_path / "bench"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatmesh_tools.cli",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--no-plots",
            "--database-url",
            postgres_server,
            "--redis-url",
            redis_server,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
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
