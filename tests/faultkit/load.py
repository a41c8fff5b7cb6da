"""The steady, mixed load a fault lands on, and the record of what the mesh acknowledged.

15 users in 3 groups (5, 5 and 6 members) and 2 direct chats; every third user has two devices.
About 20 messages per second in total, each from a random member of a random conversation, half
over REST and half over one of the sender's sockets, each with a `client_message_id` and retried
with the same id and jittered backoff (never sooner than `Retry-After`) until acknowledged, as a
client whose user pressed send once would. What counts as retryable is what a client can know from the
answer alone: a transport error, 429, a 5xx, an error frame with such a code or `"retryable": true`;
any other 4xx is a failure of the run. A 500 INTERNAL is retried too (the message may be stored), but
counted: docs/architecture.md says an outage answers 503/504, so INTERNAL under a fault is a bug.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faultkit.cluster import Cluster
from tests.faultkit.device import BACKOFF_CAP_S, BACKOFF_START_S, Device, NotConnected

USERS = 15
GROUPS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9), (10, 11, 12, 13, 14, 0))
DIRECTS = ((1, 6), (2, 11))
RATE_PER_S = 20.0
SEND_TIMEOUT_S = 15.0  # above the edge's own 10 s upstream deadline
GIVE_UP_S = 90.0
# Error frame codes a client retries: those the edge maps to 429 or 5xx (services/edge/errors.py).
RETRYABLE_CODES = frozenset(
    {
        "RATE_LIMITED",
        "RESOURCE_EXHAUSTED",
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "UNKNOWN",
        "DATA_LOSS",
        "CANCELLED",
    }
)
INTERNAL_CODES = frozenset({"INTERNAL", "UNKNOWN"})  # "a bug", not "an outage": counted as a finding


@dataclass(frozen=True)
class Acked:
    message_id: str
    conversation_id: str
    seq: int
    client_message_id: str
    sender: str
    at: float  # monotonic
    via: str = ""  # "rest", or the device whose socket carried it


@dataclass
class Load:
    cluster: Cluster
    http: httpx.AsyncClient
    run_id: str
    users: list[str] = field(default_factory=list)
    conversations: dict[str, list[str]] = field(default_factory=dict)  # id -> participants
    names: dict[str, str] = field(default_factory=dict)  # conversation id -> g1, g2, g3, d1, d2
    devices: list[Device] = field(default_factory=list)
    acked: dict[str, Acked] = field(default_factory=dict)  # by message id
    probes: dict[str, str] = field(default_factory=dict)  # conversation id -> probe message id
    retries: Counter[str] = field(default_factory=Counter)  # why sends were retried
    internal_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # non-retryable answers, sends never acknowledged
    _counter: int = 0
    _sends: set[asyncio.Task[None]] = field(default_factory=set)
    _device_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # the world ----------------------------------------------------------------------------------------

    async def setup(self) -> None:
        self.users = [f"{self.run_id}-u{i}" for i in range(USERS)]
        for user in self.users:
            await self._ok(self.http.put("/api/users/me", json={}, headers=self._auth(user)))
        for number, members in enumerate(GROUPS, 1):
            ids = [self.users[i] for i in members]
            body = await self._ok(
                self.http.post(
                    "/api/conversations/group",
                    headers=self._auth(ids[0]),
                    json={"title": f"g{number}", "participant_ids": ids[1:]},
                )
            )
            self._add(body["conversation"]["conversation_id"], ids, f"g{number}")
        for number, (a, b) in enumerate(DIRECTS, 1):
            body = await self._ok(
                self.http.post(
                    "/api/conversations/direct", headers=self._auth(self.users[a]), json={"user_id": self.users[b]}
                )
            )
            self._add(body["conversation"]["conversation_id"], [self.users[a], self.users[b]], f"d{number}")
        ws_url = self.cluster.edge_url.replace("http://", "ws://") + "/ws"
        for i, user in enumerate(self.users):
            mine = [c for c, members in self.conversations.items() if user in members]
            for d in range(2 if i % 3 == 0 else 1):
                self.devices.append(Device(f"u{i}/d{d + 1}", user, self.cluster.token(user), ws_url, self.http, mine))
        self._device_tasks = [asyncio.create_task(device.run()) for device in self.devices]
        async with asyncio.timeout(30):
            await asyncio.gather(*(device.connected.wait() for device in self.devices))

    def _add(self, conversation_id: str, members: list[str], name: str) -> None:
        self.conversations[conversation_id] = members
        self.names[conversation_id] = name

    def _auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cluster.token(user)}"}

    async def _ok(self, request: Any) -> dict[str, Any]:
        reply = await request
        assert reply.status_code == 200, f"setup failed: {reply.status_code} {reply.text}"
        return dict(reply.json())

    async def close(self) -> None:
        for task in [*self._device_tasks, *self._sends]:
            task.cancel()
        await asyncio.gather(*self._device_tasks, *self._sends, return_exceptions=True)

    # sending ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start sends at RATE_PER_S (Poisson arrivals) until cancelled; each send goes on retrying
        in the background until acknowledged."""
        while True:
            conversation_id = random.choice(list(self.conversations))
            sender = random.choice(self.conversations[conversation_id])
            self.start_send(conversation_id, sender)
            await asyncio.sleep(random.expovariate(RATE_PER_S))

    def start_send(self, conversation_id: str, sender: str, probe: bool = False) -> None:
        task = asyncio.create_task(self.send(conversation_id, sender, probe))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def drain(self) -> None:
        """Wait for every send in flight to be acknowledged or given up."""
        while self._sends:
            await asyncio.gather(*list(self._sends), return_exceptions=True)

    async def send(self, conversation_id: str, sender: str, probe: bool = False) -> None:
        self._counter += 1
        client_message_id = f"{'probe' if probe else 'm'}-{self._counter}"
        over_ws = not probe and random.random() < 0.5 and any(d.user_id == sender for d in self.devices)
        body = {
            "conversation_id": conversation_id,
            "content": f"{client_message_id} from {sender}",
            "client_message_id": client_message_id,
        }
        started = time.monotonic()
        delay = random.uniform(*BACKOFF_START_S)
        while time.monotonic() - started < GIVE_UP_S:
            try:
                message, via = await (self._send_ws(sender, body) if over_ws else self._send_rest(sender, body))
            except _Retry as why:
                self.retries[str(why)] += 1
                await asyncio.sleep(max(delay * random.uniform(0.5, 1.5), why.after))  # never before Retry-After
                delay = min(delay * 2, BACKOFF_CAP_S)
                continue
            except _Fail as why:
                self.failures.append(f"{client_message_id} by {sender} in {self.names[conversation_id]}: {why}")
                return
            acked = Acked(
                message["message_id"],
                conversation_id,
                int(message["seq"]),
                client_message_id,
                sender,
                time.monotonic(),
                via,
            )
            self.acked[acked.message_id] = acked
            if probe:
                self.probes[conversation_id] = acked.message_id
            return
        self.failures.append(
            f"{client_message_id} by {sender} in {self.names[conversation_id]}: "
            f"not acknowledged within {GIVE_UP_S:.0f}s"
        )

    async def _send_rest(self, sender: str, body: dict[str, str]) -> tuple[dict[str, Any], str]:
        try:
            reply = await self.http.post("/api/messages", json=body, headers=self._auth(sender), timeout=SEND_TIMEOUT_S)
        except httpx.TransportError as exc:
            raise _Retry(f"rest {type(exc).__name__}") from None
        if reply.status_code == 200:
            return dict(reply.json()["message"]), "rest"
        code = _error_code(reply)
        if code in INTERNAL_CODES or reply.status_code == 500:
            self.internal_errors.append(f"rest {reply.status_code} {code} at t={self.cluster.now():+.1f}s")
        if reply.status_code == 429 or reply.status_code >= 500:
            raise _Retry(f"rest {reply.status_code} {code}", _seconds(reply.headers.get("retry-after")))
        raise _Fail(f"rest {reply.status_code} {reply.text[:200]}")

    async def _send_ws(self, sender: str, body: dict[str, str]) -> tuple[dict[str, Any], str]:
        device = random.choice(
            [d for d in self.devices if d.user_id == sender and d.connected.is_set()]
            or [d for d in self.devices if d.user_id == sender]
        )
        try:
            frame = await device.request("chat:message_send", body, SEND_TIMEOUT_S)
        except NotConnected:
            raise _Retry("ws not connected") from None
        except TimeoutError:
            raise _Retry("ws no reply") from None
        if frame["type"] == "ack":
            return dict(frame["data"]["message"]), f"ws {device.name}"
        data = frame.get("data") or {}
        code = str(data.get("code"))
        if code in INTERNAL_CODES:
            self.internal_errors.append(f"ws error {code} at t={self.cluster.now():+.1f}s")
        if code in RETRYABLE_CODES or data.get("retryable") is True:
            raise _Retry(f"ws {code}", _seconds(data.get("retry_after")))
        raise _Fail(f"ws error {data}")


class _Retry(Exception):
    def __init__(self, why: str, after: float = 0.0) -> None:
        super().__init__(why)
        self.after = after


def _seconds(value: object) -> float:
    """A Retry-After (or `retry_after`) in seconds, bounded so a bad value cannot stall the load."""
    try:
        return min(max(float(str(value)), 0.0), 10.0)
    except ValueError:
        return 0.0


class _Fail(Exception):
    pass


def _error_code(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"
