// chatmesh's browser client: REST with fetch, the WebSocket with reconnect and resume, and a small
// normalized store. The same rules as the Python client (clients/python): durable events are
// acknowledged (batched: the edge limits frames per second), deduplicated by event id and by message
// id, resumed from the last resume_token after any drop (1012: the edge restarted; 4008: too slow),
// and a resync_required is answered by fetching each conversation's missing messages over REST.

const STATUS_RANK = { failed: -1, pending: 0, sent: 1, delivered: 2, read: 3 };

export function shortEnum(value, prefix, fallback = "") {
  if (value === undefined || value === null || value === "") return fallback;
  const text = String(value);
  return (text.startsWith(prefix) ? text.slice(prefix.length) : text).toLowerCase();
}

const SEEN_KEPT = 50000; // event and message ids remembered for deduplication

// Add to a bounded set (oldest forgotten first); false when the key was there already.
function remember(set, key) {
  if (set.has(key)) return false;
  set.add(key);
  if (set.size > SEEN_KEPT) set.delete(set.values().next().value);
  return true;
}

function later(a, b) {
  return (STATUS_RANK[a] ?? 1) >= (STATUS_RANK[b] ?? 1) ? a : b;
}

export function normalizeMessage(data) {
  return {
    message_id: data.message_id || "",
    conversation_id: data.conversation_id || "",
    seq: Number(data.seq || 0),
    sender_id: data.sender_id || "",
    content: data.content || "",
    client_message_id: data.client_message_id || "",
    created_at: data.created_at || "",
    edited_at: data.edited_at || "",
    deleted: Boolean(data.deleted),
    status: shortEnum(data.status, "MESSAGE_STATUS_", "sent"),
    reactions: (data.reactions || []).map((r) => ({ emoji: r.emoji, count: Number(r.count || 0), user_ids: r.user_ids || [] })),
  };
}

export function normalizeConversation(data) {
  const last = data.last_message;
  return {
    conversation_id: data.conversation_id,
    type: shortEnum(data.type, "CONVERSATION_TYPE_", "direct"),
    title: data.title || "",
    participants: (data.participants || []).map((p) => ({ user_id: p.user_id, role: shortEnum(p.role, "ROLE_", "member"), display_name: p.display_name || "" })),
    participant_count: Number(data.participant_count || 0),
    last_message: last ? { message_id: last.message_id, sender_id: last.sender_id, text: last.text || "", seq: Number(last.seq || 0), deleted: Boolean(last.deleted), sent_at: last.sent_at || "" } : null,
    last_message_at: data.last_message_at || data.created_at || "",
    unread_count: Number(data.unread_count || 0),
  };
}

export class ChatError extends Error {
  constructor(code, message, status = 0) {
    super(`${code}: ${message}`);
    this.code = code;
    this.status = status;
  }
}

const RETRYABLE = new Set(["UNAVAILABLE", "CONNECTION_LOST", "TIMEOUT", "RATE_LIMITED", "INTERNAL"]);

export class ChatClient extends EventTarget {
  constructor(baseUrl = location.origin, options = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.wsUrl = this.baseUrl.replace(/^http/, "ws") + "/ws";
    this.sendTimeoutMs = options.sendTimeoutMs ?? 5000;
    this.backoffInitialMs = options.backoffInitialMs ?? 250;
    this.backoffMaxMs = options.backoffMaxMs ?? 5000;
    this.typingIntervalMs = options.typingIntervalMs ?? 2000;
    this.token = "";
    this.userId = "";
    this.state = "idle";
    this.resumeToken = "";
    this.ws = null;
    this.attempt = 0;
    this.closed = false;
    this.requests = new Map();
    this.seenEvents = new Set();
    this.seenMessages = new Set();
    this.seqSeen = new Map();
    this.ackIds = [];
    this.ackDelivered = new Map();
    this.ackTimer = null;
    this.typingSent = new Map();
    // the store
    this.conversations = new Map();
    this.messages = new Map(); // key (message id, or "pending:<client id>") -> message
    this.order = new Map(); // conversation -> keys in seq order, pending last
    this.positions = new Map(); // conversation -> Map(user -> {delivered, read})
    this.presence = new Map(); // user -> online | offline | unknown
    this.typing = new Map(); // conversation -> Set(user)
    this.frameQueue = Promise.resolve();
  }

  // REST ----------------------------------------------------------------------------------------

  async api(method, path, body) {
    let reply;
    try {
      reply = await fetch(this.baseUrl + path, {
        method,
        headers: { Authorization: `Bearer ${this.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (err) {
      throw new ChatError("UNAVAILABLE", String(err), 503);
    }
    let data = {};
    try { data = await reply.json(); } catch { data = {}; }
    if (!reply.ok) {
      const error = data.error || {};
      throw new ChatError(error.code || "HTTP_ERROR", error.message || reply.statusText, reply.status);
    }
    return data;
  }

  // connection ----------------------------------------------------------------------------------

  connect(token) {
    this.token = token;
    this.closed = false;
    return new Promise((resolve, reject) => {
      this._firstConnect = { resolve, reject };
      this._open();
    });
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
    this._setState("closed");
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, attempt: this.attempt } }));
  }

  _open() {
    this._setState(this.attempt === 0 && !this.everConnected ? "connecting" : "reconnecting");
    const ws = new WebSocket(this.wsUrl);
    this.ws = ws;
    let ready = false;
    ws.onopen = () => {
      const data = { token: this.token };
      if (this.resumeToken) data.resume_token = this.resumeToken;
      ws.send(JSON.stringify({ type: "auth", data }));
    };
    ws.onmessage = (msg) => {
      let frame;
      try { frame = JSON.parse(msg.data); } catch { return; }
      if (!ready) {
        if (frame.type === "ready") {
          ready = true;
          this.userId = frame.data.user_id;
          this.attempt = 0;
          this.everConnected = true;
          this._setState("connected");
          if (this._firstConnect) { this._firstConnect.resolve(); this._firstConnect = null; }
          this._flushTyping();
        } else if (frame.type === "error") {
          this.closed = true;
          const err = new ChatError(frame.data?.code || "UNAUTHENTICATED", frame.data?.message || "refused", 401);
          if (this._firstConnect) { this._firstConnect.reject(err); this._firstConnect = null; }
          this.dispatchEvent(new CustomEvent("fatal", { detail: err }));
        }
        return;
      }
      // Frames are handled one after another (a resync awaits REST before later frames).
      this.frameQueue = this.frameQueue.then(() => this._onFrame(frame)).catch((err) => console.error(err));
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.ws = null;
      for (const [, pending] of this.requests) pending.reject(new ChatError("CONNECTION_LOST", "the connection was lost"));
      this.requests.clear();
      this.lastCloseCode = ev.code;
      if (this.closed) return;
      this.attempt += 1;
      this._setState("reconnecting");
      const delay = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** (this.attempt - 1));
      setTimeout(() => { if (!this.closed) this._open(); }, delay / 2 + Math.random() * delay / 2);
    };
  }

  get connected() { return this.state === "connected" && this.ws && this.ws.readyState === WebSocket.OPEN; }

  _waitConnected(timeoutMs) {
    if (this.connected) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.removeEventListener("state", on); resolve(false); }, timeoutMs);
      const on = () => {
        if (this.connected) { clearTimeout(timer); this.removeEventListener("state", on); resolve(true); }
      };
      this.addEventListener("state", on);
    });
  }

  _request(type, data, timeoutMs = this.sendTimeoutMs) {
    if (!this.connected) return Promise.reject(new ChatError("CONNECTION_LOST", "not connected"));
    const id = crypto.randomUUID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.requests.delete(id); reject(new ChatError("TIMEOUT", `${type} was not answered`)); }, timeoutMs);
      this.requests.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.ws.send(JSON.stringify({ type, id, data }));
    });
  }

  // frames --------------------------------------------------------------------------------------

  async _onFrame(frame) {
    if (frame.type === "ack" || frame.type === "error" || frame.type === "pong") {
      const pending = this.requests.get(String(frame.id));
      if (!pending) return;
      this.requests.delete(String(frame.id));
      if (frame.type === "error") pending.reject(new ChatError(frame.data?.code || "ERROR", frame.data?.message || ""));
      else pending.resolve(frame.data || {});
      return;
    }
    if (frame.type === "token_expiring") {
      this.dispatchEvent(new CustomEvent("token_expiring", { detail: frame.data }));
      return;
    }
    const data = frame.data || {};
    if (frame.resume_token) {
      this._queueAck(frame);
      if (!remember(this.seenEvents, frame.event_id)) return; // a redelivered copy
      this.resumeToken = frame.resume_token;
      if (frame.type === "chat:message_received") {
        if (!remember(this.seenMessages, data.message_id)) return; // already fetched over REST
        this._noteSeq(data.conversation_id, Number(data.seq || 0));
      }
    }
    this._apply(frame.type, data, frame);
    if (frame.type === "resync_required") await this._resync();
  }

  _queueAck(frame) {
    this.ackIds.push(frame.event_id);
    if (frame.type === "chat:message_received") {
      const d = frame.data, seq = Number(d.seq || 0), known = this.ackDelivered.get(d.conversation_id);
      if (!known || seq >= known[0]) this.ackDelivered.set(d.conversation_id, [seq, d.message_id]);
    }
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      const ids = this.ackIds, delivered = this.ackDelivered;
      this.ackIds = []; this.ackDelivered = new Map();
      if (!this.connected) return;
      if (ids.length) this.ws.send(JSON.stringify({ type: "events_ack", data: { event_ids: ids } }));
      for (const [, [, messageId]] of delivered) this.ws.send(JSON.stringify({ type: "chat:message_delivered", data: { message_id: messageId } }));
    }, 50);
  }

  _noteSeq(conversationId, seq) {
    if (seq > (this.seqSeen.get(conversationId) || 0)) this.seqSeen.set(conversationId, seq);
  }

  async _resync() {
    this.resyncs = (this.resyncs || 0) + 1;
    for (let attempt = 0; attempt < 6; attempt++) {
      try {
        for (const conversation of await this.loadConversations()) {
          const cid = conversation.conversation_id;
          const last = conversation.last_message ? conversation.last_message.seq : 0;
          let after = this.seqSeen.has(cid) ? this.seqSeen.get(cid) : Math.max(0, last - conversation.unread_count);
          while (after < last) {
            const page = await this.api("GET", `/api/messages/${encodeURIComponent(cid)}?limit=200&after_seq=${after}`);
            const messages = (page.messages || []).map(normalizeMessage);
            if (!messages.length) break;
            for (const m of messages) {
              after = Math.max(after, m.seq);
              if (!remember(this.seenMessages, m.message_id)) continue;
              this._noteSeq(cid, m.seq);
              this._apply("chat:message_received", m, { recovered: true });
            }
            if (!page.has_more) break;
          }
        }
        return;
      } catch (err) {
        await new Promise((r) => setTimeout(r, Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** attempt)));
      }
    }
  }

  // the store -----------------------------------------------------------------------------------

  _apply(type, data, frame = {}) {
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
      if (!conversation && message.conversation_id) this.loadConversation(message.conversation_id).catch(() => {});
      this._emit("message", { type, message, recovered: Boolean(frame.recovered) });
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
      this._emit("receipt", { conversation_id: cid, user_id: user, seq });
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
        this._emit("message", { type, message });
      }
    } else if (type.startsWith("conversation:")) {
      if (data.conversation) this.putConversation(normalizeConversation(data.conversation));
      this._emit("conversations", {});
    } else if (type === "chat:user_typing") {
      const users = this.typing.get(data.conversation_id) || new Set();
      this.typing.set(data.conversation_id, users);
      if (data.is_typing) users.add(data.user_id); else users.delete(data.user_id);
      this._emit("typing", { conversation_id: data.conversation_id, user_id: data.user_id, is_typing: Boolean(data.is_typing) });
    } else if (type === "user:status_changed") {
      this.presence.set(data.user_id, data.status);
      this._emit("presence", { user_id: data.user_id, status: data.status });
    } else if (type === "resync_required") {
      this._emit("resync", { reason: data.reason });
    }
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  putConversation(conversation) {
    const known = this.conversations.get(conversation.conversation_id);
    this.conversations.set(conversation.conversation_id, known ? { ...known, ...conversation } : conversation);
    return this.conversations.get(conversation.conversation_id);
  }

  keyOf(message) {
    return message.message_id || `pending:${message.client_message_id}`;
  }

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

  // API -----------------------------------------------------------------------------------------

  async loadConversations() {
    const found = [];
    let cursor = "";
    do {
      const page = await this.api("GET", `/api/conversations?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      for (const c of page.conversations || []) found.push(this.putConversation(normalizeConversation(c)));
      cursor = page.next_cursor || "";
    } while (cursor);
    this._emit("conversations", {});
    return found;
  }

  async loadConversation(cid) {
    const reply = await this.api("GET", `/api/conversations/${encodeURIComponent(cid)}`);
    const conversation = this.putConversation(normalizeConversation(reply.conversation));
    this._emit("conversations", {});
    return conversation;
  }

  async createDirect(userId) {
    const reply = await this.api("POST", "/api/conversations/direct", { user_id: userId });
    const conversation = this.putConversation(normalizeConversation(reply.conversation));
    this._emit("conversations", {});
    return conversation;
  }

  async createGroup(title, participantIds) {
    const reply = await this.api("POST", "/api/conversations/group", { title, participant_ids: participantIds });
    const conversation = this.putConversation(normalizeConversation(reply.conversation));
    this._emit("conversations", {});
    return conversation;
  }

  async history(cid, { beforeSeq = 0, limit = 50 } = {}) {
    const query = `limit=${limit}${beforeSeq ? `&before_seq=${beforeSeq}` : ""}`;
    const page = await this.api("GET", `/api/messages/${encodeURIComponent(cid)}?${query}`);
    const messages = (page.messages || []).map((m) => this.putMessage(normalizeMessage(m)));
    for (const m of messages) remember(this.seenMessages, m.message_id);
    if (messages.length) this._noteSeq(cid, messages[messages.length - 1].seq);
    return { messages, hasMore: Boolean(page.has_more) };
  }

  // Optimistic send: the pending message is in the store at once; retried with the same
  // client_message_id until acknowledged (the server stores it once) or refused.
  send(cid, content) {
    const pending = { message_id: "", conversation_id: cid, seq: 0, sender_id: this.userId, content, client_message_id: crypto.randomUUID(), created_at: new Date().toISOString(), edited_at: "", deleted: false, status: "pending", reactions: [] };
    this.putMessage(pending);
    this._emit("message", { type: "pending", message: pending });
    const done = this._deliver(pending);
    return { pending, done };
  }

  async _deliver(pending) {
    const data = { conversation_id: pending.conversation_id, content: pending.content, client_message_id: pending.client_message_id };
    for (let attempt = 0; attempt < 30; attempt++) {
      try {
        if (!this.connected) await this._waitConnected(this.sendTimeoutMs);
        const reply = this.connected
          ? await this._request("chat:message_send", data)
          : await this.api("POST", "/api/messages", data);
        const stored = this.putMessage(normalizeMessage(reply.message));
        this._emit("message", { type: "sent", message: stored, client_message_id: pending.client_message_id });
        return stored;
      } catch (err) {
        if (!RETRYABLE.has(err.code)) {
          pending.status = "failed";
          pending.error = err.message;
          this._emit("message", { type: "failed", message: pending });
          throw err;
        }
        await new Promise((r) => setTimeout(r, Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** attempt) * (0.5 + Math.random() / 2)));
      }
    }
    pending.status = "failed";
    this._emit("message", { type: "failed", message: pending });
    throw new ChatError("SEND_TIMEOUT", "the message could not be sent");
  }

  async edit(messageId, content) {
    const reply = await this.api("PATCH", `/api/messages/${encodeURIComponent(messageId)}`, { content });
    const message = this.putMessage(normalizeMessage(reply.message));
    this._emit("message", { type: "edited", message });
    return message;
  }

  async remove(messageId) {
    const reply = await this.api("DELETE", `/api/messages/${encodeURIComponent(messageId)}`);
    const message = this.putMessage(normalizeMessage(reply.message));
    this._emit("message", { type: "deleted", message });
    return message;
  }

  async toggleReaction(messageId, emoji) {
    const message = this.messages.get(messageId);
    const mine = message && message.reactions.some((r) => r.emoji === emoji && r.user_ids.includes(this.userId));
    const reply = mine
      ? await this.api("DELETE", `/api/messages/${encodeURIComponent(messageId)}/reactions/${encodeURIComponent(emoji)}`)
      : await this.api("POST", `/api/messages/${encodeURIComponent(messageId)}/reactions`, { emoji });
    const updated = this.putMessage(normalizeMessage(reply.message));
    const fresh = normalizeMessage(reply.message);
    updated.reactions = fresh.reactions;
    this._emit("message", { type: "reaction", message: updated });
    return updated;
  }

  async markRead(messageId) {
    const message = this.messages.get(messageId);
    const reply = await this.api("POST", `/api/messages/${encodeURIComponent(messageId)}/status`, { status: "MESSAGE_STATUS_READ" });
    if (message) {
      const conversation = this.conversations.get(message.conversation_id);
      if (conversation) conversation.unread_count = Math.max(0, this.lastSeq(message.conversation_id) - Number(reply.read_seq || 0));
      this._emit("conversations", {});
    }
    return reply;
  }

  async loadPresence(userIds) {
    if (!userIds.length) return;
    const query = userIds.map((u) => `user_ids=${encodeURIComponent(u)}`).join("&");
    const reply = await this.api("GET", `/api/presence?${query}`);
    for (const p of reply.presences || []) {
      this.presence.set(p.user_id, shortEnum(p.status, "PRESENCE_STATUS_", "unknown"));
      this._emit("presence", { user_id: p.user_id, status: this.presence.get(p.user_id) });
    }
  }

  // Typing frames are throttled: one `true` per interval while typing (the server keeps the state
  // for 3 s after the last one), one `false` when stopping.
  typingFrame(cid, isTyping) {
    const [was, at] = this.typingSent.get(cid) || [false, 0];
    const now = Date.now();
    if (isTyping === was && (!isTyping || now - at < this.typingIntervalMs)) return false;
    if (!this.connected) return false;
    this.ws.send(JSON.stringify({ type: "chat:typing", data: { conversation_id: cid, is_typing: isTyping } }));
    this.typingSent.set(cid, [isTyping, now]);
    return true;
  }

  _flushTyping() {
    this.typingSent.clear();
  }
}
