"""One device of a user: a WebSocket client that behaves as the clients of docs/architecture.md should.

It authenticates with its last resume token, acknowledges what it receives (`events_ack` for every
durable event, `chat:message_delivered` for the newest message per conversation, in batches as the
edge's frame limit expects), reconnects with jittered exponential backoff whenever its socket closes
or stops answering, and on `resync_required` refetches history over REST. It records what the
checks judge: each message's first arrival at the device, and per connection the order of those
first arrivals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

BACKOFF_START_S = (0.1, 0.3)
BACKOFF_CAP_S = 3.0
READY_TIMEOUT_S = 10.0
ACK_EVERY_S = 0.15
HISTORY_PAGE = 200


class NotConnected(Exception):
    """The device has no open socket, or it closed before the reply came."""


@dataclass(frozen=True)
class Arrival:
    message_id: str
    conversation_id: str
    seq: int
    at: float  # monotonic
    via: str  # "live" or "history"


@dataclass
class Connection:
    number: int
    opened_at: float
    arrivals: list[Arrival] = field(default_factory=list)  # first arrivals at the device, in order
    frames: int = 0
    last_frame_at: float = 0.0
    close: str = ""


async def history(
    http: httpx.AsyncClient, token: str, conversation_id: str, after_seq: int = 0
) -> list[dict[str, Any]]:
    """Every message of a conversation after a seq, page by page (raises on any failure)."""
    messages: list[dict[str, Any]] = []
    while True:
        reply = await http.get(
            f"/api/messages/{conversation_id}",
            params={"after_seq": after_seq, "limit": HISTORY_PAGE},
            headers={"Authorization": f"Bearer {token}"},
        )
        reply.raise_for_status()
        body = reply.json()
        page = body.get("messages", [])
        messages.extend(page)
        if not body.get("has_more") or not page:
            return messages
        after_seq = int(page[-1]["seq"])


class Device:
    def __init__(
        self, name: str, user_id: str, token: str, ws_url: str, http: httpx.AsyncClient, conversations: list[str]
    ) -> None:
        self.name = name
        self.user_id = user_id
        self.conversations = conversations
        self._token = token
        self._ws_url = ws_url
        self._http = http
        self.resume_token = ""
        self.seen: dict[str, Arrival] = {}  # message id -> first arrival (live or history)
        self.connections: list[Connection] = []
        self.resyncs: list[str] = []  # reasons
        self.closes: list[str] = []
        self.connected = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._event_ids: set[str] = set()
        self._to_ack: list[str] = []
        self._delivered: dict[str, tuple[int, str]] = {}  # conversation -> newest (seq, message id) unreported
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._history_wanted = asyncio.Event()

    # the socket's life --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, read, reconnect; until cancelled."""
        refiller = asyncio.create_task(self._refill_history())
        delay = random.uniform(*BACKOFF_START_S)
        try:
            while True:
                if await self._connect_once():
                    delay = random.uniform(*BACKOFF_START_S)  # a socket that got ready starts over
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, BACKOFF_CAP_S)
        finally:
            refiller.cancel()

    async def _connect_once(self) -> bool:
        """One socket, from open to close; whether it got as far as `ready`."""
        got_ready = False
        try:
            async with connect(
                self._ws_url, open_timeout=5, close_timeout=1, ping_interval=5, ping_timeout=10, max_queue=None
            ) as ws:
                await ws.send(
                    json.dumps({"type": "auth", "data": {"token": self._token, "resume_token": self.resume_token}})
                )
                ready = json.loads(await asyncio.wait_for(ws.recv(), READY_TIMEOUT_S))
                if ready.get("type") != "ready":
                    self.closes.append(f"refused: {str(ready)[:120]}")
                    return False
                got_ready = True
                self._ws = ws
                conn = Connection(len(self.connections) + 1, time.monotonic())
                self.connections.append(conn)
                self.connected.set()
                acker = asyncio.create_task(self._ack_loop(ws))
                try:
                    async for raw in ws:
                        self._on_frame(json.loads(raw), conn)
                finally:
                    acker.cancel()
                conn.close = f"closed {ws.close_code}"
                self.closes.append(conn.close)
        except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            self.closes.append(f"{type(exc).__name__}: {str(exc)[:80]}")
            if self.connections and got_ready:
                self.connections[-1].close = self.closes[-1]
        finally:
            self._ws = None
            self.connected.clear()
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(NotConnected("socket closed before the reply"))
            self._replies.clear()
        return got_ready

    def _on_frame(self, frame: dict[str, Any], conn: Connection) -> None:
        now = time.monotonic()
        conn.frames += 1
        conn.last_frame_at = now
        kind = frame.get("type")
        if (request_id := frame.get("id")) is not None and kind in ("ack", "error"):
            if (future := self._replies.pop(str(request_id), None)) is not None and not future.done():
                future.set_result(frame)
            return
        if token := frame.get("resume_token"):
            self.resume_token = token
        if kind == "resync_required":
            self.resyncs.append(str((frame.get("data") or {}).get("reason")))
            self._history_wanted.set()
            return
        event_id = frame.get("event_id")
        if not event_id or not frame.get("resume_token"):
            return  # ephemeral (presence, typing): nothing to acknowledge or record
        if event_id not in self._event_ids:
            self._event_ids.add(event_id)
            self._to_ack.append(event_id)
        if kind != "chat:message_received":
            return
        data = frame["data"]
        arrival = Arrival(data["message_id"], data["conversation_id"], int(data["seq"]), now, "live")
        if arrival.message_id not in self.seen:
            self.seen[arrival.message_id] = arrival
            conn.arrivals.append(arrival)
        newest = self._delivered.get(arrival.conversation_id, (0, ""))
        if arrival.seq > newest[0]:
            self._delivered[arrival.conversation_id] = (arrival.seq, arrival.message_id)

    async def _ack_loop(self, ws: ClientConnection) -> None:
        """Acknowledge in batches: one `events_ack`, one `chat:message_delivered` per conversation."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(ACK_EVERY_S)
                if self._to_ack:
                    ids, self._to_ack = self._to_ack, []
                    await ws.send(json.dumps({"type": "events_ack", "data": {"event_ids": ids}}))
                delivered, self._delivered = self._delivered, {}
                for _, message_id in delivered.values():
                    await ws.send(json.dumps({"type": "chat:message_delivered", "data": {"message_id": message_id}}))

    async def request(self, kind: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a frame with an id and wait for its `ack` or `error` (NotConnected if the socket goes)."""
        ws = self._ws
        if ws is None:
            raise NotConnected("no open socket")
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        try:
            await ws.send(json.dumps({"type": kind, "id": request_id, "data": data}))
            return await asyncio.wait_for(future, timeout)
        except ConnectionClosed as exc:
            raise NotConnected(str(exc)) from None
        finally:
            self._replies.pop(request_id, None)

    # history after resync_required --------------------------------------------------------------------

    async def _refill_history(self) -> None:
        """What a client does with `resync_required`: fetch history to fill its view (retrying with
        backoff while the edge or the message service cannot answer)."""
        while True:
            await self._history_wanted.wait()
            self._history_wanted.clear()
            for conversation_id in self.conversations:
                delay = random.uniform(*BACKOFF_START_S)
                while True:
                    try:
                        messages = await history(self._http, self._token, conversation_id)
                        break
                    except (httpx.HTTPError, ValueError):
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, BACKOFF_CAP_S)
                now = time.monotonic()
                for message in messages:
                    if message["message_id"] not in self.seen:
                        self.seen[message["message_id"]] = Arrival(
                            message["message_id"], conversation_id, int(message["seq"]), now, "history"
                        )
