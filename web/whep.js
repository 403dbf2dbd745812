// A small WHEP client (draft-ietf-wish-whep), shared by every page: one recvonly video session per call.
//
//   const session = await whep.play(url, { headers, onTrack, onState });
//   session.pc          // the RTCPeerConnection (getStats, connectionState)
//   session.url         // the session's resource (Location), for PATCH/DELETE
//   session.close()     // DELETE the resource (keepalive, so it survives page unload) and close the peer
//
// The offer is sent once ICE gathering completes (no STUN servers: milliseconds), so no trickle PATCH is needed.
// A refusal throws `WhepError` with the HTTP status, the server's JSON error/detail and Retry-After (503, 429).
"use strict";

class WhepError extends Error {
  constructor(status, detail, retryAfter) {
    super(`HTTP ${status}${detail ? " " + detail : ""}${retryAfter ? ` (retry in ${retryAfter} s)` : ""}`);
    Object.assign(this, { status, detail, retryAfter });
  }
}

const whep = {
  gatheringTimeoutMs: 2000,

  gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
      setTimeout(resolve, ms);
    });
  },

  async refusal(res) {
    let detail = await res.text();
    try { const j = JSON.parse(detail); detail = `${j.error}${j.detail ? ": " + j.detail : ""}`; } catch (_) {}
    return new WhepError(res.status, detail, res.headers.get("Retry-After"));
  },

  async play(url, { headers = {}, onTrack = () => {}, onState = () => {} } = {}) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (ev) => onTrack(ev.streams[0] || new MediaStream([ev.track]), ev);
    pc.onconnectionstatechange = () => onState(pc.connectionState, pc);
    const session = {
      pc, url: null, closed: false,
      close() {
        if (session.closed) return;
        session.closed = true;
        pc.close();
        if (session.url) fetch(session.url, { method: "DELETE", headers, keepalive: true }).catch(() => {});
      },
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await whep.gathered(pc, whep.gatheringTimeoutMs);
      const res = await fetch(url, {
        method: "POST", headers: { "Content-Type": "application/sdp", ...headers }, body: pc.localDescription.sdp,
      });
      if (res.status !== 201) throw await whep.refusal(res);
      session.url = new URL(res.headers.get("Location"), location.href).href;
      await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
    } catch (err) {
      session.close();
      throw err;
    }
    return session;
  },
};
