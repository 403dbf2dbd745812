// Goldentime grid: a 3x3 wall of live cameras, each its own WHEP session, low-resolution by default.
//   /web/grid.html?cameras=cam1,cam2,cam3&profile=low#token=...
// `cameras` (repeated to fill the nine tiles) defaults to the nine nearest the token's incident;
// `profile` defaults to `low` (<= 640x360, ~400 kbit/s: nine of them fit a patrol car's LTE link).
// `window.goldentimeGrid.tiles` exposes each tile's playback figures (tests and operators' tools read it).
"use strict";

const TILES = 9;
const params = new URLSearchParams(location.search);
const profile = params.get("profile") || "low";
const grid = (window.goldentimeGrid = { profile, tiles: [] });

// `token` and `authorization()` come from token.js.

async function cameraIds() {
  const wanted = (params.get("cameras") || "").split(",").filter(Boolean);
  if (wanted.length) return wanted;
  const res = await fetch("/api/cameras", { headers: authorization() });
  if (!res.ok) throw new Error(`camera list: HTTP ${res.status}`);
  return (await res.json()).slice(0, TILES).map((c) => c.id);
}

function gathered(peer, ms) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    peer.addEventListener("icegatheringstatechange", () => { if (peer.iceGatheringState === "complete") resolve(); });
    setTimeout(resolve, ms);
  });
}

function makeTile(cameraId) {
  const el = document.createElement("div");
  el.className = "tile";
  el.dataset.camera = cameraId;
  const video = Object.assign(document.createElement("video"), { autoplay: true, muted: true, playsInline: true });
  const label = Object.assign(document.createElement("div"), { className: "label mono", textContent: cameraId });
  const badge = Object.assign(document.createElement("span"), { className: "badge connecting", textContent: "connecting" });
  el.append(video, label, badge);
  document.getElementById("grid").append(el);
  const tile = { camera: cameraId, state: "connecting", error: null, framesDecoded: 0, width: 0, height: 0, sessionUrl: null };
  const setState = (name) => { tile.state = name; badge.className = `badge ${name}`; badge.textContent = name; };
  return { tile, video, setState };
}

async function openTile(cameraId) {
  const { tile, video, setState } = makeTile(cameraId);
  grid.tiles.push(tile);
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (ev) => { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  video.requestVideoFrameCallback(() => setState("live"));
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    const url = `/whep/${encodeURIComponent(cameraId)}?profile=${encodeURIComponent(profile)}`;
    const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/sdp", ...authorization() }, body: pc.localDescription.sdp });
    if (res.status !== 201) {
      // 503 + Retry-After: the worker is full; try again later rather than hammering it.
      const retry = res.headers.get("Retry-After");
      throw new Error(`HTTP ${res.status}${retry ? ` (retry in ${retry} s)` : ""}: ${await res.text()}`);
    }
    tile.sessionUrl = new URL(res.headers.get("Location"), location.href).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  } catch (err) {
    tile.error = err.message;
    setState("error");
    return;
  }
  setInterval(async () => {
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        Object.assign(tile, { framesDecoded: s.framesDecoded || 0, width: s.frameWidth || 0, height: s.frameHeight || 0 });
      }
    });
  }, 500);
  window.addEventListener("pagehide", () => {
    pc.close();
    fetch(tile.sessionUrl, { method: "DELETE", headers: authorization(), keepalive: true });
  });
}

document.getElementById("profile-name").textContent = `profile ${profile}`;
setInterval(() => { document.getElementById("clock").textContent = new Date().toLocaleTimeString(); }, 1000);
cameraIds()
  .then((ids) => {
    if (!ids.length) throw new Error("no cameras in this incident's scope");
    for (let i = 0; i < TILES; i++) openTile(ids[i % ids.length]);
  })
  .catch((err) => {
    const box = document.getElementById("grid-error");
    box.hidden = false;
    box.textContent = err.message;
    grid.error = err.message;
  });
