// The page's WebSocket: connect, authenticate (with the last resume token), and after any drop
// (1012: the edge restarted; 4008: too slow; a network error) connect again after a capped
// exponential backoff with jitter, so the page never handles a reconnect. Durable events are
// acknowledged (batched: the edge limits frames per second) and deduplicated by event id, since a
// resumed socket is sent the unacknowledged ones again. Each new event goes to `onEvent` in arrival
// order, one at a time and awaited, so a resync can finish over REST before a later frame is applied.

import { ChatError, errorOfFrame } from "./chat-wire.js";

const SEEN_KEPT = 50000; // event and message ids remembered for deduplication
const ACK_DELAY_MS = 50;

// Add to a bounded set (oldest forgotten first); false when the key was there already.
export function remember(set, key) {
  if (set.has(key)) return false;
  set.add(key);
  if (set.size > SEEN_KEPT) set.delete(set.values().next().value);
  return true;
}

export class ChatSocket {
  // target: the EventTarget that hears "state", "fatal" and "token_expiring"; onReady(userId): the
  // edge accepted the token; onEvent(frame, durable): a new event (durable: it had a resume token).
  constructor(wsUrl, { target, onReady, onEvent, sendTimeoutMs, backoffInitialMs, backoffMaxMs }) {
    this.wsUrl = wsUrl;
    this.target = target;
    this.onReady = onReady;
    this.onEvent = onEvent;
    this.sendTimeoutMs = sendTimeoutMs;
    this.backoffInitialMs = backoffInitialMs;
    this.backoffMaxMs = backoffMaxMs;
    this.token = "";
    this.state = "idle";
    this.resumeToken = "";
    this.ws = null;
    this.attempt = 0;
    this.closed = false;
    this.everConnected = false;
    this.lastCloseCode = undefined;
    this.requests = new Map();
    this.seenEvents = new Set();
    this.ackIds = [];
    this.ackDelivered = new Map();
    this.ackTimer = null;
    this.frameQueue = Promise.resolve();
  }

  // Resolves at the first `ready`; rejects when the edge refuses the token.
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

  get connected() { return this.state === "connected" && this.ws && this.ws.readyState === WebSocket.OPEN; }

  // True once connected, false after `timeoutMs` without.
  waitConnected(timeoutMs) {
    if (this.connected) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.target.removeEventListener("state", on); resolve(false); }, timeoutMs);
      const on = () => {
        if (this.connected) { clearTimeout(timer); this.target.removeEventListener("state", on); resolve(true); }
      };
      this.target.addEventListener("state", on);
    });
  }

  // A frame with an id; resolves with the reply's data (rejects on an error reply, a lost socket or timeout).
  request(type, data, timeoutMs = this.sendTimeoutMs) {
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

  // A frame that needs no reply; false when there is no open socket to carry it.
  send(frame) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.target.dispatchEvent(new CustomEvent("state", { detail: { state, attempt: this.attempt } }));
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
          this.onReady(frame.data.user_id);
          this.attempt = 0;
          this.everConnected = true;
          this._setState("connected");
          if (this._firstConnect) { this._firstConnect.resolve(); this._firstConnect = null; }
        } else if (frame.type === "error" && frame.data?.retryable) {
          // Refused for now (an upstream is away; the edge closes with 1013): onclose reconnects with backoff.
        } else if (frame.type === "error") {
          this.closed = true;
          const err = new ChatError(frame.data?.code || "UNAUTHENTICATED", frame.data?.message || "refused", 401);
          if (this._firstConnect) { this._firstConnect.reject(err); this._firstConnect = null; }
          this.target.dispatchEvent(new CustomEvent("fatal", { detail: err }));
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

  async _onFrame(frame) {
    if (frame.type === "ack" || frame.type === "error" || frame.type === "pong") {
      const pending = this.requests.get(String(frame.id));
      if (!pending) return;
      this.requests.delete(String(frame.id));
      if (frame.type === "error") pending.reject(errorOfFrame(frame.data));
      else pending.resolve(frame.data || {});
      return;
    }
    if (frame.type === "token_expiring") {
      this.target.dispatchEvent(new CustomEvent("token_expiring", { detail: frame.data }));
      return;
    }
    const durable = Boolean(frame.resume_token);
    if (durable) {
      this._queueAck(frame);
      if (!remember(this.seenEvents, frame.event_id)) return; // a redelivered copy
      this.resumeToken = frame.resume_token;
    }
    await this.onEvent(frame, durable);
  }

  // One `events_ack` with every event id, and per conversation one `chat:message_delivered` for the
  // latest message (it advances the user's delivered position), shortly after the first event.
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
    }, ACK_DELAY_MS);
  }
}
