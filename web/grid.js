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

// `token` and `authorization()` come from token.js, `whep` from whep.js.

async function cameraIds() {
  const wanted = (params.get("cameras") || "").split(",").filter(Boolean);
  if (wanted.length) return wanted;
  const res = await fetch("/api/cameras", { headers: authorization() });
  if (!res.ok) throw new Error(`camera list: HTTP ${res.status}`);
  return (await res.json()).slice(0, TILES).map((c) => c.id);
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
  video.requestVideoFrameCallback(() => setState("live"));
  let session;
  try {
    // 503/429 + Retry-After: the worker or the quota is full; the error says when to try again.
    session = await whep.play(`/whep/${encodeURIComponent(cameraId)}?profile=${encodeURIComponent(profile)}`, {
      headers: authorization(),
      onTrack: (stream) => { video.srcObject = stream; },
    });
  } catch (err) {
    tile.error = err.message;
    setState("error");
    return;
  }
  tile.sessionUrl = session.url;
  setInterval(async () => {
    (await session.pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        Object.assign(tile, { framesDecoded: s.framesDecoded || 0, width: s.frameWidth || 0, height: s.frameHeight || 0 });
      }
    });
  }, 500);
  window.addEventListener("pagehide", () => session.close());
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
