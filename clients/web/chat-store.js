// The page's normalized store: conversations by id, messages by key (message id, or
// "pending:<client id>" for an optimistic one), each conversation's keys in seq order (pending ones
// last), each user's delivered/read positions, presence and who is typing. It applies what it is
// given (events from the socket, replies from REST) and says what changed through `emit`; it never
// talks to the edge itself, so the same rules hold whichever path a message came by.

import { normalizeConversation, normalizeMessage } from "./chat-wire.js";

const STATUS_RANK = { failed: -1, pending: 0, sent: 1, delivered: 2, read: 3 };

// Statuses only move forward (a late "sent" reply must not undo a "read" receipt).
function later(a, b) {
  return (STATUS_RANK[a] ?? 1) >= (STATUS_RANK[b] ?? 1) ? a : b;
}

export class ChatStore {
  // emit(name, detail): something changed; onUnknownConversation(cid): an event named a
  // conversation the store has not loaded (the owner fetches it).
  constructor({ emit, onUnknownConversation }) {
    this.userId = "";
    this.conversations = new Map();
    this.messages = new Map(); // key (message id, or "pending:<client id>") -> message
    this.order = new Map(); // conversation -> keys in seq order, pending last
    this.positions = new Map(); // conversation -> Map(user -> {delivered, read})
    this.presence = new Map(); // user -> online | offline | unknown
    this.typing = new Map(); // conversation -> Set(user)
    this.emit = emit;
    this.onUnknownConversation = onUnknownConversation;
  }

  // One event, by its frame type; `frame` carries extras such as `recovered`.
  apply(type, data, frame = {}) {
    if (type === "chat:message_received" || type === "chat:message_updated" || type === "chat:message_deleted") {
      const message = this.putMessage(normalizeMessage(data));
      const conversation = this.conversations.get(message.conversation_id);
      if (conversation && type === "chat:message_received") {
        if (!conversation.last_message || message.seq >= conversation.last_message.seq) {
          conversation.last_message = { message_id: message.message_id, sender_id: message.sender_id, text: message.content.slice(0, 100), seq: message.seq, deleted: message.deleted, sent_at: message.created_at };
          conversation.last_message_at = message.created_at;
        }
        if (message.sender_id !== this.userId) conversation.unread_count += 1;
      } else if (conversation && conversation.last_message && conversation.last_message.message_id === message.message_id) {
        conversation.last_message.text = message.deleted ? "" : message.content.slice(0, 100);
        conversation.last_message.deleted = message.deleted;
      }
      if (!conversation && message.conversation_id) this.onUnknownConversation(message.conversation_id);
      this.emit("message", { type, message, recovered: Boolean(frame.recovered) });
    } else if (type === "chat:message_delivered" || type === "chat:message_read") {
      const cid = data.conversation_id, user = data.user_id, seq = Number(data.seq || 0);
      const byUser = this.positions.get(cid) || new Map();
      this.positions.set(cid, byUser);
      const position = byUser.get(user) || { delivered: 0, read: 0 };
      position.delivered = Math.max(position.delivered, seq);
      if (type === "chat:message_read") position.read = Math.max(position.read, seq);
      byUser.set(user, position);
      if (user === this.userId && type === "chat:message_read") {
        const conversation = this.conversations.get(cid);
        if (conversation) conversation.unread_count = Math.max(0, this.lastSeq(cid) - position.read);
      }
      this._applyPositions(cid);
      this.emit("receipt", { conversation_id: cid, user_id: user, seq });
    } else if (type === "chat:reaction_added" || type === "chat:reaction_removed") {
      const message = this.messages.get(data.message_id);
      if (message) {
        let reaction = message.reactions.find((r) => r.emoji === data.emoji);
        if (type === "chat:reaction_added") {
          if (!reaction) { reaction = { emoji: data.emoji, count: 0, user_ids: [] }; message.reactions.push(reaction); }
          if (!reaction.user_ids.includes(data.user_id)) { reaction.user_ids.push(data.user_id); reaction.count += 1; }
        } else if (reaction && reaction.user_ids.includes(data.user_id)) {
          reaction.user_ids = reaction.user_ids.filter((u) => u !== data.user_id);
          reaction.count -= 1;
          if (reaction.count <= 0) message.reactions = message.reactions.filter((r) => r !== reaction);
        }
        this.emit("message", { type, message });
      }
    } else if (type.startsWith("conversation:")) {
      if (data.conversation) this.putConversation(normalizeConversation(data.conversation));
      this.emit("conversations", {});
    } else if (type === "chat:user_typing") {
      const users = this.typing.get(data.conversation_id) || new Set();
      this.typing.set(data.conversation_id, users);
      if (data.is_typing) users.add(data.user_id); else users.delete(data.user_id);
      this.emit("typing", { conversation_id: data.conversation_id, user_id: data.user_id, is_typing: Boolean(data.is_typing) });
    } else if (type === "user:status_changed") {
      this.presence.set(data.user_id, data.status);
      this.emit("presence", { user_id: data.user_id, status: data.status });
    } else if (type === "chat:thread_updated") {
      // Ephemeral, right behind the reply's own event: the thread's count is absolute, the last one wins.
      const root = this.messages.get(data.root_message_id);
      if (root) { root.reply_count = Number(data.reply_count || 0); root.last_reply_at = data.last_reply_at || ""; }
      this.emit("thread", { conversation_id: frame.conversation_id || "", root_message_id: data.root_message_id,
                            reply_count: Number(data.reply_count || 0), last_reply_at: data.last_reply_at || "",
                            reply: data.reply ? normalizeMessage(data.reply) : null });
    } else if (type === "resync_required") {
      this.emit("resync", { reason: data.reason });
    }
  }

  putConversation(conversation) {
    const known = this.conversations.get(conversation.conversation_id);
    this.conversations.set(conversation.conversation_id, known ? { ...known, ...conversation } : conversation);
    return this.conversations.get(conversation.conversation_id);
  }

  keyOf(message) {
    return message.message_id || `pending:${message.client_message_id}`;
  }

  // Insert or replace; a stored message replaces its pending twin (same client_message_id).
  putMessage(message) {
    const cid = message.conversation_id;
    const order = this.order.get(cid) || [];
    this.order.set(cid, order);
    if (!message.message_id) {
      if (!this.messages.has(this.keyOf(message))) order.push(this.keyOf(message));
      this.messages.set(this.keyOf(message), message);
      return message;
    }
    if (message.client_message_id && message.sender_id === this.userId) {
      const twin = `pending:${message.client_message_id}`;
      if (this.messages.delete(twin)) order.splice(order.indexOf(twin), 1);
    }
    const known = this.messages.get(message.message_id);
    if (known) {
      message.status = later(known.status, message.status);
    } else {
      // By seq among the stored ones; pending ones stay last.
      const firstPending = order.findIndex((k) => k.startsWith("pending:"));
      let index = firstPending === -1 ? order.length : firstPending;
      while (index > 0 && (this.messages.get(order[index - 1])?.seq ?? 0) > message.seq) index -= 1;
      order.splice(index, 0, message.message_id);
    }
    this.messages.set(message.message_id, message);
    this._applyPositions(cid);
    return message;
  }

  lastSeq(cid) {
    let seq = 0;
    for (const key of this.order.get(cid) || []) seq = Math.max(seq, this.messages.get(key)?.seq || 0);
    return seq;
  }

  conversationMessages(cid) {
    return (this.order.get(cid) || []).map((k) => this.messages.get(k)).filter(Boolean);
  }

  // The sender's ticks on their own messages: the least advanced of the other participants.
  _applyPositions(cid) {
    const byUser = this.positions.get(cid);
    if (!byUser) return;
    const conversation = this.conversations.get(cid);
    const others = conversation ? conversation.participants.map((p) => p.user_id).filter((u) => u !== this.userId) : [...byUser.keys()].filter((u) => u !== this.userId);
    if (!others.length || others.some((u) => !byUser.has(u))) return;
    for (const message of this.conversationMessages(cid)) {
      if (message.sender_id !== this.userId || !message.message_id) continue;
      const read = others.every((u) => byUser.get(u).read >= message.seq);
      const delivered = others.every((u) => byUser.get(u).delivered >= message.seq);
      message.status = later(message.status, read ? "read" : delivered ? "delivered" : "sent");
    }
  }
}
