// Goldentime console: camera list from /api/cameras, live view over WHEP (POST offer, DELETE to stop).
// Plain browser JS. `window.goldentime` exposes the playback figures (tests and operators' tools read it).
"use strict";

const $ = (id) => document.getElementById(id);
const state = (window.goldentime = {
  camera: null, state: "idle", error: null, sessionUrl: null, firstPictureMs: null, lastFrameMs: null, endedMs: null,
  width: 0, height: 0, framesDecoded: 0, fps: 0, freezeCount: 0, packetsLost: 0, kbps: 0, codec: null,
});
let session = null, statsTimer = null, cameras = [], run = 0;

// `token` and `authorization()` come from token.js, `whep` from whep.js.

function setState(name, text) {
  state.state = name;
  const badge = $("state");
  badge.className = "badge " + name;
  badge.textContent = text || name;
}

function show(id, text) { $(id).textContent = text; }

async function loadCameras() {
  try {
    const res = await fetch("/api/cameras", { headers: authorization() });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    cameras = await res.json();
    renderList();
  } catch (err) {
    const box = $("list-error");
    box.hidden = false;
    box.textContent = `Camera list unavailable: ${err.message}`;
  }
}

function renderList() {
  const q = $("filter").value.trim().toLowerCase();
  const list = $("cameras");
  list.replaceChildren();
  const shown = cameras.filter((c) => !q || [c.id, c.name, c.district].some((v) => v && String(v).toLowerCase().includes(q)));
  for (const cam of shown) {
    const li = document.createElement("li");
    li.dataset.camera = cam.id;
    li.className = cam.id === state.camera ? "active" : "";
    const left = document.createElement("div");
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = cam.name || cam.id;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = [cam.id, cam.district].filter(Boolean).join(" · ");
    left.append(name, meta);
    const codec = document.createElement("div");
    codec.className = "meta mono";
    codec.textContent = (cam.codec || "").toUpperCase();
    li.append(left, codec);
    li.addEventListener("click", () => play(cam.id));
    list.append(li);
  }
  show("count", `${shown.length}/${cameras.length}`);
}

async function play(cameraId) {
  await stop();
  const my = ++run;
  const cam = cameras.find((c) => c.id === cameraId) || { id: cameraId };
  Object.assign(state, { camera: cameraId, error: null, firstPictureMs: null, lastFrameMs: null, endedMs: null, framesDecoded: 0, fps: 0, freezeCount: 0 });
  show("title", cam.name || cam.id);
  show("subtitle", [cam.id, cam.district].filter(Boolean).join(" · "));
  show("overlay", "Connecting…");
  $("overlay").hidden = false;
  $("stop").disabled = false;
  renderList();
  setState("connecting");

  const t0 = performance.now();
  const video = $("video");
  const mine = () => my === run;
  const everyFrame = () => {
    if (!mine()) return;
    state.lastFrameMs = Math.round(performance.now());
    video.requestVideoFrameCallback(everyFrame);
  };
  video.requestVideoFrameCallback(() => {
    if (!mine()) return;
    everyFrame();
    state.firstPictureMs = Math.round(performance.now() - t0);
    show("s-first", `${state.firstPictureMs} ms`);
    $("overlay").hidden = true;
    setState("live", "live");
  });
  // profile: "main" (the camera as it is; H.265 transcoded to H.264) or "low" (640x360, 400 kbit/s)
  const url = `/whep/${encodeURIComponent(cameraId)}?profile=${encodeURIComponent($("profile").value)}`;
  try {
    const opened = await whep.play(url, {
      headers: authorization(),
      onTrack: (stream) => { if (mine()) video.srcObject = stream; },
      onState: (connection) => {
        if (!mine()) return;
        if (connection === "failed") fail("connection failed");
        if (connection === "closed" || connection === "disconnected") {
          state.endedMs = Math.round(performance.now());  // the server ended the view (incident closed, revoked)
          setState("ended", "ended");
        }
      },
    });
    if (!mine()) return opened.close();
    session = opened;
    state.sessionUrl = opened.url;
    statsTimer = setInterval(() => updateStats(opened.pc), 1000);
  } catch (err) {
    if (mine()) fail(err.message);
  }
}

function fail(message) {
  state.error = message;
  setState("error", "error");
  show("overlay", message);
  $("overlay").hidden = false;
}

let last = null;
async function updateStats(peer) {
  if (!session || peer !== session.pc) return;
  const report = await peer.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      const now = s.timestamp;
      if (last) {
        const dt = (now - last.timestamp) / 1000;
        state.fps = dt > 0 ? Math.round(((s.framesDecoded - last.framesDecoded) / dt) * 10) / 10 : 0;
        state.kbps = dt > 0 ? Math.round(((s.bytesReceived - last.bytesReceived) * 8) / dt / 1000) : 0;
      }
      last = { timestamp: now, framesDecoded: s.framesDecoded || 0, bytesReceived: s.bytesReceived || 0 };
      Object.assign(state, {
        framesDecoded: s.framesDecoded || 0, freezeCount: s.freezeCount || 0, packetsLost: s.packetsLost || 0,
        width: s.frameWidth || 0, height: s.frameHeight || 0,
      });
      const codec = report.get(s.codecId);
      const profile = codec && /profile-level-id=([0-9a-f]{6})/i.exec(codec.sdpFmtpLine || "");
      state.codec = codec ? `${codec.mimeType.split("/")[1]}${profile ? " " + profile[1] : ""}` : null;
    }
  });
  show("s-res", state.width ? `${state.width}×${state.height}` : "—");
  show("s-frames", String(state.framesDecoded));
  show("s-fps", `${state.fps} fps`);
  show("s-freezes", String(state.freezeCount));
  show("s-lost", String(state.packetsLost));
  show("s-rate", `${state.kbps} kbit/s`);
  show("s-codec", state.codec || "—");
}

async function stop() {
  run++;
  clearInterval(statsTimer);
  last = null;
  state.sessionUrl = null;
  if (session) { session.close(); session = null; }
  $("video").srcObject = null;
  $("stop").disabled = true;
  show("overlay", "Stopped");
  $("overlay").hidden = false;
  for (const id of ["s-first", "s-res", "s-frames", "s-fps", "s-freezes", "s-lost", "s-rate", "s-codec"]) show(id, "—");
  setState("idle");
}

$("stop").addEventListener("click", () => { state.camera = null; stop().then(renderList); });
$("filter").addEventListener("input", renderList);
$("profile").addEventListener("change", () => { if (state.camera) play(state.camera); });
setInterval(() => show("clock", new Date().toLocaleTimeString()), 1000);
loadCameras().then(() => {
  const wanted = new URLSearchParams(location.search).get("camera");
  if (wanted) play(wanted);
});
