"""The client: one object for REST calls, the WebSocket, reconnection and the store.

The socket runs in one background task: connect, authenticate (with the last resume token), read
frames in order, and on any drop (close 1012 when the edge restarts, 4008 when it found us too slow,
a network error) wait a capped exponential backoff with jitter and connect again. Durable events are
acknowledged as they arrive, deduplicated by event id (the edge pushes unacknowledged ones again) and
by message id (after a resync the server may replay what REST already gave us), so a caller of
`events()` sees each exactly once, in arrival order. `resync_required` is answered by fetching each
conversation's messages past the last seq seen, over REST, before any later frame is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chatmesh_client.errors import RETRYABLE, ChatError, ConnectionLost, SendTimeout, Unauthenticated
from chatmesh_client.models import (
    Conversation,
    Event,
    Message,
    MessageEvent,
    Presence,
    ResyncEvent,
    StateEvent,
    event_from_frame,
)
from chatmesh_client.rest import Rest
from chatmesh_client.store import Position, Store

log = logging.getLogger("chatmesh_client")

SEEN_KEPT = 50_000  # event and message ids remembered for deduplication
CLOSE_TOKEN_EXPIRED = 4001


@dataclass
class Page:
    messages: list[Message]
    has_more: bool


class PendingSend:
    """A send in flight: `message` is the optimistic copy (status `pending`, a temporary
    `client_message_id`); awaiting the object gives the stored message, or raises."""

    def __init__(self, message: Message, task: asyncio.Task[Message]) -> None:
        self.message = message
        self.task = task

    def __await__(self) -> Generator[Any, None, Message]:
        return self.task.__await__()


class _Seen:
    """A bounded set, oldest forgotten first."""

    def __init__(self, limit: int = SEEN_KEPT) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, key: str) -> bool:
        """True when the key is new."""
        if key in self._items:
            return False
        self._items[key] = None
        if len(self._items) > self._limit:
            self._items.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._items


class _FrameBudget:
    """At most `limit` frames in any second (the edge refuses frames past its per-socket limit and
    closes a socket that keeps flooding): a sender waits for room instead."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._sent: deque[float] = deque()

    async def take(self) -> None:
        if self._limit <= 0:
            return
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._sent and now - self._sent[0] >= 1.0:
                self._sent.popleft()
            if len(self._sent) < self._limit:
                self._sent.append(now)
                return
            await asyncio.sleep(1.0 - (now - self._sent[0]))


class Client:
    def __init__(self, base_url: str, *, send_timeout: float = 5.0, send_attempts: int = 4,
                 backoff_initial: float = 0.1, backoff_max: float = 5.0, typing_interval: float = 2.0,
                 open_timeout: float = 10.0, ack_delay: float = 0.05, max_frames_per_s: int = 40,
                 token_provider: Callable[[], Awaitable[str]] | None = None) -> None:
        """`token_provider`, when given, is asked for a fresh token when the edge warns that the
        current one expires (`token_expiring`) and before reconnecting after it did (close 4001).
        `max_frames_per_s` keeps the socket under the edge's CHAT_WS_MAX_FRAMES_PER_S (default 50)."""
        self.base_url = base_url.rstrip("/")
        self.ws_url = self.base_url.replace("http", "ws", 1) + "/ws"
        self.rest = Rest(self.base_url)
        self.store = Store()
        self.user_id = ""
        self.state = "idle"  # idle | connecting | connected | reconnecting | closed
        self.resume_token = ""
        self.reconnects = 0
        self.close_codes: list[int | None] = []  # why each socket ended (1012: the edge restarted)
        self.send_timeout = send_timeout
        self.send_attempts = send_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.typing_interval = typing_interval
        self.open_timeout = open_timeout
        self._token = ""
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._seen_events = _Seen()
        self._seen_messages = _Seen()
        self._seq_seen: dict[str, int] = {}  # conversation -> highest message seq delivered to the caller
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._renewal: asyncio.Task[None] | None = None
        self._typing_sent: dict[str, tuple[bool, float]] = {}
        self._sends: set[asyncio.Task[Message]] = set()
        self.ack_delay = ack_delay
        self._ack_ids: list[str] = []
        self._ack_delivered: dict[str, tuple[int, str]] = {}  # conversation -> latest (seq, message id)
        self._ack_task: asyncio.Task[None] | None = None
        self._token_provider = token_provider
        self._budget = _FrameBudget(max_frames_per_s)

    # connection -----------------------------------------------------------------------------------

    async def connect(self, token: str, *, resume_token: str = "") -> None:
        """Authenticate and open the socket; returns once the edge said `ready` (raises
        Unauthenticated for a bad token). From then on the client reconnects by itself."""
        self._token = self.rest.token = token
        self.resume_token = resume_token or self.resume_token
        self._closed = False
        self._runner = asyncio.create_task(self._run(), name="chatmesh-client")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._runner}, timeout=self.open_timeout, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            if self._runner.done() and self._runner.exception():
                raise self._runner.exception()  # type: ignore[misc]
            if self._failure:
                raise self._failure
            await self.close()
            raise ChatError("UNAVAILABLE", f"could not connect to {self.ws_url}", 503)

    async def close(self) -> None:
        self._closed = True
        if self._runner:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        for task in list(self._sends):
            task.cancel()
        await self.rest.close()
        self._set_state("closed")
        self._events.put_nowait(None)

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def drop(self) -> None:
        """Close the socket as a network failure would (the client reconnects): for tests and tools."""
        if self._ws is not None:
            await self._ws.close(4000, "client drop")

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            self._set_state("connecting" if attempt == 0 and not self.reconnects else "reconnecting", attempt)
            try:
                async with connect(self.ws_url, open_timeout=self.open_timeout, max_size=None) as ws:
                    await self._authenticate(ws)
                    attempt = 0
                    async for raw in ws:
                        await self._on_frame(json.loads(raw))
                    self.close_codes.append(ws.close_code)  # a clean close (1000/1001) ends the loop
            except Unauthenticated as exc:
                self._failure = exc
                self._events.put_nowait(None)
                return
            except ConnectionClosed as exc:
                self.close_codes.append(exc.rcvd.code if exc.rcvd else None)
                log.info("chatmesh socket closed: %r", exc)
                if exc.rcvd and exc.rcvd.code == CLOSE_TOKEN_EXPIRED and self._token_provider is not None:
                    with contextlib.suppress(Exception):
                        self._token = self.rest.token = await self._token_provider()
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
            self._set_state("reconnecting", attempt)
            delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _authenticate(self, ws: ClientConnection) -> None:
        data = {"token": self._token} | ({"resume_token": self.resume_token} if self.resume_token else {})
        await ws.send(json.dumps({"type": "auth", "data": data}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
        if frame.get("type") != "ready":
            raise Unauthenticated(str((frame.get("data") or {}).get("message", frame)))
        self.user_id = self.store.user_id = str(frame["data"]["user_id"])
        self._ws = ws
        self._ready.set()
        self._set_state("connected")

    def _set_state(self, state: str, attempt: int = 0) -> None:
        if state != self.state:
            self.state = state
            self._events.put_nowait(StateEvent(type="client:state", state=state, attempt=attempt))

    # frames ---------------------------------------------------------------------------------------

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
        if frame.get("resume_token"):
            await self._acknowledge(event)
            if not self._seen_events.add(event.event_id):
                return  # a redelivered copy
            self.resume_token = str(frame["resume_token"])
            if isinstance(event, MessageEvent) and event.type == "chat:message_received":
                if not self._seen_messages.add(event.message.message_id):
                    return  # already given to the caller (fetched over REST after a resync)
                self._note_seq(event.message)
        self._emit(event)
        if isinstance(event, ResyncEvent):
            await self._resync()

    async def _renew_token(self) -> None:
        """Re-authenticate in band with a fresh token, so the socket is not closed at expiry (4001)."""
        assert self._token_provider is not None
        try:
            self._token = self.rest.token = await self._token_provider()
            await self._request("auth", {"token": self._token}, self.send_timeout)
        except (ChatError, TimeoutError) as exc:
            log.warning("token renewal failed: %r", exc)

    def _on_reply(self, frame: dict[str, Any]) -> None:
        future = self._requests.get(str(frame.get("id")))
        if future is None or future.done():
            if frame.get("type") == "error":
                log.warning("chatmesh error frame: %s", frame.get("data"))
            return
        if frame["type"] == "error":
            data = frame.get("data") or {}
            future.set_exception(ChatError(str(data.get("code", "ERROR")), str(data.get("message", ""))))
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
            ids, self._ack_ids = self._ack_ids, []
            delivered, self._ack_delivered = self._ack_delivered, {}
            ws = self._ws
            if ws is None or not (ids or delivered):
                return  # nothing more (or the socket is gone: the next one resumes after our token)
            frames = [{"type": "events_ack", "data": {"event_ids": ids}}] if ids else []
            frames += [{"type": "chat:message_delivered", "data": {"message_id": m}} for _, m in delivered.values()]
            with contextlib.suppress(ConnectionClosed):
                for frame in frames:
                    await self._send_frame(ws, frame)

    async def _send_frame(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        await self._budget.take()
        await ws.send(json.dumps(frame))

    def _note_seq(self, message: Message) -> None:
        if message.seq > self._seq_seen.get(message.conversation_id, 0):
            self._seq_seen[message.conversation_id] = message.seq

    def _emit(self, event: Event) -> None:
        self.store.apply(event)
        self._events.put_nowait(event)

    async def _resync(self) -> None:
        """Fetch what the resume token could not replay: each conversation's messages past the last
        seq this client delivered (for one it never saw: its unread ones), in seq order."""
        for attempt in range(6):
            try:
                await self._fetch_missing()
                return
            except ChatError as exc:
                log.warning("resync failed (%s), retrying", exc)
                await asyncio.sleep(min(self.backoff_max, self.backoff_initial * 2 ** attempt))
        log.error("resync gave up; some history may be missing until the next resync")

    async def _fetch_missing(self) -> None:
        for conversation in await self.conversations():
            cid = conversation.conversation_id
            last = conversation.last_message.seq if conversation.last_message else 0
            after = self._seq_seen.get(cid, max(0, last - conversation.unread_count))
            newest: Message | None = None
            while after < last:
                page = await self.rest.history(cid, after_seq=after, limit=200)
                messages = [Message.from_json(m) for m in page.get("messages") or []]
                if not messages:
                    break
                for message in messages:
                    after = max(after, message.seq)
                    if self._seen_messages.add(message.message_id):
                        self._note_seq(message)
                        self._emit(MessageEvent(type="chat:message_received", conversation_id=cid,
                                                event_id=f"resync:{message.message_id}", message=message,
                                                recovered=True))
                        newest = message
                if not page.get("has_more"):
                    break
            if newest is not None and newest.sender_id != self.user_id:
                with contextlib.suppress(ChatError):
                    await self.rest.mark(newest.message_id, "delivered")

    async def _request(self, kind: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
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
        finally:
            self._requests.pop(request_id, None)

    # events ---------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Every event in arrival order until `close()` (one consumer at a time). Durable events come
        exactly once across reconnects; `client:state` events tell the connection's state."""
        while True:
            event = await self._events.get()
            if event is None:
                if self._failure:
                    raise self._failure
                return
            yield event

    # conversations --------------------------------------------------------------------------------

    async def conversations(self) -> list[Conversation]:
        """Every conversation of the caller, most recent activity first."""
        found: list[Conversation] = []
        cursor = ""
        while True:
            page = await self.rest.list_conversations(limit=100, cursor=cursor)
            for data in page.get("conversations") or []:
                conversation = Conversation.from_json(data)
                self.store.put_conversation(conversation)
                found.append(conversation)
            cursor = str(page.get("next_cursor") or "")
            if not cursor:
                return found

    async def conversation(self, conversation_id: str) -> Conversation:
        conversation = Conversation.from_json((await self.rest.get_conversation(conversation_id))["conversation"])
        self.store.put_conversation(conversation)
        return conversation

    async def create_direct(self, user_id: str) -> Conversation:
        conversation = Conversation.from_json((await self.rest.create_direct(user_id))["conversation"])
        self.store.put_conversation(conversation)
        return conversation

    async def create_group(self, title: str, participant_ids: list[str]) -> Conversation:
        conversation = Conversation.from_json((await self.rest.create_group(title, participant_ids))["conversation"])
        self.store.put_conversation(conversation)
        return conversation

    # messages -------------------------------------------------------------------------------------

    async def history(self, conversation_id: str, *, before_seq: int = 0, after_seq: int = 0,
                      limit: int = 50) -> Page:
        """A page of messages in seq order: the latest `limit` (or those before/after a seq)."""
        page = await self.rest.history(conversation_id, before_seq=before_seq, after_seq=after_seq, limit=limit)
        messages = [self.store.put_message(Message.from_json(m)) for m in page.get("messages") or []]
        return Page(messages, bool(page.get("has_more")))

    def send_nowait(self, conversation_id: str, content: str, *, client_message_id: str = "",
                    reply_to_id: str = "") -> PendingSend:
        """Show the message at once (pending, in the store) and send it in the background."""
        pending = Message("", conversation_id, 0, self.user_id, content,
                          client_message_id=client_message_id or uuid.uuid4().hex, reply_to_id=reply_to_id,
                          status="pending")
        self.store.put_message(pending)
        task = asyncio.create_task(self._deliver(pending))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        return PendingSend(pending, task)

    async def send(self, conversation_id: str, content: str, *, client_message_id: str = "",
                   reply_to_id: str = "") -> Message:
        """Send and wait for the stored message (retried with the same client_message_id on timeouts)."""
        return await self.send_nowait(conversation_id, content, client_message_id=client_message_id,
                                      reply_to_id=reply_to_id)

    async def _deliver(self, pending: Message) -> Message:
        data = {"conversation_id": pending.conversation_id, "content": pending.content,
                "client_message_id": pending.client_message_id}
        if pending.reply_to_id:
            data["reply_to_id"] = pending.reply_to_id
        last_error: Exception | None = None
        for attempt in range(self.send_attempts):
            try:
                if attempt and not self.connected:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._ready.wait(), self.send_timeout)
                if self.connected:
                    reply = await self._request("chat:message_send", data, self.send_timeout)
                else:
                    reply = await asyncio.wait_for(
                        self.rest.send(pending.conversation_id, pending.content, pending.client_message_id,
                                       pending.reply_to_id), self.send_timeout)
                message = Message.from_json(reply["message"])
                return self.store.put_message(message)
            except (TimeoutError, ConnectionLost) as exc:
                last_error = exc
            except ChatError as exc:
                if exc.code not in RETRYABLE:
                    pending.status = "failed"
                    raise
                last_error = exc
            log.info("send %s: attempt %d failed (%r), retrying", pending.client_message_id, attempt + 1, last_error)
        pending.status = "failed"
        raise SendTimeout(f"no acknowledgement after {self.send_attempts} attempts: {last_error!r}")

    async def edit(self, message_id: str, content: str) -> Message:
        return self.store.put_message(Message.from_json((await self.rest.edit(message_id, content))["message"]))

    async def delete(self, message_id: str) -> Message:
        return self.store.put_message(Message.from_json((await self.rest.delete(message_id))["message"]))

    async def react(self, message_id: str, emoji: str) -> Message:
        return self.store.put_message(Message.from_json((await self.rest.react(message_id, emoji))["message"]))

    async def unreact(self, message_id: str, emoji: str) -> Message:
        return self.store.put_message(Message.from_json((await self.rest.unreact(message_id, emoji))["message"]))

    # receipts, presence, typing -------------------------------------------------------------------

    async def mark_read(self, message: Message | str) -> Position:
        """Mark a message (and everything before it in its conversation) read."""
        message_id = message if isinstance(message, str) else message.message_id
        reply = await self.rest.mark(message_id, "read")
        found = self.store.messages.get(message_id)
        position = Position(int(reply.get("delivered_seq") or 0), int(reply.get("read_seq") or 0))
        if found is not None:
            self.store.receipts.setdefault(found.conversation_id, {})[self.user_id] = position
            if conversation := self.store.conversations.get(found.conversation_id):
                conversation.unread_count = max(0, self.store.last_seq(found.conversation_id) - position.read_seq)
        return position

    async def presence(self, user_ids: list[str]) -> list[Presence]:
        found = [Presence.from_json(p) for p in (await self.rest.presence(user_ids)).get("presences") or []]
        for p in found:
            self.store.presence[p.user_id] = p.status
        return found

    async def set_presence(self, status: str) -> None:
        """`online` or `offline` (invisible: contacts see offline while connected)."""
        if status not in ("online", "offline"):
            raise ValueError("status must be 'online' or 'offline'")
        await self._request(f"presence:{status}", {}, self.send_timeout)

    async def typing(self, conversation_id: str, is_typing: bool = True) -> bool:
        """Tell the others you are (not) typing; repeats within `typing_interval` are not sent (the
        server keeps a typing state for 3 s after the last one). True when a frame went out."""
        loop = asyncio.get_running_loop()
        was, at = self._typing_sent.get(conversation_id, (False, 0.0))
        if is_typing == was and (not is_typing or loop.time() - at < self.typing_interval):
            return False
        ws = self._ws
        if ws is None:
            return False
        frame = {"type": "chat:typing", "data": {"conversation_id": conversation_id, "is_typing": is_typing}}
        try:
            await self._send_frame(ws, frame)
        except ConnectionClosed:
            return False
        self._typing_sent[conversation_id] = (is_typing, loop.time())
        return True
