// Attachments in the page: upload with progress, fresh download links, how each kind is shown, and
// voice recording with MediaRecorder.
//
// An upload is three steps whichever backend the mesh runs: create (the edge says where the bytes
// go), send them there with XMLHttpRequest (fetch reports no upload progress), complete (the server
// checks the bytes and says what it found). The bytes go without the bearer token: the link is the
// authority, and object storage must never see the token. Links expire, so they are asked for
// when shown and cached until shortly before they do.

const LINK_MARGIN_MS = 15_000;
const links = new Map(); // attachment id -> { attachment, expires } (fresh links)

export function formatDuration(ms) {
  const seconds = Math.round(Number(ms || 0) / 1000);
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

export function formatSize(bytes) {
  const n = Number(bytes || 0);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function put(url, method, headers, body, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method || "PUT", url);
    for (const [name, value] of Object.entries(headers || {})) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      if (xhr.status < 400) return resolve();
      let error = {};
      try { error = JSON.parse(xhr.responseText).error || {}; } catch { error = {}; }
      reject(Object.assign(new Error(error.message || `upload failed (${xhr.status})`), { code: error.code || "HTTP_ERROR", status: xhr.status }));
    };
    xhr.onerror = () => reject(Object.assign(new Error("the upload was interrupted"), { code: "UNAVAILABLE", status: 0 }));
    xhr.send(body);
  });
}

// Upload a File or Blob into a conversation; onProgress(loaded, total) as the bytes go.
export async function uploadFile(client, cid, file, { filename = "", onProgress } = {}) {
  const target = await client.api("POST", "/api/attachments", {
    conversation_id: cid, filename: filename || file.name || "file", size_bytes: String(file.size),
    content_type: file.type || "",
  });
  const url = new URL(target.upload_url, client.baseUrl + "/").toString();
  await put(url, target.upload_method, target.upload_headers, file, onProgress);
  const done = await client.api("POST", `/api/attachments/${encodeURIComponent(target.attachment.attachment_id)}:complete`, {});
  return done.attachment;
}

// The attachment with fresh links (cached until shortly before they expire).
export async function withLinks(client, attachmentId) {
  const cached = links.get(attachmentId);
  if (cached && cached.expires - LINK_MARGIN_MS > Date.now()) return cached.attachment;
  const { attachment } = await client.api("GET", `/api/attachments/${encodeURIComponent(attachmentId)}`);
  const absolute = (u) => (u ? new URL(u, client.baseUrl + "/").toString() : "");
  attachment.download_url = absolute(attachment.download_url);
  attachment.thumbnail_url = absolute(attachment.thumbnail_url);
  links.set(attachmentId, { attachment, expires: Date.parse(attachment.urls_expire_at) || Date.now() });
  return attachment;
}

export function kindOf(attachment) {
  const type = attachment.content_type || "";
  if (type.startsWith("image/") && attachment.has_thumbnail) return "image";
  if (type.startsWith("audio/")) return "voice";
  return "file";
}

// The DOM of one attachment: an image's thumbnail (the full size on click), a player for audio with
// the length the server read from the container, a download link for anything else. `el` is the
// page's element helper. Links are filled in once fetched.
export function renderAttachment(client, attachment, el) {
  const kind = kindOf(attachment);
  const id = attachment.attachment_id;
  const node = el("div", { class: `attachment ${kind}`, dataset: { attachmentId: id, kind } });
  if (kind === "image") {
    const img = el("img", { alt: attachment.filename, width: String(Math.min(attachment.width, 320)), loading: "lazy" });
    const button = el("button", { type: "button", class: "thumbnail", "aria-label": `Show ${attachment.filename} full size` }, img);
    button.addEventListener("click", async () => {
      const full = await withLinks(client, id);
      img.src = full.download_url;
      img.removeAttribute("width");
      node.classList.add("full");
      button.setAttribute("aria-label", attachment.filename);
    });
    node.append(button);
    withLinks(client, id).then((a) => { if (!img.src) img.src = a.thumbnail_url; }).catch(() => node.classList.add("unavailable"));
  } else if (kind === "voice") {
    const audio = el("audio", { controls: true, preload: "metadata" });
    node.append(el("span", { class: "voice-label" }, "🎤 Voice message"), audio,
      el("span", { class: "duration" }, attachment.duration_ms ? formatDuration(attachment.duration_ms) : ""));
    withLinks(client, id).then((a) => { audio.src = a.download_url; }).catch(() => node.classList.add("unavailable"));
  } else {
    const link = el("a", { download: attachment.filename, class: "file-link" }, `📄 ${attachment.filename}`);
    node.append(link, el("span", { class: "size" }, formatSize(attachment.size_bytes)));
    withLinks(client, id).then((a) => { link.href = a.download_url; }).catch(() => node.classList.add("unavailable"));
  }
  return node;
}

// Voice messages: record from the microphone with MediaRecorder, where the browser allows it.
export class VoiceRecorder {
  static supported() {
    return Boolean(window.MediaRecorder && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const type = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"]
      .find((t) => MediaRecorder.isTypeSupported(t)) || "";
    this.recorder = new MediaRecorder(this.stream, type ? { mimeType: type } : {});
    this.chunks = [];
    this.recorder.ondataavailable = (e) => { if (e.data.size) this.chunks.push(e.data); };
    this.recorder.start(250);
  }

  // The recording as a Blob, once the recorder has flushed it; the microphone is released.
  stop() {
    return new Promise((resolve) => {
      this.recorder.onstop = () => {
        for (const track of this.stream.getTracks()) track.stop();
        resolve(new Blob(this.chunks, { type: this.recorder.mimeType || "audio/webm" }));
      };
      this.recorder.stop();
    });
  }
}
