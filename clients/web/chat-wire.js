// The edge's JSON as the page uses it: protobuf rendered as JSON has enums by name
// (MESSAGE_STATUS_READ), int64 as strings and omits empty fields, so every message and conversation
// is normalized once, here, into plain objects with short names, numbers and defaults. Also the one
// error type every call rejects with, the codes worth retrying and how long to wait before a retry.

export function shortEnum(value, prefix, fallback = "") {
  if (value === undefined || value === null || value === "") return fallback;
  const text = String(value);
  return (text.startsWith(prefix) ? text.slice(prefix.length) : text).toLowerCase();
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
    attachments: (data.attachments || []).map((a) => ({ ...a, size_bytes: Number(a.size_bytes || 0), duration_ms: Number(a.duration_ms || 0) })),
    reply_to_id: data.reply_to_id || "",
    reply_count: Number(data.reply_count || 0), // its thread: live replies, and when the latest was sent
    last_reply_at: data.last_reply_at || "",
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
    created_by: data.created_by || "",
    active: Boolean(data.active), // proto3 JSON leaves false out of event frames
    // direct conversations: accepted | pending (a request) | declined | blocked; "" for groups
    request_state: shortEnum(data.request_state, "REQUEST_STATE_"),
  };
}

// retryAfterS: the seconds the edge asked to wait (Retry-After, or an error frame's retry_after), 0 if none.
export class ChatError extends Error {
  constructor(code, message, status = 0, retryAfterS = 0) {
    super(`${code}: ${message}`);
    this.code = code;
    this.status = status;
    this.retryAfterS = Number(retryAfterS) > 0 ? Number(retryAfterS) : 0;
  }
}

// Worth sending the same request again (idempotent work only: a send with its client_message_id,
// a receipt): an upstream away or slow (UNAVAILABLE, DEADLINE_EXCEEDED: a 503, or an error frame with
// "retryable": true), a rate limit, or no answer at all. INTERNAL is a bug on the server and would only
// fail again. The Python client keeps the same list (clients/python/chatmesh_client/errors.py).
export const RETRYABLE = new Set(["UNAVAILABLE", "DEADLINE_EXCEEDED", "RATE_LIMITED", "CONNECTION_LOST", "TIMEOUT"]);

// Milliseconds before retry number attempt + 1: exponential with full jitter (clients that failed
// together do not come back together), never sooner than the edge asked.
export function retryDelayMs(err, attempt, initialMs, maxMs) {
  const ceiling = Math.min(maxMs, initialMs * 2 ** attempt);
  const delay = ceiling / 2 + Math.random() * ceiling / 2;
  return Math.max(delay, (err && err.retryAfterS ? err.retryAfterS : 0) * 1000);
}

// An error frame's data as a ChatError.
export function errorOfFrame(data, fallbackCode = "ERROR") {
  return new ChatError(data?.code || fallbackCode, data?.message || "", 0, data?.retry_after || 0);
}
