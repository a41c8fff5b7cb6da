"""Fault injection under load (GitHub issue 14): each fault of tests/faultkit/scenarios.py lands on a
steady mixed load in a world of its own, and afterwards every recipient device must hold every
acknowledged message, once, in order per connection, with history gapless and every device
receiving again within 20 s of the fault's end.

Slow: not in the default run; `./scripts/test.sh --run-slow -m slow -k faults` (about 7 minutes). Each
scenario is one test, so a failing one hides no other's row; docs/reliability.md gets the table of
whatever ran, failed or not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultkit import report
from tests.faultkit.checks import judge, spans
from tests.faultkit.device import Arrival, Connection, Device
from tests.faultkit.load import Acked, Load
from tests.faultkit.runner import run_scenario
from tests.faultkit.scenarios import SCENARIOS, Scenario

pytestmark = pytest.mark.slow

ROWS: list[report.Row] = []
COMMAND = "./scripts/test.sh --run-slow -m slow -k faults"


@pytest.fixture(scope="module", autouse=True)
def reliability_report() -> Iterator[None]:
    """Writes docs/reliability.md once the scenarios that ran are done, whatever their verdicts."""
    started = time.monotonic()
    yield
    if ROWS:
        page = report.write(ROWS, started, COMMAND)
        print(f"\nwrote {page}")


@pytest.mark.timeout(420)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
async def test_fault(scenario: Scenario, tmp_path: Path) -> None:
    outcome = None
    try:
        outcome = await run_scenario(scenario, tmp_path / "world")
    finally:  # even when pytest's timeout interrupts it, the scenario keeps its row
        ROWS.append(outcome.row if outcome else report.Row.unjudged(scenario.title, "ERROR: interrupted"))
    print(f"\n{outcome.line}")
    assert not outcome.failed, outcome.message


def test_checks_find_planted_faults() -> None:
    """The instrument itself: a record with one loss, one reordering and one deaf device planted in
    it is judged as exactly that (a check that counts nothing would pass every scenario)."""
    load = Load(cluster=None, http=None, run_id="self-test")  # type: ignore[arg-type]
    load.conversations, load.names = {"c": ["alice", "bob"]}, {"c": "g1"}
    for seq in (1, 2, 3, 4):
        load.acked[f"m{seq}"] = Acked(f"m{seq}", "c", seq, f"cm-{seq}", "alice", at=0.0)
    load.probes["c"] = "m4"
    alice, bob = (
        Device(name, name, "token", "ws://unused", None, ["c"])  # type: ignore[arg-type]
        for name in ("alice", "bob")
    )
    load.devices = [alice, bob]
    for device, order in ((alice, (2, 1, 4)), (bob, (1, 2, 3))):  # alice: 1 after 2, 3 lost; bob: probe lost
        connection = Connection(1, opened_at=0.0)
        device.connections.append(connection)
        for seq in order:
            arrival = Arrival(f"m{seq}", "c", seq, at=10.0 + seq, via="live")
            connection.arrivals.append(arrival)
            device.seen[arrival.message_id] = arrival
    result = judge(load, fault_start=0.0, fault_end=12.0)
    assert (result.lost, result.reordered, result.never_recovered, result.recovery_s) == (2, 1, 1, None)
    assert "alice" in result.details["reordered"][0] and "seq 1" in result.details["reordered"][0]
    assert spans([5, 1, 2, 3, 7, 8]) == "1-3,5,7-8"
