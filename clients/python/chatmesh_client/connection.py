"""The client's WebSocket: one background task that connects, resumes, reads and reconnects.

The task connects, authenticates (with the last resume token) and reads frames in order; on any drop
(close 1012 when the edge restarts, 4008 when it found us too slow, a network error) it waits a capped
exponential backoff with jitter and connects again, so a caller never handles a reconnect. Durable
events are acknowledged as they arrive (in batches: the edge limits frames per second) and
deduplicated by event id, since after a resume the edge pushes the unacknowledged ones again. Each new
event goes to `on_event`, which is awaited before the next frame is read: that is what lets the owner
(the Client) answer a `resync_required` over REST before any later frame arrives. Replies (`ack`,
`error`, `pong`) settle the request that carried the same id. An edge that refuses the socket for now
(an error frame with `"retryable": true` before `ready`, then close 1013) is reconnected to like a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chatmesh_client.errors import ChatError, ConnectionLost, RequestTimeout, Unauthenticated
from chatmesh_client.limits import FrameBudget, SeenIds
from chatmesh_client.models import Event, MessageEvent, StateEvent, event_from_frame
from chatmesh_client.rest import Rest
from chatmesh_client.store import Store

log = logging.getLogger("chatmesh_client")

CLOSE_TOKEN_EXPIRED = 4001

# Called with each new event, and whether it was durable (it carried a resume token).
EventHandler = Callable[[Event, bool], Awaitable[None]]
# Where state changes go (`None`: the connection ended for good, see `failure`).
Publisher = Callable[[Event | None], None]


class Connection:
    def __init__(
        self,
        ws_url: str,
        rest: Rest,
        store: Store,
        *,
        on_event: EventHandler,
        publish: Publisher,
        send_timeout: float,
        backoff_initial: float,
        backoff_max: float,
        open_timeout: float,
        ack_delay: float,
        max_frames_per_s: int,
        token_provider: Callable[[], Awaitable[str]] | None,
    ) -> None:
        """`rest` shares the token (renewed here); `store` learns the caller's user id from `ready`."""
        self.ws_url = ws_url
        self.user_id = ""
        self.state = "idle"  # idle | connecting | connected | reconnecting | closed
        self.resume_token = ""
        self.reconnects = 0
        self.close_codes: list[int | None] = []  # why each socket ended (1012: the edge restarted)
        self.failure: BaseException | None = None  # what ended the connection for good (a bad token)
        self.send_timeout = send_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.ack_delay = ack_delay
        self._rest = rest
        self._store = store
        self._on_event = on_event
        self._publish = publish
        self._token = ""
        self._token_provider = token_provider
        self._seen_events = SeenIds()
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._renewal: asyncio.Task[None] | None = None
        self._ack_ids: list[str] = []
        self._ack_delivered: dict[str, tuple[int, str]] = {}  # conversation -> latest (seq, message id)
        self._ack_task: asyncio.Task[None] | None = None
        self._budget = FrameBudget(max_frames_per_s)

    # life -----------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def open(self, token: str, *, resume_token: str = "") -> bool:
        """Start the socket task. True once the edge said `ready`; False when it did not within
        `open_timeout`; raises Unauthenticated for a bad token (or whatever ended the task)."""
        self._token = self._rest.token = token
        self.resume_token = resume_token or self.resume_token
        self._closed = False
        self._runner = asyncio.create_task(self._run(), name="chatmesh-client")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._runner}, timeout=self.open_timeout, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            return True
        ready.cancel()
        if self._runner.done() and self._runner.exception():
            raise self._runner.exception()  # type: ignore[misc]
        if self.failure:
            raise self.failure
        return False

    async def stop(self) -> None:
        """End the socket task for good: no reconnect after this. The acknowledgements still waiting
        for their batch go out first, so the edge does not deliver those events again next time."""
        self._closed = True
        with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
            await asyncio.wait_for(self._send_acks(), self.send_timeout)
        if self._ws is not None:  # a clean close ends the task's read loop; the cancel is the fallback
            with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
                await asyncio.wait_for(self._ws.close(), self.send_timeout)
        if self._ack_task is not None:
            self._ack_task.cancel()
        if self._runner:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def drop(self) -> None:
        """Close the socket as a network failure would (the task reconnects)."""
        if self._ws is not None:
            await self._ws.close(4000, "client drop")

    def set_state(self, state: str, attempt: int = 0) -> None:
        if state != self.state:
            self.state = state
            self._publish(StateEvent(type="client:state", state=state, attempt=attempt))

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            self.set_state("connecting" if attempt == 0 and not self.reconnects else "reconnecting", attempt)
            try:
                async with connect(self.ws_url, open_timeout=self.open_timeout, max_size=None) as ws:
                    await self._authenticate(ws)
                    attempt = 0
                    async for raw in ws:
                        await self._on_frame(json.loads(raw))
                    self.close_codes.append(ws.close_code)  # a clean close (1000/1001) ends the loop
            except Unauthenticated as exc:
                self.failure = exc
                self._publish(None)
                return
            except ChatError as exc:  # refused for now (UNAVAILABLE: the edge's upstream is away): try again
                log.info("chatmesh socket refused: %r", exc)
            except ConnectionClosed as exc:
                self.close_codes.append(exc.rcvd.code if exc.rcvd else None)
                log.info("chatmesh socket closed: %r", exc)
                if exc.rcvd and exc.rcvd.code == CLOSE_TOKEN_EXPIRED and self._token_provider is not None:
                    with contextlib.suppress(Exception):
                        self._token = self._rest.token = await self._token_provider()
            except (InvalidHandshake, OSError, TimeoutError, ValueError) as exc:
                log.info("chatmesh socket lost: %r", exc)
            finally:
                self._ws = None
                self._ready.clear()
                for future in self._requests.values():
                    if not future.done():
                        future.set_exception(ConnectionLost())
                self._requests.clear()
            if self._closed:
                return
            attempt += 1
            self.reconnects += 1
            self.set_state("reconnecting", attempt)
            delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _authenticate(self, ws: ClientConnection) -> None:
        data = {"token": self._token} | ({"resume_token": self.resume_token} if self.resume_token else {})
        await ws.send(json.dumps({"type": "auth", "data": data}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
        if frame.get("type") != "ready":
            data = frame.get("data") or {}
            if frame.get("type") == "error" and data.get("retryable"):
                raise _error_of(data)  # the edge will take us a moment later: reconnect with backoff
            raise Unauthenticated(str(data.get("message", frame)))
        self.user_id = self._store.user_id = str(frame["data"]["user_id"])
        self._ws = ws
        self._ready.set()
        self.set_state("connected")

    # frames in ------------------------------------------------------------------------------------

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("ack", "error", "pong"):
            self._on_reply(frame)
            return
        if kind == "token_expiring":
            if self._token_provider is not None:
                self._renewal = asyncio.create_task(self._renew_token())
            return
        event = event_from_frame(frame)
        durable = bool(frame.get("resume_token"))
        if durable:
            await self._acknowledge(event)
            if not self._seen_events.add(event.event_id):
                return  # a redelivered copy
            self.resume_token = str(frame["resume_token"])
        await self._on_event(event, durable)

    async def _renew_token(self) -> None:
        """Re-authenticate in band with a fresh token, so the socket is not closed at expiry (4001)."""
        assert self._token_provider is not None
        try:
            self._token = self._rest.token = await self._token_provider()
            await self.request("auth", {"token": self._token}, self.send_timeout)
        except (ChatError, TimeoutError) as exc:
            log.warning("token renewal failed: %r", exc)

    def _on_reply(self, frame: dict[str, Any]) -> None:
        future = self._requests.get(str(frame.get("id")))
        if future is None or future.done():
            if frame.get("type") == "error":
                log.warning("chatmesh error frame: %s", frame.get("data"))
            return
        if frame["type"] == "error":
            future.set_exception(_error_of(frame.get("data") or {}))
        else:
            future.set_result(dict(frame.get("data") or {}))

    async def _acknowledge(self, event: Event) -> None:
        """Queue the acknowledgement; they go out together shortly after (the edge limits frames per
        second): one `events_ack` with every event id, and per conversation one `chat:message_delivered`
        for the latest message, which advances the user's delivered position."""
        self._ack_ids.append(event.event_id)
        if isinstance(event, MessageEvent) and event.type == "chat:message_received":
            cid, seq = event.message.conversation_id, event.message.seq
            if seq >= self._ack_delivered.get(cid, (0, ""))[0]:
                self._ack_delivered[cid] = (seq, event.message.message_id)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        while True:
            await asyncio.sleep(self.ack_delay)
            with contextlib.suppress(ConnectionClosed):
                if not await self._send_acks():
                    return  # nothing more (or the socket is gone: the next one resumes after our token)

    async def _send_acks(self) -> bool:
        """Send the waiting batch now; False when there was none, or no socket to carry it."""
        ids, self._ack_ids = self._ack_ids, []
        delivered, self._ack_delivered = self._ack_delivered, {}
        ws = self._ws
        if ws is None or not (ids or delivered):
            return False
        frames = [{"type": "events_ack", "data": {"event_ids": ids}}] if ids else []
        frames += [{"type": "chat:message_delivered", "data": {"message_id": m}} for _, m in delivered.values()]
        for frame in frames:
            await self._send_frame(ws, frame)
        return True

    # frames out -----------------------------------------------------------------------------------

    async def _send_frame(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        await self._budget.take()
        await ws.send(json.dumps(frame))

    async def send_frame(self, frame: dict[str, Any]) -> bool:
        """Send a frame that needs no reply; False when there is no open socket to carry it."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await self._send_frame(ws, frame)
        except ConnectionClosed:
            return False
        return True

    async def request(self, kind: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a frame with an id and wait for the reply with that id (raises ConnectionLost when the
        socket goes first, TimeoutError after `timeout`, ChatError for an `error` reply)."""
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = future
        try:
            await self._send_frame(ws, {"type": kind, "id": request_id, "data": data})
            return await asyncio.wait_for(future, timeout)
        except ConnectionClosed as exc:
            raise ConnectionLost() from exc
        except TimeoutError as exc:
            if isinstance(exc, ChatError):
                raise
            raise RequestTimeout(f"{kind} was not answered within {timeout} s") from exc
        finally:
            self._requests.pop(request_id, None)


def _error_of(data: dict[str, Any]) -> ChatError:
    """An error frame's data as a ChatError (with the edge's `retry_after`, if it gave one)."""
    try:
        retry_after = max(0.0, float(data.get("retry_after") or 0))
    except (TypeError, ValueError):
        retry_after = 0.0
    return ChatError(str(data.get("code", "ERROR")), str(data.get("message", "")), retry_after=retry_after)
