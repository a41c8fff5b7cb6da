"""The client's public API: one object over REST, the socket (connection.py) and the store (store.py).

The socket's task reconnects and resumes by itself and hands over each event once per event id; this
layer makes the stream a caller reads from `events()` exact: each message once by message id (after a
resync the server may replay what REST already gave us), every event applied to `store` before it is
yielded, in arrival order. `resync_required` is answered here, by fetching each conversation's
messages past the last seq seen over REST, before the socket reads any later frame. Calls that change
something go over the socket when it is up (sends, presence, typing) and over REST otherwise.
Idempotent work (sends, which carry their client_message_id, and receipts) is retried on the retryable
codes with jittered backoff (retry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar, cast, overload

from chatmesh_client.attachments import Attachment, Attachments
from chatmesh_client.calls import Calls
from chatmesh_client.connection import Connection
from chatmesh_client.devices import Devices
from chatmesh_client.errors import ChatError, SendTimeout
from chatmesh_client.limits import SeenIds
from chatmesh_client.models import Conversation, Event, Message, MessageEvent, Presence, ResyncEvent, UserSettings
from chatmesh_client.rest import Rest
from chatmesh_client.retry import retry_delay, retryable, retrying
from chatmesh_client.store import Position, Store

log = logging.getLogger("chatmesh_client")

T = TypeVar("T")


@dataclass
class Page:
    messages: list[Message]
    has_more: bool


@dataclass
class ThreadPage:
    """A message's thread: the root (with its reply_count), a page of replies in seq order."""

    root: Message
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


class _OnConnection(Generic[T]):
    """A Client attribute kept on its Connection, where the socket's task reads and updates it;
    `client.state` or `client.backoff_max = 1.0` read and write it there."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, client: None, owner: type) -> _OnConnection[T]: ...
    @overload
    def __get__(self, client: Client, owner: type) -> T: ...
    def __get__(self, client: Client | None, owner: type) -> T | _OnConnection[T]:
        return self if client is None else cast(T, getattr(client._connection, self._name))

    def __set__(self, client: Client, value: T) -> None:
        setattr(client._connection, self._name, value)


class Client:
    ws_url: _OnConnection[str] = _OnConnection()
    user_id: _OnConnection[str] = _OnConnection()
    state: _OnConnection[str] = _OnConnection()  # idle | connecting | connected | reconnecting | closed
    resume_token: _OnConnection[str] = _OnConnection()
    reconnects: _OnConnection[int] = _OnConnection()
    close_codes: _OnConnection[list[int | None]] = _OnConnection()  # why each socket ended (1012: restart)
    send_timeout: _OnConnection[float] = _OnConnection()
    backoff_initial: _OnConnection[float] = _OnConnection()
    backoff_max: _OnConnection[float] = _OnConnection()
    open_timeout: _OnConnection[float] = _OnConnection()
    ack_delay: _OnConnection[float] = _OnConnection()

    def __init__(
        self,
        base_url: str,
        *,
        send_timeout: float = 5.0,
        send_attempts: int = 6,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        typing_interval: float = 2.0,
        open_timeout: float = 10.0,
        ack_delay: float = 0.05,
        max_frames_per_s: int = 40,
        token_provider: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        """`token_provider`, when given, is asked for a fresh token when the edge warns that the
        current one expires (`token_expiring`) and before reconnecting after it did (close 4001).
        `max_frames_per_s` keeps the socket under the edge's CHAT_WS_MAX_FRAMES_PER_S (default 50)."""
        self.base_url = base_url.rstrip("/")
        self.rest = Rest(self.base_url)
        self.attachments = Attachments(self.rest)  # upload, get (fresh links), download
        self.devices = Devices(self.rest)  # register, list, delete: where push notifications go
        self.store = Store()
        self.send_attempts = send_attempts
        self.typing_interval = typing_interval
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._seen_messages = SeenIds()
        self._seq_seen: dict[str, int] = {}  # conversation -> highest message seq delivered to the caller
        self._typing_sent: dict[str, tuple[bool, float]] = {}
        self._sends: set[asyncio.Task[Message]] = set()
        self._connection = Connection(
            self.base_url.replace("http", "ws", 1) + "/ws",
            self.rest,
            self.store,
            on_event=self._on_event,
            publish=self._events.put_nowait,
            send_timeout=send_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            open_timeout=open_timeout,
            ack_delay=ack_delay,
            max_frames_per_s=max_frames_per_s,
            token_provider=token_provider,
        )
        self.calls = Calls(self.rest, lambda kind, data: self._connection.request(kind, data, self.send_timeout))

    # connection -----------------------------------------------------------------------------------

    async def connect(self, token: str, *, resume_token: str = "") -> None:
        """Authenticate and open the socket; returns once the edge said `ready` (raises
        Unauthenticated for a bad token). From then on the client reconnects by itself."""
        if not await self._connection.open(token, resume_token=resume_token):
            await self.close()
            raise ChatError("UNAVAILABLE", f"could not connect to {self.ws_url}", 503)

    async def close(self) -> None:
        await self._connection.stop()
        for task in list(self._sends):
            task.cancel()
        await self.rest.close()
        self._connection.set_state("closed")
        self._events.put_nowait(None)

    async def wait_connected(self, timeout: float | None = None) -> None:
        await self._connection.wait_ready(timeout)

    @property
    def connected(self) -> bool:
        return self._connection.connected

    async def drop(self) -> None:
        """Close the socket as a network failure would (the client reconnects): for tests and tools."""
        await self._connection.drop()

    # events ---------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Every event in arrival order until `close()` (one consumer at a time). Durable events come
        exactly once across reconnects; `client:state` events tell the connection's state."""
        while True:
            event = await self._events.get()
            if event is None:
                if self._connection.failure:
                    raise self._connection.failure
                return
            yield event

    async def _on_event(self, event: Event, durable: bool) -> None:
        if durable and isinstance(event, MessageEvent) and event.type == "chat:message_received":
            if not self._seen_messages.add(event.message.message_id):
                return  # already given to the caller (fetched over REST after a resync)
            self._note_seq(event.message)
        self._emit(event)
        if isinstance(event, ResyncEvent):
            await self._resync()

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
                await asyncio.sleep(min(self.backoff_max, self.backoff_initial * 2**attempt))
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
                        self._emit(
                            MessageEvent(
                                type="chat:message_received",
                                conversation_id=cid,
                                event_id=f"resync:{message.message_id}",
                                message=message,
                                recovered=True,
                            )
                        )
                        newest = message
                if not page.get("has_more"):
                    break
            if newest is not None and newest.sender_id != self.user_id:
                with contextlib.suppress(ChatError, TimeoutError):
                    await self._retrying("mark delivered", partial(self.rest.mark, newest.message_id, "delivered"))

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

    async def accept(self, conversation_id: str) -> Conversation:
        """Accept a direct conversation request (replying does too): the requester sees your presence."""
        return await self._answer(conversation_id, "accept")

    async def decline(self, conversation_id: str) -> Conversation:
        """Decline a request: it becomes inactive (the requester may ask again; block to stop that)."""
        return await self._answer(conversation_id, "decline")

    async def block(self, conversation_id: str) -> Conversation:
        """Block the other user of a direct conversation: nobody writes to it any more, and they can
        open no conversation with you."""
        return await self._answer(conversation_id, "block")

    async def _answer(self, conversation_id: str, answer: str) -> Conversation:
        conversation = Conversation.from_json((await self.rest.answer_request(conversation_id, answer))["conversation"])
        self.store.put_conversation(conversation)
        return conversation

    async def settings(self) -> UserSettings:
        return UserSettings.from_json((await self.rest.settings()).get("settings") or {})

    async def update_settings(self, *, hide_last_seen: bool | None = None) -> UserSettings:
        """Change the settings given (None: unchanged); the settings after the change."""
        changes = {} if hide_last_seen is None else {"hide_last_seen": hide_last_seen}
        return UserSettings.from_json((await self.rest.update_settings(changes)).get("settings") or {})

    # conversation settings (admins: rename, describe, archive; anyone: leave, mute, pin) -------------

    async def update_conversation(
        self, conversation_id: str, *, title: str | None = None, description: str | None = None
    ) -> Conversation:
        """Rename a group or change its description ("" removes it); None: unchanged. Admins only."""
        body = {k: v for k, v in (("title", title), ("description", description)) if v is not None}
        return await self._setting("PATCH", conversation_id, "", body)

    async def leave(self, conversation_id: str, *, close_group: bool = False) -> Conversation:
        """Leave a group. The last admin gets LAST_ADMIN unless they hand over first or close it."""
        return await self._setting("POST", conversation_id, "/leave", {"close_group": close_group})

    async def archive(self, conversation_id: str, archived: bool = True) -> Conversation:
        """Make a group read-only (False: writable again). Admins only."""
        return await self._setting("POST", conversation_id, "/archive" if archived else "/unarchive", {})

    async def set_preferences(
        self, conversation_id: str, *, muted: bool | None = None, pinned: bool | None = None
    ) -> Conversation:
        """Your own mute and pin of a conversation; None: unchanged."""
        body = {k: v for k, v in (("muted", muted), ("pinned", pinned)) if v is not None}
        return await self._setting("PATCH", conversation_id, "/preferences", body)

    async def _setting(self, method: str, conversation_id: str, suffix: str, body: dict[str, Any]) -> Conversation:
        reply = await self.rest.change_conversation(method, conversation_id, suffix, body)
        conversation = Conversation.from_json(reply["conversation"])
        self.store.put_conversation(conversation)
        return conversation

    # messages -------------------------------------------------------------------------------------

    async def history(self, conversation_id: str, *, before_seq: int = 0, after_seq: int = 0, limit: int = 50) -> Page:
        """A page of messages in seq order: the latest `limit` (or those before/after a seq)."""
        page = await self.rest.history(conversation_id, before_seq=before_seq, after_seq=after_seq, limit=limit)
        messages = [self.store.put_message(Message.from_json(m)) for m in page.get("messages") or []]
        return Page(messages, bool(page.get("has_more")))

    async def thread(self, message_id: str, *, before_seq: int = 0, after_seq: int = 0, limit: int = 50) -> ThreadPage:
        """A page of the replies to a message, in seq order: the latest `limit` (or those before/after a
        seq), with the root as it stands. Kept in the store (`store.thread_messages`); the client keeps
        them current from then on with the `ThreadEvent`s and replies it receives."""
        page = await self.rest.thread(message_id, before_seq=before_seq, after_seq=after_seq, limit=limit)
        root = self.store.put_message(Message.from_json(page.get("root") or {}))
        messages = [self.store.put_message(Message.from_json(m)) for m in page.get("messages") or []]
        for message in messages:
            self.store.put_reply(root.message_id, message)
        return ThreadPage(root, messages, bool(page.get("has_more")))

    async def reply(self, root: Message, content: str, **kwargs: Any) -> Message:
        """Send a reply into `root`'s thread (a send with reply_to_id; same retries)."""
        return await self.send(root.conversation_id, content, reply_to_id=root.message_id, **kwargs)

    def send_nowait(
        self,
        conversation_id: str,
        content: str,
        *,
        client_message_id: str = "",
        reply_to_id: str = "",
        attachment_ids: list[str] | None = None,
    ) -> PendingSend:
        """Show the message at once (pending, in the store) and send it in the background."""
        pending = Message(
            "",
            conversation_id,
            0,
            self.user_id,
            content,
            client_message_id=client_message_id or uuid.uuid4().hex,
            reply_to_id=reply_to_id,
            status="pending",
            attachments=[Attachment(a) for a in attachment_ids or []],
        )
        self.store.put_message(pending)
        task = asyncio.create_task(self._deliver(pending))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        return PendingSend(pending, task)

    async def send(
        self,
        conversation_id: str,
        content: str,
        *,
        client_message_id: str = "",
        reply_to_id: str = "",
        attachment_ids: list[str] | None = None,
    ) -> Message:
        """Send and wait for the stored message (retried with the same client_message_id on timeouts
        and retryable refusals, with jittered backoff). `attachment_ids`: ready uploads of the caller's
        (client.attachments.upload); with them, content may be empty."""
        return await self.send_nowait(
            conversation_id,
            content,
            client_message_id=client_message_id,
            reply_to_id=reply_to_id,
            attachment_ids=attachment_ids,
        )

    async def _deliver(self, pending: Message) -> Message:
        data = {
            "conversation_id": pending.conversation_id,
            "content": pending.content,
            "client_message_id": pending.client_message_id,
        }
        if pending.reply_to_id:
            data["reply_to_id"] = pending.reply_to_id
        attachment_ids = [a.attachment_id for a in pending.attachments]
        if attachment_ids:
            data["attachment_ids"] = attachment_ids
        last_error: Exception | None = None
        for attempt in range(self.send_attempts):
            try:
                if attempt and not self.connected:
                    with contextlib.suppress(TimeoutError):
                        await self._connection.wait_ready(self.send_timeout)
                if self.connected:
                    reply = await self._connection.request("chat:message_send", data, self.send_timeout)
                else:
                    reply = await asyncio.wait_for(
                        self.rest.send(
                            pending.conversation_id,
                            pending.content,
                            pending.client_message_id,
                            pending.reply_to_id,
                            attachment_ids,
                        ),
                        self.send_timeout,
                    )
                message = Message.from_json(reply["message"])
                return self.store.put_message(message)
            except (ChatError, TimeoutError) as exc:
                if not retryable(exc):
                    pending.status = "failed"
                    raise
                last_error = exc
                delay = retry_delay(exc, attempt, self.backoff_initial, self.backoff_max)
            if attempt < self.send_attempts - 1:
                log.info(
                    "send %s: attempt %d failed (%r), retrying in %.2f s",
                    pending.client_message_id,
                    attempt + 1,
                    last_error,
                    delay,
                )
                await asyncio.sleep(delay)
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
        reply = await self._retrying("mark read", lambda: self.rest.mark(message_id, "read"))
        found = self.store.messages.get(message_id)
        position = Position(int(reply.get("delivered_seq") or 0), int(reply.get("read_seq") or 0))
        if found is not None:
            self.store.receipts.setdefault(found.conversation_id, {})[self.user_id] = position
            if conversation := self.store.conversations.get(found.conversation_id):
                conversation.unread_count = max(0, self.store.last_seq(found.conversation_id) - position.read_seq)
        return position

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """An idempotent REST call, retried like a send."""
        return await retrying(
            what, call, attempts=self.send_attempts, initial=self.backoff_initial, cap=self.backoff_max
        )

    async def presence(self, user_ids: list[str]) -> list[Presence]:
        found = [Presence.from_json(p) for p in (await self.rest.presence(user_ids)).get("presences") or []]
        for p in found:
            self.store.presence[p.user_id] = p.status
        return found

    async def set_presence(self, status: str) -> None:
        """`online` or `offline` (invisible: contacts see offline while connected)."""
        if status not in ("online", "offline"):
            raise ValueError("status must be 'online' or 'offline'")
        await self._connection.request(f"presence:{status}", {}, self.send_timeout)

    async def typing(self, conversation_id: str, is_typing: bool = True) -> bool:
        """Tell the others you are (not) typing; repeats within `typing_interval` are not sent (the
        server keeps a typing state for 3 s after the last one). True when a frame went out."""
        loop = asyncio.get_running_loop()
        was, at = self._typing_sent.get(conversation_id, (False, 0.0))
        if is_typing == was and (not is_typing or loop.time() - at < self.typing_interval):
            return False
        frame = {"type": "chat:typing", "data": {"conversation_id": conversation_id, "is_typing": is_typing}}
        if not await self._connection.send_frame(frame):
            return False
        self._typing_sent[conversation_id] = (is_typing, loop.time())
        return True
