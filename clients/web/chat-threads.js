// Threads on the page: the replies to a message, in a panel beside the conversation.
//
// A message's "💬 3 replies" (or "Reply in thread") button opens its thread: the root, its replies
// in seq order (older pages on demand, as history), and a composer whose sends carry reply_to_id.
// It stays current by itself: replies arrive as chat:message_received like any message, and the
// chat:thread_updated frame right behind each (chat-store.js emits it as "thread") carries the
// root's exact count, so the button under the root and the panel's header follow it. A deleted
// reply stays in the panel as a placeholder, as in history; it no longer counts.
//
// app.js calls installThreads(client, { el, alert, onChange }) once per sign-in and asks
// `controls(message)` for the buttons under each message; `onChange` re-renders the conversation.

import { normalizeMessage } from "./chat-wire.js";

const PAGE = 50;

export function installThreads(client, { el, alert = () => {}, onChange = () => {} }) {
  let rootId = "";
  let ids = new Set(); // the open thread's replies (message ids, or pending keys while sending)
  let hasMore = false;
  let loading = false;

  const panel = el("aside", { id: "thread", class: "thread", "aria-labelledby": "thread-title", hidden: true });
  const title = el("h2", { id: "thread-title", class: "pane-title" }, "Thread");
  const rootNode = el("ol", { class: "thread-root", "aria-label": "Thread root" });
  const count = el("p", { class: "thread-count", "aria-live": "polite" });
  const older = el("button", { type: "button", class: "thread-older", hidden: true, onclick: () => loadOlder() }, "Older replies");
  const list = el("ol", { class: "messages thread-replies", "aria-label": "Replies" });
  const input = el("input", { id: "thread-input", autocomplete: "off", placeholder: "Reply in thread", maxlength: "4000" });
  const form = el("form", { class: "composer thread-composer", onsubmit: (e) => { e.preventDefault(); reply(); } },
    el("div", { class: "row" }, el("label", { for: "thread-input", class: "sr-only" }, "Reply"), input,
       el("button", { type: "submit", id: "thread-send" }, "Reply")));
  panel.append(el("div", { class: "thread-head" }, title,
                  el("button", { type: "button", class: "thread-close", "aria-label": "Close thread", onclick: close }, "×")),
               rootNode, count, older, list, form);
  document.getElementById("app").append(panel);
  document.getElementById("app").classList.add("with-threads");

  async function open(messageId) {
    rootId = messageId;
    ids = new Set();
    panel.hidden = false;
    render();
    try {
      await loadPage({});
    } catch (err) {
      alert(`Could not open the thread: ${err.message}`);
    }
    input.focus();
  }

  function close() {
    rootId = "";
    panel.hidden = true;
  }

  // One page of GET /api/threads/{id}: into the store and this thread's set; the root as it stands.
  async function loadPage({ beforeSeq = 0 }) {
    const wanted = rootId;
    const page = await client.api("GET", `/api/threads/${encodeURIComponent(wanted)}?limit=${PAGE}${beforeSeq ? `&before_seq=${beforeSeq}` : ""}`);
    if (wanted !== rootId) return;
    client.putMessage(normalizeMessage(page.root));
    for (const m of page.messages || []) ids.add(client.putMessage(normalizeMessage(m)).message_id);
    hasMore = Boolean(page.has_more);
    render();
  }

  async function loadOlder() {
    const first = replies().find((m) => m.message_id);
    if (loading || !first) return;
    loading = true;
    try { await loadPage({ beforeSeq: first.seq }); } catch (err) { alert(err.message); } finally { loading = false; }
  }

  function reply() {
    const root = client.messages.get(rootId);
    const text = input.value;
    if (!root || !text.trim()) return;
    input.value = "";
    const { pending, done } = client.send(root.conversation_id, text, [], rootId);
    ids.add(client.keyOf(pending));
    render();
    done.catch((err) => { alert(err.message); render(); });
  }

  function replies() {
    return [...ids].map((k) => client.messages.get(k)).filter(Boolean)
      .sort((a, b) => (a.message_id ? a.seq : Infinity) - (b.message_id ? b.seq : Infinity));
  }

  function render() {
    if (!rootId) return;
    const root = client.messages.get(rootId);
    rootNode.replaceChildren(root ? messageNode(root) : el("p", {}, "Loading…"));
    const n = root ? root.reply_count : 0;
    count.textContent = `${n} ${n === 1 ? "reply" : "replies"}`;
    older.hidden = !hasMore;
    list.replaceChildren(...replies().map(messageNode));
    list.scrollTop = list.scrollHeight;
  }

  function messageNode(m) {
    const mine = m.sender_id === client.userId;
    return el("li", { class: `message${mine ? " mine" : ""}${m.deleted ? " deleted" : ""}`, dataset: { messageId: m.message_id, status: m.status } },
      el("div", { class: "sender" }, m.sender_id),
      el("div", { class: "content" }, m.deleted ? "This message was deleted" : m.content),
      el("div", { class: "meta" }, el("time", { datetime: m.created_at },
        m.created_at ? new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "")));
  }

  // Replies as they come (any path: live, resync, this page's own sends).
  function onMessage(e) {
    const { type, message, client_message_id: clientId } = e.detail;
    if (!rootId) return;
    if (type === "sent" && clientId) ids.delete(`pending:${clientId}`);
    if (message.reply_to_id === rootId && message.message_id) ids.add(message.message_id);
    if (ids.has(message.message_id) || message.message_id === rootId || message.reply_to_id === rootId) render();
  }

  function onThread(e) {
    const { root_message_id: root, reply } = e.detail;
    if (root === rootId) {
      if (reply && reply.message_id && !reply.deleted) ids.add(reply.message_id);
      render();
    }
    onChange(e.detail);
  }

  client.addEventListener("message", onMessage);
  client.addEventListener("thread", onThread);

  return {
    open,
    close,
    get rootId() { return rootId; },
    // The buttons under a message in the conversation: its thread (with the count), or the thread a reply is in.
    controls(m) {
      if (!m.message_id) return null;
      const n = m.reply_count || 0;
      const own = n || (!m.deleted && !m.reply_to_id) // a reply points at its thread rather than start one
        ? el("button", { type: "button", class: "thread-open", dataset: { count: String(n) }, onclick: () => open(m.message_id) },
             n ? `💬 ${n} ${n === 1 ? "reply" : "replies"}` : "Reply in thread")
        : null;
      const parent = m.reply_to_id
        ? el("button", { type: "button", class: "thread-parent", onclick: () => open(m.reply_to_id) }, "↪ in thread")
        : null;
      return own || parent ? el("div", { class: "thread-links" }, own, parent) : null;
    },
    uninstall() {
      client.removeEventListener("message", onMessage);
      client.removeEventListener("thread", onThread);
      document.getElementById("app").classList.remove("with-threads");
      panel.remove();
    },
  };
}
