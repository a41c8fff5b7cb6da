// chatmesh's browser client, ChatClient: the page's one object for the edge. It puts together the
// socket (chat-socket.js: reconnect, resume, acknowledgements, event-id deduplication), the store
// (chat-store.js) and REST calls made with fetch, and keeps the rules of the Python client
// (clients/python) that span both paths: each message once by message id (after a resync the
// server may replay what REST already gave us), and a resync_required answered by fetching each
// conversation's missing messages over REST before any later frame is applied.

import { ChatSocket, remember } from "./chat-socket.js";
import { ChatStore } from "./chat-store.js";
import { ChatError, RETRYABLE, normalizeConversation, normalizeMessage, retryDelayMs, shortEnum } from "./chat-wire.js";

export { ChatError, normalizeConversation, normalizeMessage, shortEnum };

export class ChatClient extends EventTarget {
  constructor(baseUrl = location.origin, options = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.typingIntervalMs = options.typingIntervalMs ?? 2000;
    this.token = "";
    this.resyncs = 0;
    this.seenMessages = new Set();
    this.seqSeen = new Map(); // conversation -> highest seq given to the page
    this.typingSent = new Map();
    this.store = new ChatStore({
      emit: (name, detail) => this._emit(name, detail),
      onUnknownConversation: (cid) => this.loadConversation(cid).catch(() => {}),
    });
    this.socket = new ChatSocket(this.baseUrl.replace(/^http/, "ws") + "/ws", {
      target: this,
      onReady: (userId) => { this.store.userId = userId; this.typingSent.clear(); },
      onEvent: (frame, durable) => this._onEvent(frame, durable),
      sendTimeoutMs: options.sendTimeoutMs ?? 5000,
      backoffInitialMs: options.backoffInitialMs ?? 250,
      backoffMaxMs: options.backoffMaxMs ?? 5000,
    });
  }

  // Where the page, host applications and tests have always read (and tuned) the connection and the store.
  get userId() { return this.store.userId; }
  get state() { return this.socket.state; }
  get connected() { return this.socket.connected; }
  get ws() { return this.socket.ws; }
  get wsUrl() { return this.socket.wsUrl; }
  get lastCloseCode() { return this.socket.lastCloseCode; }
  get resumeToken() { return this.socket.resumeToken; }
  set resumeToken(value) { this.socket.resumeToken = value; }
  get sendTimeoutMs() { return this.socket.sendTimeoutMs; }
  set sendTimeoutMs(value) { this.socket.sendTimeoutMs = value; }
  get backoffInitialMs() { return this.socket.backoffInitialMs; }
  set backoffInitialMs(value) { this.socket.backoffInitialMs = value; }
  get backoffMaxMs() { return this.socket.backoffMaxMs; }
  set backoffMaxMs(value) { this.socket.backoffMaxMs = value; }
  get conversations() { return this.store.conversations; }
  get messages() { return this.store.messages; }
  get order() { return this.store.order; }
  get positions() { return this.store.positions; }
  get presence() { return this.store.presence; }
  get typing() { return this.store.typing; }
  putConversation(conversation) { return this.store.putConversation(conversation); }
  putMessage(message) { return this.store.putMessage(message); }
  keyOf(message) { return this.store.keyOf(message); }
  lastSeq(cid) { return this.store.lastSeq(cid); }
  conversationMessages(cid) { return this.store.conversationMessages(cid); }

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
      throw new ChatError(error.code || "HTTP_ERROR", error.message || reply.statusText, reply.status,
                          Number(reply.headers.get("Retry-After")) || 0);
    }
    return data;
  }

  // An idempotent REST call (a receipt), retried on the retryable codes like a send.
  async _retrying(call, attempts = 6) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if (!RETRYABLE.has(err.code) || attempt >= attempts - 1) throw err;
        await new Promise((r) => setTimeout(r, retryDelayMs(err, attempt, this.backoffInitialMs, this.backoffMaxMs)));
      }
    }
  }

  // connection and events -----------------------------------------------------------------------

  connect(token) {
    this.token = token;
    return this.socket.connect(token);
  }

  close() {
    this.socket.close();
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  async _onEvent(frame, durable) {
    const data = frame.data || {};
    if (durable && frame.type === "chat:message_received") {
      if (!remember(this.seenMessages, data.message_id)) return; // already fetched over REST
      this._noteSeq(data.conversation_id, Number(data.seq || 0));
    }
    if (frame.type.startsWith("call:")) { this._emit("call", frame); return; } // call signaling: chat-calls.js
    this.store.apply(frame.type, data, frame);
    if (frame.type === "resync_required") await this._resync();
  }

  _noteSeq(conversationId, seq) {
    if (seq > (this.seqSeen.get(conversationId) || 0)) this.seqSeen.set(conversationId, seq);
  }

  // What the resume token could not replay: each conversation's messages past the last seq the page
  // was given (for one it never saw: its unread ones), in seq order.
  async _resync() {
    this.resyncs += 1;
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
              this.store.apply("chat:message_received", m, { recovered: true });
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

  // conversations -------------------------------------------------------------------------------

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

  // A direct conversation request: "accept" (replying accepts too), "decline" or "block".
  async answerRequest(cid, answer) {
    const reply = await this.api("POST", `/api/conversations/${encodeURIComponent(cid)}/${answer}`, {});
    const conversation = this.putConversation(normalizeConversation(reply.conversation));
    this._emit("conversations", {});
    return conversation;
  }

  // The caller's privacy settings ({ hide_last_seen }); updateSettings changes what it is given.
  async settings() {
    return (await this.api("GET", "/api/users/me/settings")).settings || {};
  }

  async updateSettings(changes) {
    return (await this.api("PATCH", "/api/users/me/settings", changes)).settings || {};
  }

  async createGroup(title, participantIds) {
    const reply = await this.api("POST", "/api/conversations/group", { title, participant_ids: participantIds });
    const conversation = this.putConversation(normalizeConversation(reply.conversation));
    this._emit("conversations", {});
    return conversation;
  }

  // messages ------------------------------------------------------------------------------------

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
  // `attachments`: ready uploads (chat-attachments.js uploadFile), shown on the pending message too.
  // `replyToId`: the message whose thread this goes into (chat-threads.js).
  send(cid, content, attachments = [], replyToId = "") {
    const pending = { message_id: "", conversation_id: cid, seq: 0, sender_id: this.userId, content, client_message_id: crypto.randomUUID(), created_at: new Date().toISOString(), edited_at: "", deleted: false, status: "pending", reactions: [], attachments, reply_to_id: replyToId, reply_count: 0, last_reply_at: "" };
    this.putMessage(pending);
    this._emit("message", { type: "pending", message: pending });
    const done = this._deliver(pending);
    return { pending, done };
  }

  async _deliver(pending) {
    const data = { conversation_id: pending.conversation_id, content: pending.content, client_message_id: pending.client_message_id };
    if (pending.attachments.length) data.attachment_ids = pending.attachments.map((a) => a.attachment_id);
    if (pending.reply_to_id) data.reply_to_id = pending.reply_to_id;
    for (let attempt = 0; attempt < 30; attempt++) {
      try {
        if (!this.connected) await this.socket.waitConnected(this.sendTimeoutMs);
        const reply = this.connected
          ? await this.socket.request("chat:message_send", data)
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
        await new Promise((r) => setTimeout(r, retryDelayMs(err, attempt, this.backoffInitialMs, this.backoffMaxMs)));
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

  // receipts, presence, typing -----------------------------------------------------------------

  async markRead(messageId) {
    const message = this.messages.get(messageId);
    const reply = await this._retrying(() => this.api("POST", `/api/messages/${encodeURIComponent(messageId)}/status`, { status: "MESSAGE_STATUS_READ" }));
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
    if (!this.socket.send({ type: "chat:typing", data: { conversation_id: cid, is_typing: isTyping } })) return false;
    this.typingSent.set(cid, [isTyping, now]);
    return true;
  }
}
