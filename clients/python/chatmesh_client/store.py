"""A small normalized store of what the client has seen, for a UI or a bot to read.

conversations by id, messages by id (pending ones under `pending:<client_message_id>`), each
conversation's message ids in seq order (pending ones last), receipts as each user's delivered/read
positions per conversation, presence by user, who is typing where, and each thread's reply ids.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from chatmesh_client.models import (
    STATUS_ORDER,
    Conversation,
    ConversationEvent,
    Event,
    Message,
    MessageEvent,
    PresenceEvent,
    Reaction,
    ReactionEvent,
    ReceiptEvent,
    ThreadEvent,
    TypingEvent,
)


@dataclass
class Position:
    delivered_seq: int = 0
    read_seq: int = 0


@dataclass
class Store:
    user_id: str = ""
    conversations: dict[str, Conversation] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    order: dict[str, list[str]] = field(default_factory=dict)  # conversation -> message keys by seq, pending last
    receipts: dict[str, dict[str, Position]] = field(default_factory=dict)  # conversation -> user -> position
    presence: dict[str, str] = field(default_factory=dict)  # user -> online | offline | unknown
    typing: dict[str, set[str]] = field(default_factory=dict)  # conversation -> users typing
    threads: dict[str, list[str]] = field(default_factory=dict)  # root message id -> reply ids by seq

    # reads

    def conversation_messages(self, conversation_id: str) -> list[Message]:
        return [self.messages[k] for k in self.order.get(conversation_id, []) if k in self.messages]

    def thread_messages(self, root_id: str) -> list[Message]:
        """The replies to `root_id` seen so far (thread pages and live replies), in seq order."""
        return [self.messages[k] for k in self.threads.get(root_id, []) if k in self.messages]

    def last_seq(self, conversation_id: str) -> int:
        stored = [m.seq for m in self.conversation_messages(conversation_id) if m.seq]
        return max(stored, default=0)

    # writes

    def put_conversation(self, conversation: Conversation) -> None:
        self.conversations[conversation.conversation_id] = conversation

    def put_message(self, message: Message) -> Message:
        """Insert or replace; a stored message replaces its pending twin (same client_message_id)."""
        order = self.order.setdefault(message.conversation_id, [])
        if message.pending:
            if message.key not in self.messages:
                order.append(message.key)
            self.messages[message.key] = message
            return message
        if message.client_message_id and message.sender_id == self.user_id:
            twin = f"pending:{message.client_message_id}"
            if self.messages.pop(twin, None) is not None and twin in order:
                order.remove(twin)
        known = self.messages.get(message.message_id)
        if known is not None:
            message.status = _later(known.status, message.status)
        else:
            seqs = [self.messages[k].seq if not k.startswith("pending:") else 1 << 62 for k in order]
            order.insert(bisect.bisect_left(seqs, message.seq), message.message_id)
        self.messages[message.message_id] = message
        self._apply_receipts(message.conversation_id)
        return message

    def remove_pending(self, message: Message) -> None:
        self.messages.pop(message.key, None)
        order = self.order.get(message.conversation_id, [])
        if message.key in order:
            order.remove(message.key)

    def put_reply(self, root_id: str, reply: Message) -> bool:
        """File a stored reply under its thread (by seq); False when it was there already."""
        replies = self.threads.setdefault(root_id, [])
        if reply.pending or reply.message_id in replies:
            return False
        seqs = [self.messages[k].seq if k in self.messages else 0 for k in replies]
        replies.insert(bisect.bisect_right(seqs, reply.seq), reply.message_id)
        return True

    def apply(self, event: Event) -> None:
        if isinstance(event, MessageEvent):
            self.put_message(event.message)
            root = self.messages.get(event.message.reply_to_id) if event.message.reply_to_id else None
            if (
                root is not None
                and self.put_reply(root.message_id, event.message)
                and event.type == "chat:message_received"
            ):
                root.reply_count += 1  # until the thread event (or a thread page) says exactly
                root.last_reply_at = max(root.last_reply_at, event.message.created_at)
            conversation = self.conversations.get(event.message.conversation_id)
            if conversation and event.type == "chat:message_received" and event.message.sender_id != self.user_id:
                conversation.unread_count += 1
        elif isinstance(event, ReceiptEvent):
            position = self.receipts.setdefault(event.conversation_id, {}).setdefault(event.user_id, Position())
            position.delivered_seq = max(position.delivered_seq, event.seq)
            if event.status == "read":
                position.read_seq = max(position.read_seq, event.seq)
                if event.user_id == self.user_id and (c := self.conversations.get(event.conversation_id)):
                    c.unread_count = max(0, self.last_seq(event.conversation_id) - event.seq)
            self._apply_receipts(event.conversation_id)
        elif isinstance(event, ReactionEvent):
            self._apply_reaction(event)
        elif isinstance(event, ConversationEvent) and event.conversation:
            if known := self.conversations.get(event.conversation.conversation_id):  # shared: not our mute, pin
                event.conversation.muted, event.conversation.pinned = known.muted, known.pinned
            self.put_conversation(event.conversation)
        elif isinstance(event, ConversationEvent) and event.preferences is not None:
            if known := self.conversations.get(event.conversation_id):
                known.muted, known.pinned = event.preferences["muted"], event.preferences["pinned"]
        elif isinstance(event, TypingEvent):
            users = self.typing.setdefault(event.conversation_id, set())
            (users.add if event.is_typing else users.discard)(event.user_id)
        elif isinstance(event, PresenceEvent):
            self.presence[event.user_id] = event.status
        elif isinstance(event, ThreadEvent):
            if event.reply is not None and not event.reply.deleted:
                reply = self.messages.get(event.reply.message_id) or self.put_message(event.reply)
                self.put_reply(event.root_message_id, reply)
            if root := self.messages.get(event.root_message_id):
                root.reply_count, root.last_reply_at = event.reply_count, event.last_reply_at

    def _apply_receipts(self, conversation_id: str) -> None:
        """The sender's view of their own messages: the least advanced other participant."""
        positions = {u: p for u, p in self.receipts.get(conversation_id, {}).items() if u != self.user_id}
        if not positions:
            return
        conversation = self.conversations.get(conversation_id)
        others = ({p.user_id for p in conversation.participants} - {self.user_id}) if conversation else set()
        if others - positions.keys() and conversation and conversation.participants:
            return  # someone has reported nothing yet: keep what the server said
        for message in self.conversation_messages(conversation_id):
            if message.sender_id != self.user_id or message.pending:
                continue
            read = all(p.read_seq >= message.seq for p in positions.values())
            delivered = all(p.delivered_seq >= message.seq for p in positions.values())
            status = "read" if read else "delivered" if delivered else "sent"
            message.status = _later(message.status, status)

    def _apply_reaction(self, event: ReactionEvent) -> None:
        message = self.messages.get(event.message_id)
        if message is None:
            return
        reaction = next((r for r in message.reactions if r.emoji == event.emoji), None)
        if event.added:
            if reaction is None:
                reaction = Reaction(event.emoji, 0, [])
                message.reactions.append(reaction)
            if event.user_id not in reaction.user_ids:
                reaction.user_ids.append(event.user_id)
                reaction.count += 1
        elif reaction is not None and event.user_id in reaction.user_ids:
            reaction.user_ids.remove(event.user_id)
            reaction.count -= 1
            if reaction.count <= 0:
                message.reactions.remove(reaction)


def _later(a: str, b: str) -> str:
    """Statuses only move forward."""
    rank = {s: i for i, s in enumerate(STATUS_ORDER)}
    return a if rank.get(a, 1) >= rank.get(b, 1) else b
