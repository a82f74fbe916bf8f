// The live board: one tile per extension, the latest completed calls, click-to-call.
// Built on callbridge.js; served at / by callbridge (docs/client.md).
import { connect } from "/callbridge.js";

const $ = (id) => document.getElementById(id);
const COMPLETED_ROWS = 20;
const RECORDED = 10000; // events kept in window.board.events (for inspection and tests)

// Leg state after each event type; null ends the leg.
const LEG_STATE = {
  "call.created": "ringing", "call.answered": "talking", "call.bridged": "talking",
  "call.unheld": "talking", "call.retrieved": "talking", "call.held": "on hold",
  "call.parked": "on hold", "call.ended": null, "call.abandoned": null,
};
const RANK = { talking: 3, "on hold": 2, ringing: 1 };

const legs = new Map(); // extension -> Map(call_id -> {state, since, event})
const tiles = new Map(); // extension -> <li>
const board = { events: [], bridge: null, tenant: null };
window.board = board;

function tile(ext) {
  let li = tiles.get(ext);
  if (li) return li;
  li = document.createElement("li");
  li.className = "tile";
  li.dataset.extension = ext;
  li.setAttribute("aria-label", `extension ${ext}`);
  li.innerHTML = '<div class="ext"></div><div class="state"></div><div class="peer"></div>'
    + '<div class="timer" aria-hidden="true"></div>';
  li.querySelector(".ext").textContent = ext;
  const sorted = [...tiles.keys(), ext].sort();
  tiles.set(ext, li);
  const next = tiles.get(sorted[sorted.indexOf(ext) + 1]);
  $("tiles").insertBefore(li, next || null);
  render(ext);
  return li;
}

function render(ext) {
  const li = tile(ext);
  const top = [...(legs.get(ext) || new Map()).values()]
    .sort((a, b) => RANK[b.state] - RANK[a.state])[0];
  const state = top ? top.state : "idle";
  li.dataset.state = state;
  li.dataset.since = top ? String(top.since) : "";
  li.querySelector(".state").textContent = state;
  const e = top && top.event;
  const peer = e ? (e.direction === "incoming" ? e.caller : e.callee) : null;
  li.querySelector(".peer").textContent = peer && peer.number ? `with ${peer.number}` : "";
  tick(li);
}

function tick(li) {
  const since = Number(li.dataset.since);
  const s = since ? Math.max(0, Math.floor((Date.now() - since) / 1000)) : null;
  li.querySelector(".timer").textContent = s === null ? ""
    : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function onEvent(event, frame) {
  board.events.push({ id: event.id, type: event.type, channel: frame.channel,
    call_id: event.call_id, msg_id: event.upstream && event.upstream.msg_id,
    upstream: event.upstream && event.upstream.name, extension: event.extension,
    at: Date.now() });
  if (board.events.length > RECORDED) board.events.shift();
  if (event.type === "system.notice") {
    $("notices").textContent = `${event.detail.kind}: ${event.detail.message || ""}`;
    return;
  }
  const ext = event.extension;
  if (!ext || !(event.type in LEG_STATE)) return;
  const calls = legs.get(ext) || new Map();
  legs.set(ext, calls);
  const state = LEG_STATE[event.type];
  const prev = calls.get(event.call_id);
  if (state === null) {
    calls.delete(event.call_id);
    completed(event);
  } else {
    const since = prev && prev.state === state ? prev.since : Date.now();
    calls.set(event.call_id, { state, since, event });
  }
  render(ext);
}

function completed(e) {
  const row = document.createElement("tr");
  const d = e.durations || {};
  const cells = [new Date(e.occurred_at).toLocaleTimeString(), e.extension,
    (e.caller && e.caller.number) || "?", (e.callee && e.callee.number) || "?",
    (e.hangup && e.hangup.cause) || "", d.billing != null ? `${d.billing} s` : ""];
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    row.append(td);
  }
  const body = $("completed");
  body.prepend(row);
  while (body.rows.length > COMPLETED_ROWS) body.deleteRow(-1);
}

function setConnection(state) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = state === "open" ? "live" : state;
}

// Websocket token: from the demo endpoint, or pasted by the user (kept in this tab only).
function tokenSource(demo) {
  if (demo) {
    return async () => {
      const r = await fetch("/demo/token", { method: "POST" });
      if (!r.ok) throw new Error(`token endpoint: HTTP ${r.status}`);
      return (await r.json()).token;
    };
  }
  return ({ reason }) => {
    if (reason === "rejected") sessionStorage.removeItem("callbridge.token");
    const saved = sessionStorage.getItem("callbridge.token");
    if (saved) return saved;
    const form = $("token-form");
    form.hidden = false;
    $("token-input").focus();
    return new Promise((resolve) => {
      form.onsubmit = (ev) => {
        ev.preventDefault();
        const value = $("token-input").value.trim();
        sessionStorage.setItem("callbridge.token", value);
        form.hidden = true;
        resolve(value);
      };
    });
  };
}

function setUpDial(config, tenant) {
  if (!config.dial_tenants.includes(tenant)) return;
  $("dial-section").hidden = false;
  if (!config.demo) { $("dial-api-label").hidden = false; $("dial-api-token").hidden = false; }
  $("dial-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("dial-result");
    out.textContent = "dialing…";
    try {
      let token = $("dial-api-token").value.trim();
      if (config.demo) token = (await (await fetch("/demo/api-token", { method: "POST" })).json()).token;
      const r = await fetch(`/api/v1/antbuddy/${encodeURIComponent(tenant)}/calls`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify({ number: $("dial-number").value.trim() }),
      });
      const body = await r.json();
      out.textContent = r.ok ? `Your phone rings, then ${body.number} is called.`
        : `Call refused: ${body.error ? body.error.message : r.status}`;
    } catch (err) {
      out.textContent = `Call failed: ${err.message}`;
    }
  });
}

async function main() {
  const config = await (await fetch("/board/config.json")).json();
  const params = new URLSearchParams(location.search);
  const tenant = params.get("tenant") || config.tenants[0];
  board.tenant = tenant;
  $("tenant").textContent = tenant || "(none configured)";
  if (!tenant) return;
  config.extensions.forEach(tile);
  setUpDial(config, tenant);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  board.bridge = connect({
    url: `${scheme}//${location.host}${config.ws_path}`,
    token: tokenSource(config.demo),
    channels: [`calls:${tenant}`, `system:${tenant}`],
    onEvent,
    onState: setConnection,
    onGap: (gap) => { $("notices").textContent = `Missed events on ${gap.channel} (${gap.reason}).`; },
  });
  board.bridge.addEventListener("renewed", () => {
    $("renewals").textContent = `· token renewed ×${board.bridge.stats.renewals}`;
  });
  setInterval(() => tiles.forEach(tick), 1000);
}

main();
