"""The load generator's worker process: many WebSockets, each an authenticated user that sends on a
fixed schedule (open loop) and receives, dedupes and acknowledges its events.

Raw `websockets` rather than a full client library: one process must hold thousands of sockets and
tens of thousands of frames a second, so a socket here is one connection, one receive task and a few
dicts. A worker talks to the parent over a Pipe:

  parent -> ("run", step, t0_ns, duration_s, rate) | ("collect", step) | ("stop",)
  worker -> ("connected", n, failed) ... ("ready", n, failed, seconds)
            ("progress", step, sent, accepted, received)   every 0.25 s while running
            ("collected", step, result dict)
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

loads: Callable[[str | bytes], Any]
try:
    import orjson

    def dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is an optional speed-up
    import json

    dumps = json.dumps
    loads = json.loads

CONNECT_CONCURRENCY = 100
PROGRESS_S = 0.25
ACK_FLUSH_S = 0.2  # acknowledgements go in batches: the edge refuses more than 50 frames/s per socket


@dataclass
class WorkerSpec:
    ws_urls: list[str]  # the edge each user connects to (sockets are spread over the edges)
    users: list[tuple[str, str]]  # (user_id, token)
    conversations: list[str]  # the conversation each user sends into ("" for none)
    # The source address each user's socket binds ("" for the default): one source address has only
    # ~28,000 ephemeral ports towards one edge, so 50,000 sockets need several 127.0.0.x.
    local_hosts: list[str] = field(default_factory=list)
    ack: str = "events"  # "events": events_ack in batches; "delivered": chat:message_delivered per message
    content_size: int = 64
    seed: int = 0


@dataclass
class StepStats:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    received: int = 0  # unique (user, message) deliveries
    redelivered: int = 0  # the same event id again (redelivery of an unacknowledged event)
    duplicated: int = 0  # the same message to the same user again under another event id (no dedupe possible)
    other_events: int = 0
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    ack_ms: array[float] = field(default_factory=lambda: array("d"))
    accepted_ids: list[str] = field(default_factory=list)
    got: Counter[str] = field(default_factory=Counter)  # message id -> users here who received it
    errors: Counter[str] = field(default_factory=Counter)


class Socket:
    def __init__(
        self, worker: Worker, user_id: str, token: str, conversation_id: str, ws_url: str, local_host: str = ""
    ) -> None:
        self.worker = worker
        self.ws_url = ws_url
        self.local_host = local_host
        self.user_id = user_id
        self.token = token
        self.conversation_id = conversation_id
        self.ws: Any = None
        self.seen_events: set[str] = set()
        self.seen_messages: dict[str, str] = {}  # message id -> event id
        self.pending: dict[str, tuple[int, int]] = {}  # request id -> (step, scheduled ns)
        self.to_ack: list[str] = []
        self.delivered: dict[str, tuple[int, str]] = {}  # conversation -> (highest seq, message id) to report
        self.next_id = 0
        self.closed = False

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        extra: dict[str, Any] = {"local_addr": (self.local_host, 0)} if self.local_host else {}
        self.ws = await connect(
            self.ws_url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            ping_interval=None,
            max_size=2**20,
            open_timeout=60,
            close_timeout=2,
            **extra,
        )
        ready = loads(await asyncio.wait_for(self.ws.recv(), 60))
        if ready.get("type") != "ready":
            raise RuntimeError(f"not ready: {ready}")

    async def send(self, step: int, scheduled_ns: int, content: str) -> None:
        self.next_id += 1
        rid = str(self.next_id)
        self.pending[rid] = (step, scheduled_ns)
        frame = {
            "type": "chat:message_send",
            "id": rid,
            "data": {
                "conversation_id": self.conversation_id,
                "content": content,
                "client_message_id": f"{self.user_id}-{step}-{rid}",
            },
        }
        await self.ws.send(dumps(frame))

    async def receive(self) -> None:
        w = self.worker
        try:
            async for raw in self.ws:
                now = time.monotonic_ns()
                frame = loads(raw)
                kind = frame.get("type")
                if kind == "chat:message_received":
                    w.on_message(self, frame, now)
                elif kind == "ack":
                    if (p := self.pending.pop(str(frame.get("id")), None)) is not None:
                        stats = w.step_stats(p[0])
                        stats.accepted += 1
                        stats.ack_ms.append((now - p[1]) / 1e6)
                        stats.accepted_ids.append(frame["data"]["message"]["message_id"])
                elif kind == "error":
                    if (p := self.pending.pop(str(frame.get("id")), None)) is not None:
                        stats = w.step_stats(p[0])
                        stats.rejected += 1
                        stats.errors[frame.get("data", {}).get("code", "?")] += 1
                    else:
                        w.current().errors["frame:" + str(frame.get("data", {}).get("code", "?"))] += 1
                elif frame.get("resume_token") and frame.get("event_id"):
                    w.current().other_events += 1
                    self.to_ack.append(frame["event_id"])  # receipts etc.: acknowledge, not counted
                    w.ack_ready.set()
        except Exception as exc:  # noqa: BLE001 - a closed socket is counted, the run decides
            if not self.closed:
                code = getattr(getattr(exc, "rcvd", None), "code", "")
                w.current().errors[f"closed:{type(exc).__name__}:{code}"] += 1

    async def flush_acks(self) -> None:
        """One events_ack for everything received since the last flush, and (ack=delivered) one
        chat:message_delivered per conversation for its newest message, as an app does."""
        if self.closed:
            return
        ids, self.to_ack = self.to_ack, []
        delivered, self.delivered = self.delivered, {}
        try:
            if ids:
                await self.ws.send(dumps({"type": "events_ack", "data": {"event_ids": ids}}))
            for _, message_id in delivered.values():
                await self.ws.send(dumps({"type": "chat:message_delivered", "data": {"message_id": message_id}}))
        except Exception:  # noqa: BLE001, S110 - a closed socket is counted by its receive loop
            pass


class Worker:
    def __init__(self, spec: WorkerSpec, pipe: Connection) -> None:
        self.spec = spec
        self.pipe = pipe
        self.sockets: list[Socket] = []
        self.steps: dict[int, StepStats] = {}
        self.step = 0
        self.ack_ready = asyncio.Event()
        self.failed = 0

    def step_stats(self, step: int) -> StepStats:
        if step not in self.steps:
            self.steps[step] = StepStats()
        return self.steps[step]

    def current(self) -> StepStats:
        return self.step_stats(self.step)

    def on_message(self, sock: Socket, frame: dict[str, Any], now: int) -> None:
        event_id = frame.get("event_id", "")
        data = frame.get("data") or {}
        message_id = data.get("message_id", "")
        content = data.get("content", "")
        parts = content.split(" ", 3)
        step = int(parts[1]) if len(parts) > 2 and parts[0] == "bench" else self.step
        stats = self.step_stats(step)
        if event_id in sock.seen_events:
            stats.redelivered += 1  # the same event again (re-pushed unacknowledged): a client dedupes it
        else:
            sock.seen_events.add(event_id)
            if message_id in sock.seen_messages:
                stats.duplicated += 1
            else:
                sock.seen_messages[message_id] = event_id
                stats.received += 1
                stats.got[message_id] += 1
                if len(parts) > 2 and parts[0] == "bench":
                    stats.latencies_ms.append((now - int(parts[2])) / 1e6)
        sock.to_ack.append(event_id)
        if self.spec.ack == "delivered":
            cid = frame.get("conversation_id") or data.get("conversation_id", "")
            seq = int(data.get("seq") or 0)
            if seq > sock.delivered.get(cid, (0, ""))[0]:
                sock.delivered[cid] = (seq, message_id)
        self.ack_ready.set()

    async def ack_loop(self) -> None:
        while True:
            await self.ack_ready.wait()
            self.ack_ready.clear()
            for sock in self.sockets:
                if sock.to_ack or sock.delivered:
                    await sock.flush_acks()
            await asyncio.sleep(ACK_FLUSH_S)

    async def connect_all(self) -> None:
        started = time.monotonic()
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        done = 0

        async def one(sock: Socket) -> None:
            nonlocal done
            async with limit:
                for attempt in range(3):
                    try:
                        await sock.connect()
                        self.sockets.append(sock)
                        asyncio.get_running_loop().create_task(sock.receive())
                        break
                    except Exception as exc:  # noqa: BLE001
                        if attempt == 2:
                            self.failed += 1
                            self.current().errors[f"connect:{type(exc).__name__}"] += 1
                        else:
                            await asyncio.sleep(0.5 * (attempt + 1))
                done += 1

        spec = self.spec
        hosts = spec.local_hosts or [""] * len(spec.users)
        socks = [
            Socket(self, u, t, c, url, host)
            for (u, t), c, url, host in zip(spec.users, spec.conversations, spec.ws_urls, hosts, strict=True)
        ]
        tasks = [asyncio.create_task(one(s)) for s in socks]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(PROGRESS_S)
            self.pipe.send(("connected", done, self.failed))
        errors = {k: v for k, v in self.current().errors.items() if k.startswith("connect:")}
        self.pipe.send(("ready", len(self.sockets), self.failed, time.monotonic() - started, errors))

    async def run_step(self, step: int, t0_ns: int, duration_s: float, rate: float) -> None:
        """Send `rate` messages/s from this worker's senders, evenly spaced, round robin over them."""
        self.step = step
        stats = self.step_stats(step)
        senders = [s for s in self.sockets if s.conversation_id]
        if not senders or rate <= 0:
            return
        random.Random(self.spec.seed + step).shuffle(senders)
        interval_ns = int(1e9 / rate)
        total = int(duration_s * rate)
        pad = "x" * max(0, self.spec.content_size - 40)
        for k in range(total):
            scheduled = t0_ns + k * interval_ns
            delay = (scheduled - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            sock = senders[k % len(senders)]
            try:
                await sock.send(step, scheduled, f"bench {step} {scheduled} {pad}")
                stats.sent += 1
            except Exception as exc:  # noqa: BLE001
                stats.errors[f"send:{type(exc).__name__}"] += 1

    def result(self, step: int) -> dict[str, Any]:
        s = self.steps.pop(step, StepStats())
        return {
            "sent": s.sent,
            "accepted": s.accepted,
            "rejected": s.rejected,
            "received": s.received,
            "redelivered": s.redelivered,
            "duplicated": s.duplicated,
            "other_events": s.other_events,
            "latencies_ms": s.latencies_ms.tobytes(),
            "ack_ms": s.ack_ms.tobytes(),
            "accepted_ids": s.accepted_ids,
            "got": dict(s.got),
            "errors": dict(s.errors),
        }

    async def main(self) -> None:
        await self.connect_all()
        acker = asyncio.create_task(self.ack_loop())
        loop = asyncio.get_running_loop()
        sender: asyncio.Task[None] | None = None
        reporter: asyncio.Task[None] | None = None

        async def report(step: int) -> None:
            while True:
                s = self.step_stats(step)
                self.pipe.send(("progress", step, s.sent, s.accepted, s.received))
                await asyncio.sleep(PROGRESS_S)

        while True:
            command = await loop.run_in_executor(None, self.pipe.recv)
            if command[0] == "run":
                _, step, t0_ns, duration_s, rate = command
                if reporter:
                    reporter.cancel()
                reporter = asyncio.create_task(report(step))
                sender = asyncio.create_task(self.run_step(step, t0_ns, duration_s, rate))
            elif command[0] == "collect":
                if sender:
                    await sender
                if reporter:
                    reporter.cancel()
                    reporter = None
                self.pipe.send(("collected", command[1], self.result(command[1])))
            elif command[0] == "stop":
                break
        acker.cancel()
        for sock in self.sockets:
            sock.closed = True
        await asyncio.gather(*(s.ws.close() for s in self.sockets), return_exceptions=True)
        self.pipe.send(("stopped",))


def worker_main(spec: WorkerSpec, pipe: Connection) -> None:
    from chatmesh_tools.bench.target import raise_nofile

    raise_nofile()
    try:
        import uvloop

        uvloop.run(Worker(spec, pipe).main())
    except ImportError:  # pragma: no cover
        asyncio.run(Worker(spec, pipe).main())
