// One-to-one audio calls between two pages: WebRTC in the browsers, signaling through the mesh.
//
// The edge relays only signaling (call:invite with the SDP offer, call:answer with the answer,
// call:ice candidates, call:hangup) and tells each party what happened (call:incoming, call:accepted,
// call:candidate, call:ended). The audio goes peer to peer, or through a TURN server from
// GET /api/calls/config. A call rings for the server's ringing timeout, a callee already in a call
// answers busy, and the edge hangs up a call whose page closed. This module owns a small call bar
// in the conversation pane: a Call button for the open direct conversation, then the call's state
// (`#call[data-state]`: idle, calling, ringing, connecting, connected, ended) and its buttons.

const ICE_FIELDS = ["candidate", "sdp_mid", "sdp_mline_index", "username_fragment"];

export class CallPanel {
  // client: the ChatClient; openConversation(): the open conversation or null; el: the page's element maker.
  constructor(client, { openConversation, el, alert }) {
    this.client = client;
    this.openConversation = openConversation;
    this.alert = alert;
    this.config = null;
    this.reset();
    this.status = el("span", { id: "call-status", class: "call-status", role: "status", "aria-live": "polite" });
    this.startButton = el("button", { type: "button", id: "call-start", onclick: () => this.start() }, "📞 Call");
    this.answerButton = el("button", { type: "button", id: "call-answer", onclick: () => this.answer() }, "Answer");
    this.hangUpButton = el("button", { type: "button", id: "call-hangup", onclick: () => this.hangUp() }, "Hang up");
    this.audio = el("audio", { id: "call-audio", autoplay: true });
    this.node = el("div", { id: "call", class: "call", role: "region", "aria-label": "Call", dataset: { state: "idle" } },
      this.status, this.startButton, this.answerButton, this.hangUpButton, this.audio);
    document.getElementById("pane-title").after(this.node);
    this.onFrame = (e) => this.onEvent(e.detail).catch((err) => this.fail(err));
    client.addEventListener("call", this.onFrame);
    this.render();
  }

  reset() {
    this.call = null; // the call this page takes part in: { call_id, caller_id, callee_id, state, ... }
    this.role = ""; // caller | callee
    this.offer = ""; // an incoming call's offer, until answered
    this.pc = null;
    this.working = false; // placing or answering: a second click waits for the first
    this.stream = null;
    this.remoteSet = false;
    this.remoteCandidates = []; // candidates that came before the remote description
    this.localCandidates = []; // the caller's, gathered before the server named the call
    this.note = "";
  }

  close() {
    this.client.removeEventListener("call", this.onFrame);
    this.cleanup();
    this.node.remove();
  }

  // Sign-in and conversation changes: show the Call button where a call can be placed.
  render() {
    const conversation = this.openConversation();
    const pcState = this.pc ? this.pc.connectionState : "";
    let state = "idle";
    if (this.call) {
      if (this.call.state === "ringing") state = this.role === "caller" ? "calling" : "ringing";
      else state = pcState === "connected" ? "connected" : "connecting";
    } else if (this.note) {
      state = "ended";
    }
    this.node.dataset.state = state;
    this.node.dataset.connection = pcState;
    const other = this.call ? (this.role === "caller" ? this.call.callee_id : this.call.caller_id) : "";
    this.status.textContent = {
      idle: "", ended: this.note, calling: `Calling ${other}…`, ringing: `${other} is calling`,
      connecting: `Connecting to ${other}…`, connected: `In a call with ${other}`,
    }[state];
    const callable = conversation && conversation.active && conversation.type === "direct"
      && conversation.request_state !== "blocked";
    this.startButton.hidden = Boolean(this.call) || !callable;
    this.answerButton.hidden = state !== "ringing";
    this.hangUpButton.hidden = !this.call;
    this.hangUpButton.textContent = state === "ringing" ? "Decline" : "Hang up";
    this.node.hidden = state === "idle" && !callable;
  }

  async loadConfig() {
    if (!this.config) this.config = await this.client.api("GET", "/api/calls/config");
    return this.config;
  }

  async peer() {
    const config = await this.loadConfig();
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    const pc = new RTCPeerConnection({ iceServers: config.ice_servers.map((s) => ({ urls: s.urls, username: s.username || undefined, credential: s.credential || undefined })) });
    this.pc = pc;
    for (const track of this.stream.getTracks()) pc.addTrack(track, this.stream);
    pc.ontrack = (e) => { this.audio.srcObject = e.streams[0]; };
    pc.onicecandidate = (e) => { if (e.candidate) this.sendCandidate(e.candidate.toJSON()); };
    pc.onconnectionstatechange = () => {
      this.render();
      if (pc === this.pc && pc.connectionState === "failed") this.hangUp("The connection failed");
    };
    return pc;
  }

  sendCandidate(candidate) {
    if (!this.call) { this.localCandidates.push(candidate); return; }
    this.client.socket.request("call:ice", { call_id: this.call.call_id, candidate }).catch(() => {});
  }

  async start() {
    const conversation = this.openConversation();
    if (!conversation || this.call || this.pc || this.working) return;
    this.note = "";
    this.working = true;
    try {
      const pc = await this.peer();
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      this.role = "caller";
      const reply = await this.client.socket.request("call:invite", { conversation_id: conversation.conversation_id, sdp: offer.sdp });
      if (reply.call.state === "ended") { this.end(reply.call); return; } // busy
      this.call = reply.call;
      for (const candidate of this.localCandidates.splice(0)) this.sendCandidate(candidate);
    } catch (err) {
      this.fail(err);
    } finally {
      this.working = false;
    }
    this.render();
  }

  async answer() {
    if (!this.call || this.role !== "callee" || this.pc || this.working) return;
    this.working = true;
    try {
      const pc = await this.peer();
      await pc.setRemoteDescription({ type: "offer", sdp: this.offer });
      await this.remoteReady();
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      const reply = await this.client.socket.request("call:answer", { call_id: this.call.call_id, sdp: answer.sdp });
      this.call = reply.call;
    } catch (err) {
      this.fail(err);
    } finally {
      this.working = false;
    }
    this.render();
  }

  async hangUp(note = "") {
    const call = this.call;
    if (!call) return;
    this.end({ ...call, state: "ended", end_reason: this.role === "callee" && call.state === "ringing" ? "declined" : "hangup" }, note);
    try { await this.client.socket.request("call:hangup", { call_id: call.call_id }); } catch { /* the edge hangs up a closed page's calls */ }
  }

  async remoteReady() {
    this.remoteSet = true;
    for (const candidate of this.remoteCandidates.splice(0)) await this.pc.addIceCandidate(candidate);
  }

  async onEvent(frame) {
    const { call, sdp, candidate } = frame.data || {};
    if (!call) return;
    const mine = this.call && this.call.call_id === call.call_id;
    if (frame.type === "call:incoming") {
      if (this.call || this.pc) return; // this page is busy with another call (the server rings all devices)
      this.note = "";
      this.call = call; this.role = "callee"; this.offer = sdp;
    } else if (!mine) {
      return;
    } else if (frame.type === "call:accepted") {
      if (this.role === "caller" && sdp && !this.remoteSet) {
        await this.pc.setRemoteDescription({ type: "answer", sdp });
        await this.remoteReady();
      } else if (this.role === "callee" && !this.pc) {
        this.end(call, "Answered on another device");
        return;
      }
      this.call = { ...this.call, ...call };
    } else if (frame.type === "call:candidate") {
      const init = Object.fromEntries(ICE_FIELDS.map((f) => [f, candidate?.[f]]));
      const ice = { candidate: init.candidate || "", sdpMid: init.sdp_mid || null, sdpMLineIndex: init.sdp_mline_index ?? null, usernameFragment: init.username_fragment || null };
      if (this.remoteSet) await this.pc.addIceCandidate(ice); else this.remoteCandidates.push(ice);
    } else if (frame.type === "call:ended") {
      this.end(call);
      return;
    }
    this.render();
  }

  end(call, note = "") {
    const reason = call.end_reason || "hangup";
    this.cleanup();
    this.note = note || { busy: "Busy", timeout: "No answer", declined: "Declined", hangup: "Call ended" }[reason] || "Call ended";
    this.render();
  }

  cleanup() {
    if (this.pc) this.pc.close();
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.audio.srcObject = null;
    const config = this.config;
    this.reset();
    this.config = config;
  }

  fail(err) {
    const call = this.call;
    this.cleanup();
    this.note = `Call failed: ${err.message || err}`;
    this.alert(this.note);
    this.render();
    if (call) this.client.socket.request("call:hangup", { call_id: call.call_id }).catch(() => {});
  }
}
