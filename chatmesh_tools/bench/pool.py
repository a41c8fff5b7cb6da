"""The parent's side of the load generator: worker processes, their sockets, steps and results."""

from __future__ import annotations

import multiprocessing
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from chatmesh_tools.bench.loadgen import WorkerSpec, worker_main
from chatmesh_tools.bench.progress import Progress

STALL_S = 8.0
# Sockets per source address towards one edge: the ephemeral port range (32768-60999) holds ~28,000.
PER_SOURCE_ADDRESS = 20_000


def spread(ws_urls: list[str], n: int) -> tuple[list[str], list[str]]:
    """Each of n sockets' edge (round robin, so consecutive users, the members of one group, sit on
    different edges and every delivery between them crosses edges) and its source address: "" (the
    default) while one address has ports enough, else 127.0.0.1, .2, ... for a loopback edge."""
    edges = [ws_urls[i % len(ws_urls)] for i in range(n)]
    per_edge = -(-n // len(ws_urls))
    addresses = -(-per_edge // PER_SOURCE_ADDRESS)
    local = any(h in u for u in ws_urls for h in ("//127.0.0.1:", "//localhost:"))
    if addresses <= 1 or not local:
        return edges, [""] * n
    return edges, [f"127.0.0.{1 + (i // len(ws_urls)) % addresses}" for i in range(n)]


class LoadGen:
    def __init__(
        self,
        ws_urls: list[str],
        users: list[tuple[str, str]],
        conversations: list[str],
        workers: int,
        ack: str = "events",
        content_size: int = 64,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.pipes: list[Connection] = []
        workers = max(1, min(workers, len(users)))
        edges, hosts = spread(ws_urls, len(users))
        self.source_addresses = sorted(set(hosts) - {""})
        for i in range(workers):
            spec = WorkerSpec(
                edges[i::workers],
                users[i::workers],
                conversations[i::workers],
                hosts[i::workers],
                ack,
                content_size,
                seed=i,
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(spec, child), daemon=True, name=f"bench-loadgen-{i}")
            proc.start()
            self.procs.append(proc)
            self.pipes.append(parent)
        self.total = len(users)
        self.connected = 0
        self.failed = 0
        self.connect_s = 0.0
        self.connect_errors: dict[str, int] = {}

    @property
    def pids(self) -> dict[str, int]:
        return {f"loadgen-{i}": p.pid for i, p in enumerate(self.procs)}

    def _recv_all(
        self, kind: str, timeout_s: float, on_other: Any = None, deadline_of: Callable[[], float] | None = None
    ) -> list[tuple[Any, ...]]:
        """Each worker's next `kind` message; TimeoutError after timeout_s (or past deadline_of(), which
        may move, e.g. while connects still progress)."""
        got: dict[int, tuple[Any, ...]] = {}
        fixed = time.monotonic() + timeout_s
        while len(got) < len(self.pipes):
            if time.monotonic() > (deadline_of() if deadline_of else fixed):
                raise TimeoutError(f"load generator: no {kind!r} from {len(self.pipes) - len(got)} worker(s)")
            for i, pipe in enumerate(self.pipes):
                if i in got:
                    continue
                while pipe.poll():
                    msg = pipe.recv()
                    if msg[0] == kind:
                        got[i] = msg
                        break
                    if on_other:
                        on_other(i, msg)
            if not all(p.is_alive() for p in self.procs):
                raise RuntimeError("a load generator worker died")
            wait(self.pipes, 0.05)
        return [got[i] for i in range(len(self.pipes))]

    def wait_connected(self, progress: Progress | None = None, stall_s: float = 180, on_tick: Any = None) -> None:
        """Until every worker has tried all its sockets; TimeoutError once no socket has connected or
        failed for stall_s (a loaded machine connects slowly, but it connects)."""
        done = [0] * len(self.pipes)
        last = [time.monotonic()]

        def other(i: int, msg: tuple[Any, ...]) -> None:
            if msg[0] == "connected":
                if msg[1] != done[i]:
                    last[0] = time.monotonic()
                done[i] = msg[1]
                if progress:
                    progress.update(sum(done))
                if on_tick:
                    on_tick(sum(done))

        started = time.monotonic()
        ready = self._recv_all("ready", stall_s, other, deadline_of=lambda: last[0] + stall_s)
        self.connect_s = time.monotonic() - started
        self.connected = sum(r[1] for r in ready)
        self.failed = sum(r[2] for r in ready)
        self.connect_errors = dict(sum((Counter(r[4]) for r in ready), Counter[str]()))
        if progress:
            progress.update(self.connected)

    def run_step(
        self,
        step: int,
        duration_s: float,
        rate: float,
        expected_per_message: int,
        progress: Progress | None = None,
        drain_s: float = 60.0,
        start_in_s: float = 0.5,
    ) -> dict[str, Any]:
        """Offer `rate` messages/s for `duration_s`, wait for the deliveries (until all have arrived, nothing
        moved for STALL_S, or drain_s after the last send), and merge the workers' results."""
        t0 = time.monotonic_ns() + int(start_in_s * 1e9)
        per = rate / len(self.pipes)
        for pipe in self.pipes:
            pipe.send(("run", step, t0, duration_s, per))
        state: dict[int, tuple[int, int, int]] = {}
        end = t0 / 1e9 + duration_s
        last_change, last_seen = time.monotonic(), (-1, -1)
        while True:
            for i, pipe in enumerate(self.pipes):
                while pipe.poll():
                    msg = pipe.recv()
                    if msg[0] == "progress" and msg[1] == step:
                        state[i] = msg[2:5]
            sent = sum(s[0] for s in state.values())
            accepted = sum(s[1] for s in state.values())
            received = sum(s[2] for s in state.values())
            now = time.monotonic()
            if progress:
                progress.update(
                    min(now - t0 / 1e9, duration_s), f"sent {sent} accepted {accepted} delivered {received}"
                )
            if (accepted, received) != last_seen:
                last_seen, last_change = (accepted, received), now
            if now > end + 0.5 and len(state) == len(self.pipes):
                if received >= accepted * expected_per_message and accepted >= sent:
                    break  # everything accepted was delivered to every member
                if now > end + drain_s or now - last_change > STALL_S:
                    break  # stuck or too slow: what is missing counts as lost
            if not all(p.is_alive() for p in self.procs):
                raise RuntimeError("a load generator worker died")
            time.sleep(0.1)
        time.sleep(0.3)  # let stragglers and duplicates show up
        for pipe in self.pipes:
            pipe.send(("collect", step))
        results = [r[2] for r in self._recv_all("collected", 60)]
        return merge(results, expected_per_message)

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 15
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()


def merge(results: list[dict[str, Any]], expected_per_message: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: sum(r[k] for r in results)
        for k in ("sent", "accepted", "rejected", "received", "redelivered", "duplicated", "other_events")
    }
    latencies = array("d")
    acks = array("d")
    got: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    accepted_ids: list[str] = []
    for r in results:
        latencies.frombytes(r["latencies_ms"])
        acks.frombytes(r["ack_ms"])
        got.update(r["got"])
        errors.update(r["errors"])
        accepted_ids.extend(r["accepted_ids"])
    accepted = set(accepted_ids)
    out["lost"] = sum(max(0, expected_per_message - got.get(m, 0)) for m in accepted)
    out["unexpected"] = sum(n for m, n in got.items() if m not in accepted)  # delivered but never acked to sender
    out["latencies_ms"] = latencies
    out["ack_ms"] = acks
    out["errors"] = dict(errors)
    return out


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
