// The chat page: sign-in, conversation list, one open conversation. All state lives in the
// ChatClient's store (chat-store.js, read through chat.js); this module renders it and turns user
// actions into client calls.

import { ChatClient } from "./chat.js";
import { VoiceRecorder, formatSize, renderAttachment, uploadFile } from "./chat-attachments.js";
import { CallPanel } from "./chat-calls.js";
import { bindHideLastSeen, isRequestToMe, loadHideLastSeen, requestBar } from "./privacy.js";
import { installThreads } from "./chat-threads.js";

const $ = (id) => document.getElementById(id);
const TICKS = { failed: ["!", "not sent"], pending: ["🕓", "sending"], sent: ["✓", "sent"], delivered: ["✓✓", "delivered"], read: ["✓✓", "read"] };
const QUICK_REACTIONS = ["👍", "❤️", "😂"];
const TYPING_SAFETY_MS = 10000; // if a "stopped typing" is lost, the indicator still goes

let client = null;
let openId = "";
let hasMore = new Map(); // conversation -> older pages exist
let loadingOlder = false;
let editingId = "";
let markedRead = new Map(); // conversation -> highest seq marked read by this page
const typingTimers = new Map();
let drafts = []; // uploads for the next message: { key, name, state: uploading|ready|failed, loaded, total, attachment, error }
const attachmentNodes = new Map(); // attachment id -> its rendered node, kept across renders (a playing voice message goes on)
let recorder = null;
let calls = null; // the call bar (chat-calls.js)
let threads = null; // chat-threads.js: the thread panel and the buttons under each message

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function titleOf(conversation) {
  if (conversation.type === "group") return conversation.title || "Group";
  const other = conversation.participants.find((p) => p.user_id !== client.userId);
  return other ? other.display_name || other.user_id : "(just you)";
}

function otherUser(conversation) {
  if (conversation.type !== "direct") return "";
  const other = conversation.participants.find((p) => p.user_id !== client.userId);
  return other ? other.user_id : "";
}

// sign-in -----------------------------------------------------------------------------------------

function tokenFromHost() {
  if (window.CHATMESH_TOKEN) return String(window.CHATMESH_TOKEN);
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    history.replaceState(null, "", location.pathname + location.search); // keep it out of the address bar
    return decodeURIComponent(match[1]);
  }
  return sessionStorage.getItem("chatmesh.token") || "";
}

async function signIn(token) {
  $("signin-error").textContent = "";
  client = new ChatClient(location.origin);
  window.chatmeshClient = client; // for the host application and for debugging
  client.addEventListener("state", (e) => renderConnection(e.detail.state));
  client.addEventListener("fatal", (e) => { signOut(); $("signin-error").textContent = `Signed out: ${e.detail.message}`; });
  client.addEventListener("conversations", () => { renderConversations(); renderRequest(); askPresence(); });
  client.addEventListener("message", onMessage);
  client.addEventListener("receipt", (e) => { if (e.detail.conversation_id === openId) renderMessages(); });
  client.addEventListener("typing", onTyping);
  client.addEventListener("presence", renderConversations);
  client.addEventListener("resync", () => { if (openId) renderMessages(); });
  try {
    await client.connect(token);
  } catch (err) {
    client = null;
    sessionStorage.removeItem("chatmesh.token");
    showSignIn(`Could not sign in: ${err.message}`);
    return;
  }
  sessionStorage.setItem("chatmesh.token", token);
  threads = installThreads(client, { el, alert: alertLater, onChange: (d) => { if (d.conversation_id === openId) renderMessages(); } });
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  $("me").textContent = `signed in as ${client.userId}`;
  await client.loadConversations();
  loadHideLastSeen($("hide-last-seen"), client);
  calls = new CallPanel(client, { openConversation: () => (openId ? client.conversations.get(openId) : null), el, alert: alertLater });
  $("new-chat-user").focus();
}

bindHideLastSeen($("hide-last-seen"), () => client, (text) => alertLater(text));

// Presence of the people in direct conversations: asked once each, then kept up to date by events.
// A brand-new contact may read "unknown" for a moment (presence caches contacts): asked again.
const presenceAsked = new Map(); // user -> times asked
const presencePending = new Set();
const requestStates = new Map(); // conversation -> request state when last asked: an accepted request asks anew
function askPresence() {
  if (!client) return;
  for (const c of client.conversations.values()) {
    if (requestStates.get(c.conversation_id) !== c.request_state) presenceAsked.delete(otherUser(c));
    requestStates.set(c.conversation_id, c.request_state);
  }
  const users = [...client.conversations.values()].map(otherUser)
    .filter((u) => u && !presencePending.has(u) && (presenceAsked.get(u) || 0) < 5
                   && (client.presence.get(u) || "unknown") === "unknown").slice(0, 100);
  if (!users.length) return;
  users.forEach((u) => { presencePending.add(u); presenceAsked.set(u, (presenceAsked.get(u) || 0) + 1); });
  client.loadPresence([...new Set(users)]).catch(() => {}).finally(() => {
    setTimeout(() => { users.forEach((u) => presencePending.delete(u)); askPresence(); }, 1500);
  });
}

function signOut() {
  if (calls) calls.close();
  calls = null;
  if (client) client.close();
  if (threads) threads.uninstall();
  client = threads = null;
  openId = "";
  presenceAsked.clear();
  presencePending.clear();
  requestStates.clear();
  sessionStorage.removeItem("chatmesh.token");
  showSignIn("");
}

function showSignIn(error) {
  $("app").hidden = true;
  $("signout").hidden = true;
  $("me").textContent = "";
  $("conn").textContent = "";
  $("signin").hidden = false;
  $("signin-error").textContent = error;
  $("signin-name").focus();
}

$("dev-login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const userId = $("signin-name").value.trim();
  const reply = await fetch("/dev/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user_id: userId }) });
  if (reply.status === 404 || reply.status === 405) {
    $("signin-error").textContent = "Development sign-in is off on this server (CHAT_DEV_LOGIN). Paste a token instead.";
    return;
  }
  const data = await reply.json();
  if (!reply.ok) { $("signin-error").textContent = data.error?.message || "Sign-in failed"; return; }
  await signIn(data.token);
});

$("token-login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("signin-token").value.trim();
  if (token) await signIn(token);
});

$("signout").addEventListener("click", signOut);

// connection state --------------------------------------------------------------------------------

function renderConnection(state) {
  const node = $("conn");
  node.dataset.state = state;
  node.textContent = { connecting: "Connecting…", connected: "Online", reconnecting: "Reconnecting…", closed: "" }[state] ?? state;
}

// conversations -------------------------------------------------------------------------------------

function renderConversations() {
  if (!client) return;
  const list = $("conversations");
  const sorted = [...client.conversations.values()].filter((c) => c.active).sort((a, b) => (b.last_message_at || "").localeCompare(a.last_message_at || ""));
  list.replaceChildren(...sorted.map((c) => {
    const other = otherUser(c);
    const status = other ? client.presence.get(other) || "unknown" : "";
    const unread = c.conversation_id === openId ? 0 : c.unread_count;
    const preview = c.last_message ? (c.last_message.deleted ? "(deleted)" : `${c.last_message.sender_id === client.userId ? "You: " : ""}${c.last_message.text}`) : "No messages yet";
    const badge = isRequestToMe(c, client.userId) ? "Request" : c.request_state === "blocked" ? "Blocked" : "";
    const label = `${titleOf(c)}${badge ? `, ${badge.toLowerCase()}` : ""}${status ? `, ${status}` : ""}${unread ? `, ${unread} unread` : ""}`;
    return el("li", {},
      el("button", { type: "button", class: "conversation", "aria-label": label, "aria-current": c.conversation_id === openId ? "true" : "false",
                     dataset: { id: c.conversation_id }, onclick: () => openConversation(c.conversation_id) },
        el("span", { class: "dot", dataset: { status }, "aria-hidden": "true", title: status }),
        el("span", { class: "title" }, titleOf(c), badge ? el("span", { class: "badge" }, badge) : null),
        el("span", { class: "preview" }, preview),
        el("span", { class: "unread", hidden: !unread, "aria-hidden": "true" }, String(unread))));
  }));
}

$("new-chat").addEventListener("submit", async (e) => {
  e.preventDefault();
  const userId = $("new-chat-user").value.trim();
  if (!userId || !client) return;
  try {
    const conversation = await client.createDirect(userId);
    $("new-chat-user").value = "";
    await openConversation(conversation.conversation_id);
  } catch (err) {
    alertLater(`Could not start a chat with ${userId}: ${err.message}`);
  }
});

function alertLater(text) {
  $("notice").textContent = text;
  setTimeout(() => { if ($("notice").textContent === text) $("notice").textContent = ""; }, 8000);
}

async function openConversation(cid) {
  openId = cid;
  editingId = "";
  const conversation = client.conversations.get(cid);
  $("pane-title").textContent = conversation ? titleOf(conversation) : "Conversation";
  $("composer").hidden = false;
  $("editing").hidden = true;
  renderTyping();
  renderConversations();
  renderRequest();
  if (calls) calls.render();
  if (!hasMore.has(cid)) {
    const page = await client.history(cid);
    hasMore.set(cid, page.hasMore);
  }
  renderMessages({ toBottom: true });
  markReadIfVisible();
  $("composer-input").focus();
}

// messages ----------------------------------------------------------------------------------------

// The open conversation's request bar (privacy.js); a declined conversation closes.
function renderRequest() {
  if (!client) return;
  const conversation = openId ? client.conversations.get(openId) : null;
  if (conversation && !conversation.active) {
    openId = "";
    $("pane-title").textContent = "Pick a conversation";
    $("messages").replaceChildren();
    $("composer").hidden = true;
  }
  const bar = requestBar(conversation, client.userId, conversation ? titleOf(conversation) : "");
  $("request").hidden = !bar.shown;
  $("request-text").textContent = bar.text;
  for (const id of ["request-accept", "request-decline", "request-block"]) $(id).hidden = !bar.buttons;
  if (conversation && conversation.active) $("composer").hidden = bar.composerHidden;
}

async function answerRequest(answer) {
  if (!client || !openId) return;
  try {
    await client.answerRequest(openId, answer);
  } catch (err) {
    alertLater(`Could not ${answer}: ${err.message}`);
  }
  renderConversations();
  renderRequest();
}

$("request-accept").addEventListener("click", () => answerRequest("accept"));
$("request-decline").addEventListener("click", () => answerRequest("decline"));
$("request-block").addEventListener("click", () => answerRequest("block"));

function onMessage(e) {
  const { message } = e.detail;
  const conversation = client.conversations.get(message.conversation_id);
  if (conversation && message.sender_id === client.userId && isRequestToMe(conversation, client.userId)) {
    conversation.request_state = "accepted"; // a reply accepts the request (the server does the same)
    renderRequest();
  }
  if (message.conversation_id === openId) {
    renderMessages();
    markReadIfVisible();
  }
  renderConversations();
}

function markReadIfVisible() {
  if (!openId || document.visibilityState !== "visible") return;
  const messages = client.conversationMessages(openId).filter((m) => m.message_id);
  const last = [...messages].reverse().find((m) => m.sender_id !== client.userId);
  if (!last || last.seq <= (markedRead.get(openId) || 0)) {
    const conversation = client.conversations.get(openId);
    if (conversation && conversation.unread_count && last) conversation.unread_count = 0;
    return;
  }
  markedRead.set(openId, last.seq);
  client.markRead(last.message_id).then(renderConversations).catch(() => markedRead.delete(openId));
}

document.addEventListener("visibilitychange", markReadIfVisible);

function renderMessages({ toBottom = false } = {}) {
  if (!openId || !client) return;
  const list = $("messages");
  const atBottom = toBottom || list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const conversation = client.conversations.get(openId);
  const group = conversation && conversation.type === "group";
  const items = client.conversationMessages(openId).map((m) => renderMessage(m, group));
  if (hasMore.get(openId)) items.unshift(el("li", { class: "older" }, "Scroll up for older messages"));
  list.replaceChildren(...items);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderMessage(m, group) {
  const mine = m.sender_id === client.userId;
  const [tick, tickLabel] = TICKS[m.status] || TICKS.sent;
  const key = client.keyOf(m);
  const reactions = m.reactions.map((r) => el("button", {
    type: "button", "aria-pressed": r.user_ids.includes(client.userId) ? "true" : "false",
    "aria-label": `${r.emoji} ${r.count}`, onclick: () => react(m, r.emoji) }, `${r.emoji} ${r.count}`));
  const actions = m.message_id && !m.deleted ? el("div", { class: "actions" },
    ...QUICK_REACTIONS.map((emoji) => el("button", { type: "button", "aria-label": `React ${emoji}`, onclick: () => react(m, emoji) }, emoji)),
    mine ? el("button", { type: "button", class: "edit", onclick: () => startEdit(m) }, "Edit") : null,
    mine ? el("button", { type: "button", class: "delete", onclick: () => remove(m) }, "Delete") : null) : null;
  return el("li", { class: `message${mine ? " mine" : ""}${m.deleted ? " deleted" : ""}`,
                    dataset: { key, messageId: m.message_id, seq: String(m.seq), status: m.status } },
    group && !mine ? el("div", { class: "sender" }, m.sender_id) : null,
    el("div", { class: "content" }, m.deleted ? "This message was deleted" : m.content),
    !m.deleted && m.attachments && m.attachments.length ? el("div", { class: "attachments" }, ...m.attachments.map(attachmentNode)) : null,
    el("div", { class: "meta" },
      m.edited_at && !m.deleted ? el("span", { class: "edited" }, "edited") : null,
      el("time", { datetime: m.created_at }, m.created_at ? new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : ""),
      mine ? el("span", { class: "ticks", dataset: { status: m.status }, "aria-label": tickLabel, title: m.error || tickLabel }, tick) : null),
    reactions.length ? el("div", { class: "reactions" }, ...reactions) : null,
    threads ? threads.controls(m) : null,
    actions);
}

$("messages").addEventListener("scroll", async () => {
  const list = $("messages");
  if (!openId || loadingOlder || !hasMore.get(openId) || list.scrollTop > 40) return;
  const first = client.conversationMessages(openId).find((m) => m.message_id);
  if (!first) return;
  loadingOlder = true;
  const cid = openId;
  try {
    const before = list.scrollHeight;
    const page = await client.history(cid, { beforeSeq: first.seq });
    hasMore.set(cid, page.hasMore);
    if (cid === openId) {
      renderMessages();
      list.scrollTop += list.scrollHeight - before;
    }
  } finally {
    loadingOlder = false;
  }
});

function attachmentNode(attachment) {
  let node = attachmentNodes.get(attachment.attachment_id);
  if (!node || node.dataset.kindSource !== attachment.content_type) {
    node = renderAttachment(client, attachment, el);
    node.dataset.kindSource = attachment.content_type || "";
    attachmentNodes.set(attachment.attachment_id, node);
  }
  return node;
}

async function react(message, emoji) {
  try { await client.toggleReaction(message.message_id, emoji); } catch (err) { alertLater(err.message); }
}

function startEdit(message) {
  editingId = message.message_id;
  $("editing").hidden = false;
  $("composer-input").value = message.content;
  $("composer-input").focus();
}

function stopEdit() {
  editingId = "";
  $("editing").hidden = true;
  $("composer-input").value = "";
}

$("cancel-edit").addEventListener("click", stopEdit);

async function remove(message) {
  try { await client.remove(message.message_id); } catch (err) { alertLater(err.message); }
}

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("composer-input");
  const text = input.value;
  if (drafts.some((d) => d.state === "uploading")) { alertLater("Wait for the upload to finish"); return; }
  const attachments = drafts.filter((d) => d.state === "ready").map((d) => d.attachment);
  if ((!text.trim() && !attachments.length) || !openId) return;
  client.typingFrame(openId, false);
  if (editingId) {
    const id = editingId;
    stopEdit();
    try { await client.edit(id, text); } catch (err) { alertLater(err.message); }
    return;
  }
  input.value = "";
  drafts = [];
  renderDrafts();
  const { done } = client.send(openId, text.trim() ? text : "", attachments);
  renderMessages({ toBottom: true });
  done.catch(() => renderMessages());
});

// attachments: uploads with progress, voice recording --------------------------------------------

function renderDrafts() {
  const list = $("uploads");
  list.hidden = drafts.length === 0;
  list.replaceChildren(...drafts.map((d) => el("li", { class: "upload", dataset: { state: d.state } },
    el("span", { class: "name" }, d.name),
    d.state === "uploading"
      ? el("progress", { max: String(d.total || 1), value: String(d.loaded), "aria-label": `Uploading ${d.name}` })
      : el("span", { class: "state" }, d.state === "ready" ? `✓ ${formatSize(d.attachment.size_bytes)}` : `⚠ ${d.error}`),
    el("button", { type: "button", "aria-label": `Remove ${d.name}`, onclick: () => { drafts = drafts.filter((x) => x !== d); renderDrafts(); } }, "×"))));
}

// Upload one file into the open conversation, its progress shown in the composer; the ready upload.
async function startUpload(file, name) {
  const cid = openId;
  const draft = { key: crypto.randomUUID(), name: name || file.name || "file", state: "uploading", loaded: 0, total: file.size };
  drafts.push(draft);
  renderDrafts();
  try {
    draft.attachment = await uploadFile(client, cid, file, {
      filename: draft.name, onProgress: (loaded, total) => { draft.loaded = loaded; draft.total = total; renderDrafts(); } });
    draft.state = "ready";
  } catch (err) {
    draft.state = "failed";
    draft.error = err.message;
  }
  renderDrafts();
  return draft;
}

$("attach-input").addEventListener("change", (e) => {
  if (!openId) return;
  for (const file of e.target.files) startUpload(file);
  e.target.value = "";
});

$("record").addEventListener("click", async () => {
  const button = $("record");
  if (!recorder) {
    recorder = new VoiceRecorder();
    try {
      await recorder.start();
    } catch (err) {
      recorder = null;
      alertLater(`The microphone is not available: ${err.message}`);
      return;
    }
    button.setAttribute("aria-pressed", "true");
    button.textContent = "⏹ Stop";
    return;
  }
  const current = recorder;
  recorder = null;
  button.setAttribute("aria-pressed", "false");
  button.textContent = "🎤 Record";
  const blob = await current.stop();
  const extension = blob.type.includes("ogg") ? "ogg" : blob.type.includes("mp4") ? "m4a" : "webm";
  const cid = openId;
  const draft = await startUpload(blob, `voice-${new Date().toISOString().slice(11, 19).replaceAll(":", "")}.${extension}`);
  if (draft.state !== "ready") return;
  drafts = drafts.filter((d) => d !== draft); // a voice message goes on its own, as soon as it is up
  renderDrafts();
  const { done } = client.send(cid, "", [draft.attachment]);
  renderMessages({ toBottom: true });
  done.catch(() => renderMessages());
});

$("record").hidden = !VoiceRecorder.supported();

$("composer-input").addEventListener("input", () => {
  if (!openId || !client || editingId) return;
  client.typingFrame(openId, $("composer-input").value.length > 0);
});

$("composer-input").addEventListener("keydown", (e) => {
  if (e.key === "Escape" && editingId) stopEdit();
});

// typing ------------------------------------------------------------------------------------------

function onTyping(e) {
  const { conversation_id: cid, user_id: user, is_typing: isTyping } = e.detail;
  const key = `${cid} ${user}`;
  clearTimeout(typingTimers.get(key));
  if (isTyping) {
    typingTimers.set(key, setTimeout(() => {
      client.typing.get(cid)?.delete(user);
      renderTyping();
    }, TYPING_SAFETY_MS));
  }
  if (cid === openId) renderTyping();
}

function renderTyping() {
  const node = $("typing");
  const users = [...(client?.typing.get(openId) || [])].filter((u) => u !== client.userId);
  node.hidden = users.length === 0;
  node.textContent = users.length ? `${users.join(", ")} ${users.length === 1 ? "is" : "are"} typing…` : "";
}

// start -------------------------------------------------------------------------------------------

const initial = tokenFromHost();
if (initial) signIn(initial); else showSignIn("");
