"""One socket's subscription at the message service: what it has sent, and the order it keeps.

A subscription sends inbox entries (the bytes fan-out stored, parsed once into the gRPC response by
`to_event`) and, on a connection without a usable token, the offline buffer from PostgreSQL. The
two are different views of the same messages, so a subscription holds one rule over both: **on one
connection, a conversation's messages go out in seq order**. It remembers the highest seq it sent
per conversation and drops a later copy of an older message (a duplicate, or a message the user's
other device acknowledged while this one was reading its buffer: the client has it, or finds it in
history). Fan-out stores each entry's conversation and seq beside the payload, so the rule costs a
dict lookup, not a parse.

The offline buffer is merged with the inbox entries appended while it was read (`emit_buffer`): the
buffer holds the messages past the user's delivered position, and another device may move that
position while the buffer is read, so an entry appended meanwhile can hold an older seq than the
buffer's. Merged in seq order, nothing is dropped and nothing overtaken.
"""

from __future__ import annotations

import asyncio

from chatmesh.gen.chat.v1 import common_pb2
from services.message.delivery.inbox import Token, parse_id

# (subscription id, resume token): one subscription an item goes to.
Recipient = tuple[str, str]
# (event, recipients) is pushed onto the queue of the stream that owns the subscriptions: the event
# is an inbox entry's serialized bytes, or an Event already complete (its token is the recipient's),
# queued once for every subscription of the stream it reaches (the hub groups a live batch's). None
# ends the stream.
Item = tuple[common_pb2.Event | bytes, list[Recipient]]
Outbox = asyncio.Queue[Item | None]  # None: the stream ends after what is queued before it
Entry = tuple[bytes, dict[bytes, bytes]]  # an XRANGE / XREAD row

RECEIVED = "chat:message_received"


class Subscription:
    def __init__(self, subscription_id: str, user_id: str, out: Outbox) -> None:
        self.subscription_id = subscription_id
        self.user_id = user_id
        self.out = out
        self.epoch = ""
        self.last_id = "0"
        self.live = False  # replay done: live batches and the pump reach it from here on
        self._sent_seq: dict[str, int] = {}  # conversation -> highest message seq sent on this connection

    def emit_entries(self, entries: list[Entry]) -> None:
        """Inbox entries, oldest first; only those past the last one sent, in seq order. The hub's
        live path may have sent some already (both paths run at once): those are skipped here."""
        last = parse_id(self.last_id)
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if parse_id(entry_id) <= last:
                continue
            self.last_id = entry_id
            if (key := _message_key(fields)) is not None and not self._advance(*key):
                continue
            self.out.put_nowait((fields[b"e"], [(self.subscription_id, Token(self.epoch, entry_id).encode())]))

    def take(self, entry_id: str, conversation: bytes, seq: int) -> str | None:
        """The live path: the caller has checked that `entry_id` is the inbox entry right after
        `last_id`, in this epoch. Moves past it and returns its resume token, or None when the order
        rule drops it (an older copy of a message already sent); the caller queues it."""
        self.last_id = entry_id
        if seq and not self._advance(conversation.decode(), seq):
            return None
        return Token(self.epoch, entry_id).encode()

    def emit_buffer(self, buffered: list[common_pb2.Event], late: list[Entry]) -> None:
        """The offline buffer, merged with the inbox entries appended while it was read (`late`, after
        `last_id`), each conversation's messages in seq order. Every event resumes at the position
        after the late entries, marked as a buffer's, so a resume replays the buffer again (what is
        left of it unacknowledged) rather than skip its rest."""
        events = list(buffered)
        known = {event.event_id for event in events}
        others: list[common_pb2.Event] = []  # late entries that are not messages: after the messages
        for raw_id, fields in late:
            self.last_id = raw_id.decode()
            event = common_pb2.Event.FromString(fields[b"e"])
            if event.event_id in known:
                continue
            (events if event.type == RECEIVED else others).append(event)
        rank: dict[str, int] = {}
        for event in events:
            rank.setdefault(event.conversation_id, len(rank))
        events.sort(key=lambda e: (rank[e.conversation_id], e.message.seq))
        token = Token(self.epoch, self.last_id, buffered=True).encode()
        for event in [*events, *others]:
            if event.type == RECEIVED and not self._advance(event.conversation_id, event.message.seq):
                continue
            self.out.put_nowait((event, [(self.subscription_id, token)]))

    def emit_control(self, event: common_pb2.Event) -> None:
        self.out.put_nowait((event, [(self.subscription_id, "")]))

    def _advance(self, conversation_id: str, seq: int) -> bool:
        """Whether a message of this seq may go out (it is past what was sent); records it if so."""
        if seq <= self._sent_seq.get(conversation_id, 0):
            return False
        self._sent_seq[conversation_id] = seq
        return True


def _message_key(fields: dict[bytes, bytes]) -> tuple[str, int] | None:
    """(conversation, seq) of a `chat:message_received` entry, None for any other. Fan-out stores them
    beside the payload (`s` is 0 for other events); entries written before it did are parsed."""
    if (seq := fields.get(b"s")) is not None:
        return (fields[b"c"].decode(), int(seq)) if seq != b"0" else None
    event = common_pb2.Event.FromString(fields[b"e"])
    return (event.conversation_id, event.message.seq) if event.type == RECEIVED and event.message.seq else None


def to_event(target: common_pb2.Event, event: common_pb2.Event | bytes, resume_token: str = "") -> None:
    """Fill a response's Event from a queued item's event: stored bytes are parsed straight into it."""
    if isinstance(event, bytes):
        target.MergeFromString(event)
    else:
        target.CopyFrom(event)
    if resume_token:
        target.resume_token = resume_token


def item_size(item: Item) -> int:
    event, recipients = item
    size = len(event) if isinstance(event, bytes) else event.ByteSize()
    return size + sum(len(subscription_id) + len(token) + 4 for subscription_id, token in recipients)
