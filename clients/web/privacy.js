// Private presence on the page: direct conversation requests (Accept / Decline / Block) and the
// "Hide my last seen" setting. app.js owns the page's state and passes in what these need.

// A direct conversation someone else opened and this user has not answered.
export function isRequestToMe(conversation, me) {
  return conversation.request_state === "pending" && conversation.created_by !== me;
}

// What the open conversation's request bar shows: a request to this user offers Accept / Decline /
// Block (a reply accepts too); a blocked conversation says so and takes no more messages.
export function requestBar(conversation, me, title) {
  const live = Boolean(conversation && conversation.active);
  const request = live && isRequestToMe(conversation, me);
  const blocked = live && conversation.request_state === "blocked";
  return {
    shown: request || blocked,
    buttons: request,
    composerHidden: blocked,
    text: blocked ? "Blocked: nobody can write in this conversation any more."
      : request ? `${title} wants to chat with you. They see your presence once you accept or reply.` : "",
  };
}

// The checkbox follows the server's setting: read at sign-in, saved on change (put back on failure).
export function bindHideLastSeen(checkbox, getClient, onError) {
  checkbox.addEventListener("change", async () => {
    const client = getClient();
    if (!client) return;
    try {
      checkbox.checked = Boolean((await client.updateSettings({ hide_last_seen: checkbox.checked })).hide_last_seen);
    } catch (err) {
      checkbox.checked = !checkbox.checked;
      onError(`Could not change the setting: ${err.message}`);
    }
  });
}

export async function loadHideLastSeen(checkbox, client) {
  try {
    checkbox.checked = Boolean((await client.settings()).hide_last_seen);
  } catch {
    // the checkbox keeps its last state; the next change saves it
  }
}
