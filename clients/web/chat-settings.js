// Conversation settings on the page: the open conversation's settings bar (pin and mute for anyone;
// rename, describe, archive and leave for a group's admins, leave for everyone in a group), the
// composer turned off while a conversation is archived, and the list's order (pinned first) and marks.
// app.js calls installSettings once and renderSettings whenever the open conversation may have changed.

import { normalizeConversation } from "./chat-wire.js";
import { el } from "./dom.js";

const PIN = "📌", MUTE = "🔕", ARCHIVE = "🗄";

// The list's order: pinned conversations first, then the most recent activity (the server's order too).
export function byListOrder(a, b) {
  return (Number(Boolean(b.pinned)) - Number(Boolean(a.pinned)))
    || (b.last_message_at || "").localeCompare(a.last_message_at || "");
}

// Marks after a conversation's title in the list, and the words a screen reader says for them.
export function listMarks(c) {
  const marks = [[c.pinned, PIN, "pinned"], [c.muted, MUTE, "muted"], [c.archived, ARCHIVE, "archived"]].filter(([on]) => on);
  return { text: marks.map(([, mark]) => mark).join(""), words: marks.map(([, , word]) => word).join(", ") };
}

let ui = null; // the bar's nodes and what it needs from app.js
const fetched = new Set(); // groups whose participants (and so roles) were asked for once

// getClient(), getOpenId(): the page's current client and open conversation; onError(text): a notice.
export function installSettings({ getClient, getOpenId, onError }) {
  const call = async (what, method, suffix, body) => {
    const client = getClient(), cid = getOpenId();
    if (!client || !cid) return null;
    try {
      const reply = await client.api(method, `/api/conversations/${encodeURIComponent(cid)}${suffix}`, body);
      const conversation = client.putConversation(normalizeConversation(reply.conversation));
      if (suffix === "/leave") conversation.active = false; // no longer the caller's: the pane closes
      client.dispatchEvent(new CustomEvent("conversations", { detail: {} }));
      return conversation;
    } catch (err) {
      if (err.code === "LAST_ADMIN") { ui.lastAdmin.hidden = false; return null; }
      onError(`Could not ${what}: ${err.message}`);
      return null;
    }
  };
  const current = () => getClient()?.conversations.get(getOpenId());
  const title = el("input", { id: "settings-title", maxlength: "200", required: true });
  const description = el("textarea", { id: "settings-description", maxlength: "1000", rows: "2" });
  const form = el("form", { class: "settings-form", hidden: true, onsubmit: async (e) => {
    e.preventDefault();
    if (await call("save", "PATCH", "", { title: title.value, description: description.value })) form.hidden = true;
  } },
  el("label", { for: "settings-title" }, "Group name"), title,
  el("label", { for: "settings-description" }, "Description"), description,
  el("div", { class: "row" }, el("button", { type: "submit" }, "Save"),
    el("button", { type: "button", onclick: () => { form.hidden = true; } }, "Cancel")));
  const toggle = (label, key) => el("button", { type: "button", "aria-pressed": "false",
    onclick: () => call(label.toLowerCase(), "PATCH", "/preferences", { [key]: !current()?.[key] }) }, label);
  ui = {
    description: el("p", { class: "settings-description" }),
    pin: toggle("Pin", "pinned"), mute: toggle("Mute", "muted"),
    edit: el("button", { type: "button", onclick: () => {
      const c = current();
      if (!c) return;
      title.value = c.title; description.value = c.description || ""; form.hidden = false; title.focus();
    } }, "Edit name"),
    archive: el("button", { type: "button", "aria-pressed": "false",
      onclick: () => call("archive", "POST", current()?.archived ? "/unarchive" : "/archive", {}) }, "Archive"),
    leave: el("button", { type: "button", onclick: () => call("leave", "POST", "/leave", {}) }, "Leave"),
    lastAdmin: el("p", { class: "settings-last-admin", role: "alert", hidden: true },
      "You are the last admin: make someone else admin first, or close the group for everyone. ",
      el("button", { type: "button", onclick: async () => {
        if (await call("close the group", "POST", "/leave", { close_group: true })) ui.lastAdmin.hidden = true;
      } }, "Close the group")),
    notice: el("p", { id: "archived-notice", class: "archived-notice", role: "status", hidden: true },
      "This conversation is archived: it is read-only."),
    form, getClient,
  };
  ui.bar = el("div", { id: "settings", class: "settings", role: "region", "aria-label": "Conversation settings", hidden: true },
    ui.description, el("div", { class: "row" }, ui.pin, ui.mute, ui.edit, ui.archive, ui.leave), ui.form, ui.lastAdmin);
  document.getElementById("pane-title").after(ui.bar);
  document.getElementById("composer").before(ui.notice);
}

// The bar and the composer for the open conversation (null: none open).
export function renderSettings(conversation, me) {
  if (!ui) return;
  const open = Boolean(conversation && conversation.active);
  ui.bar.hidden = !open;
  const archived = open && Boolean(conversation.archived);
  for (const id of ["composer-input", "send", "attach-input", "record"]) {
    const node = document.getElementById(id);
    if (node) node.disabled = archived;
  }
  document.getElementById("composer").classList.toggle("archived", archived);
  ui.notice.hidden = !archived;
  if (!open) { ui.form.hidden = true; ui.lastAdmin.hidden = true; return; }
  const group = conversation.type === "group";
  if (group) document.getElementById("pane-title").textContent = conversation.title || "Group"; // renamed live
  if (group && !conversation.participants.length && !fetched.has(conversation.conversation_id)) {
    fetched.add(conversation.conversation_id); // list pages carry a group's count, not its roles
    ui.getClient()?.loadConversation(conversation.conversation_id).catch(() => fetched.delete(conversation.conversation_id));
  }
  const admin = group && conversation.participants.some((p) => p.user_id === me && p.role === "admin");
  ui.description.textContent = conversation.description || "";
  ui.description.hidden = !conversation.description;
  ui.pin.setAttribute("aria-pressed", String(Boolean(conversation.pinned)));
  ui.pin.textContent = conversation.pinned ? `${PIN} Unpin` : `${PIN} Pin`;
  ui.mute.setAttribute("aria-pressed", String(Boolean(conversation.muted)));
  ui.mute.textContent = conversation.muted ? `${MUTE} Unmute` : `${MUTE} Mute`;
  ui.edit.hidden = !admin;
  ui.archive.hidden = !admin;
  ui.archive.setAttribute("aria-pressed", String(archived));
  ui.archive.textContent = archived ? "Unarchive" : "Archive";
  ui.leave.hidden = !group;
  if (!admin) ui.form.hidden = true;
}
