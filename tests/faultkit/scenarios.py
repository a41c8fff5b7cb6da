"""The faults of issue 14, each a timeline of steps relative to the moment the fault begins.

Steps run concurrently, each at its time, so a step that blocks (a service that will not become
healthy while Redis is stalled) cannot hold back the next one (the SIGCONT that would free it). The
fault ends when its last step has finished: for a restart, when the restarted process is healthy
again; recovery time is measured from there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.faultkit.cluster import RESTART_AFTER_S, Cluster

Action = Callable[[Cluster], Awaitable[None] | None]


@dataclass(frozen=True)
class Step:
    at_s: float
    action: Action


@dataclass(frozen=True)
class Scenario:
    id: str  # the pytest id
    title: str  # the report's "fault" column
    steps: tuple[Step, ...]


async def run_steps(cluster: Cluster, steps: tuple[Step, ...]) -> None:
    """Run a timeline; a step that fails is noted (and the fault still ends), never raised."""
    start = time.monotonic()

    async def one(step: Step) -> None:
        await asyncio.sleep(max(step.at_s - (time.monotonic() - start), 0))
        try:
            result = step.action(cluster)
            if result is not None:
                await result
        except Exception as exc:  # noqa: BLE001 - the scenario's row shows it
            cluster.note(f"step at {step.at_s:g}s failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")

    await asyncio.gather(*(one(step) for step in steps))


# actions --------------------------------------------------------------------------------------------------


def kill(name: str) -> Action:
    return lambda c: c.kill(name)


def restart(name: str) -> Action:
    return lambda c: c.restart(name)


def pause(name: str) -> Action:
    return lambda c: c.pause(name)


def resume(name: str) -> Action:
    return lambda c: c.resume(name)


def _noted(text: str, act: Callable[[Cluster], object]) -> Action:
    """A blocking action on a server, run in a thread so the load's loop never waits for it."""

    async def action(cluster: Cluster) -> None:
        await asyncio.to_thread(act, cluster)
        cluster.note(text)

    return action


redis_kill = _noted("Redis killed (SIGKILL)", lambda c: c.redis.kill())
redis_start = _noted("Redis restarted with its data", lambda c: c.redis.start())
redis_start_empty = _noted("Redis restarted emptied", lambda c: (c.redis.empty(), c.redis.start()))
redis_pause = _noted("Redis stopped (SIGSTOP)", lambda c: c.redis.pause())
redis_resume = _noted("Redis continued (SIGCONT)", lambda c: c.redis.resume())
postgres_kill = _noted("PostgreSQL postmaster killed (SIGKILL)", lambda c: c.postgres.kill())
partition = _noted("proxy partitions edge from message", lambda c: c.proxy.partition())
heal = _noted("proxy healed", lambda c: c.proxy.heal())
postgres_start = _noted("PostgreSQL restarted (crash recovery done)", lambda c: c.postgres.start())


def kill_and_restart(name: str) -> tuple[Step, ...]:
    return Step(0, kill(name)), Step(RESTART_AFTER_S, restart(name))


SCENARIOS: tuple[Scenario, ...] = (
    *(
        Scenario(f"kill-{name}", f"kill -9 {name}, restarted after 2 s", kill_and_restart(name))
        for name in ("conversation", "message", "presence", "edge")
    ),
    Scenario(
        "sigstop-message",
        "SIGSTOP message 12 s (edge deadline 10 s), SIGCONT",
        (Step(0, pause("message")), Step(12, resume("message"))),
    ),
    Scenario(
        "redis-restart", "Redis kill -9, restarted with its data after 2 s", (Step(0, redis_kill), Step(2, redis_start))
    ),
    Scenario(
        "redis-emptied", "Redis kill -9, restarted emptied after 2 s", (Step(0, redis_kill), Step(2, redis_start_empty))
    ),
    Scenario(
        "postgres-restart",
        "PostgreSQL postmaster kill -9, restarted after 2 s",
        (Step(0, postgres_kill), Step(2, postgres_start)),
    ),
    Scenario(
        "redis-stall",
        "Redis SIGSTOP 10 s (connections accepted, never answered), SIGCONT",
        (Step(0, redis_pause), Step(10, redis_resume)),
    ),
    Scenario(
        "redis-and-edge-down",
        "Redis kill -9; edge kill -9 at 1 s, back at 4 s; Redis back at 12 s",
        (Step(0, redis_kill), Step(1, kill("edge")), Step(4, restart("edge")), Step(12, redis_start)),
    ),
    Scenario(
        "message-restart-redis-down",
        "message kill -9 at 2 s and restarted at 4 s, during a Redis outage (0-10 s)",
        (Step(0, redis_kill), Step(2, kill("message")), Step(4, restart("message")), Step(10, redis_start)),
    ),
    Scenario("partition", "partition edge ↔ message (proxy) 10 s", (Step(0, partition), Step(10, heal))),
    Scenario(
        "combined-postgres-partition",
        "combined: partition 0-10 s; PostgreSQL kill -9 at 2 s, back at 5 s",
        (Step(0, partition), Step(2, postgres_kill), Step(5, postgres_start), Step(10, heal)),
    ),
    Scenario(
        "combined-message-redis-stall",
        "combined: Redis SIGSTOP 0-10 s; message kill -9 at 3 s, restarted at 5 s",
        (Step(0, redis_pause), Step(3, kill("message")), Step(5, restart("message")), Step(10, redis_resume)),
    ),
)
