// The edge's JSON as the page uses it: protobuf rendered as JSON has enums by name
// (MESSAGE_STATUS_READ), int64 as strings and omits empty fields, so every message and conversation
// is normalized once, here, into plain objects with short names, numbers and defaults. Also the one
// error type every call rejects with, and the codes worth retrying.

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

// The edge or an upstream was briefly away: a send retries these (same client_message_id).
export const RETRYABLE = new Set(["UNAVAILABLE", "CONNECTION_LOST", "TIMEOUT", "RATE_LIMITED", "INTERNAL"]);
