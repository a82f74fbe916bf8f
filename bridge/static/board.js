// The live board: one tile per extension, the calls in progress, the latest completed calls,
// click-to-call. Built on callbridge.js; served at / by callbridge (docs/client.md).
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
// A leg's state in the server's `state` message -> the board's.
const SHOWN = { ringing: "ringing", answered: "talking", bridged: "talking", held: "on hold",
  parked: "on hold" };
// An extension or a call in several states shows the highest, ranked as the server ranks
// them (bridge/calls/view.py), so that the board agrees with the state message.
const RANK = { "on hold": 3, talking: 2, ringing: 1 };

// Every leg in progress, by its call id: {call, extension, state, since, started, caller,
// callee, party}. `call` groups the legs of one call: the bridge id when the legs know it, as
// in the server's state.
const legs = new Map();
const presence = new Map(); // extension -> online (where a provider reports it)
const tiles = new Map(); // extension -> <li>
const board = { events: [], bridge: null, tenant: null, snapshots: 0 };
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

function highest(items) {
  return items.sort((a, b) => RANK[b.state] - RANK[a.state])[0];
}

function render(ext) {
  const li = tile(ext);
  const leg = highest([...legs.values()].filter((l) => l.extension === ext));
  const state = leg ? leg.state : "idle";
  li.dataset.state = state;
  li.dataset.since = leg ? String(leg.since) : "";
  if (presence.has(ext)) li.dataset.online = String(presence.get(ext));
  li.querySelector(".state").textContent = state
    + (presence.get(ext) === false ? " (offline)" : "");
  const peer = leg && leg.party;
  li.querySelector(".peer").textContent = peer && peer.number ? `with ${peer.number}` : "";
  tick(li);
}

// The calls in progress, one row each, oldest first.
function renderCalls() {
  const calls = new Map();
  for (const leg of legs.values()) {
    const call = calls.get(leg.call) || { id: leg.call, legs: [] };
    calls.set(leg.call, call);
    call.legs.push(leg);
  }
  const rows = [...calls.values()].map((call) => {
    const first = call.legs.reduce((a, b) => (a.started <= b.started ? a : b));
    const exts = [...new Set(call.legs.map((l) => l.extension).filter(Boolean))].sort();
    return { id: call.id, state: highest(call.legs).state, started: first.started,
      caller: first.caller, callee: first.callee, exts };
  }).sort((a, b) => a.started - b.started || (a.id < b.id ? -1 : 1));
  $("ongoing").replaceChildren(...rows.map((call) => {
    const row = document.createElement("tr");
    row.dataset.callId = call.id;
    row.dataset.state = call.state;
    for (const text of [(call.caller && call.caller.number) || "?",
      (call.callee && call.callee.number) || "?", call.state, call.exts.join(", ")]) {
      const td = document.createElement("td");
      td.textContent = text;
      row.append(td);
    }
    return row;
  }));
  $("ongoing-count").textContent = `(${rows.length})`;
}

function tick(li) {
  const since = Number(li.dataset.since);
  const s = since ? Math.max(0, Math.floor((Date.now() - since) / 1000)) : null;
  li.querySelector(".timer").textContent = s === null ? ""
    : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function time(iso, fallback) {
  const t = Date.parse(iso || "");
  return Number.isFinite(t) ? t : fallback;
}

// Whom an extension's leg talks to: the caller on a call it receives, else the callee.
function partyOf(leg) {
  return leg.direction === "incoming" ? leg.caller : leg.callee;
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
  if (event.type === "presence.changed") {
    const d = event.detail || {};
    if (typeof d.extension === "string" && typeof d.online === "boolean") {
      presence.set(d.extension, d.online);
      render(d.extension);
    }
    return;
  }
  if (!event.call_id || !(event.type in LEG_STATE)) return;
  const state = LEG_STATE[event.type];
  const prev = legs.get(event.call_id);
  if (state === null) {
    legs.delete(event.call_id);
    if (event.extension) completed(event);
  } else {
    const other = event.other_leg_id && legs.get(event.other_leg_id);
    const now = Date.now();
    legs.set(event.call_id, {
      call: event.bridge_id || (prev && prev.call) || (other && other.call) || event.call_id,
      extension: event.extension || (prev && prev.extension) || null,
      state, since: prev && prev.state === state ? prev.since : now,
      started: prev ? prev.started : time(event.occurred_at, now),
      caller: event.caller || (prev && prev.caller), callee: event.callee || (prev && prev.callee),
      party: partyOf(event) || (prev && prev.party),
    });
  }
  const ext = event.extension || (prev && prev.extension);
  if (ext) render(ext);
  renderCalls();
}

// A channel's live state replaces what the board knew; the events that follow apply to it.
function onSnapshot(snapshot) {
  if (snapshot.channel !== `calls:${board.tenant}`) return;
  board.snapshots += 1;
  legs.clear();
  const now = Date.now();
  for (const call of snapshot.calls || []) {
    for (const leg of call.legs || []) {
      const state = SHOWN[leg.state] || "ringing";
      const started = time(leg.started_at || call.started_at, now);
      const caller = leg.caller || call.caller;
      const callee = leg.callee || call.callee;
      legs.set(leg.call_id, {
        call: call.call_id, extension: leg.extension || null, state,
        since: state === "ringing" ? started : time(leg.answered_at || call.answered_at, started),
        started, caller, callee, party: partyOf({ direction: leg.direction, caller, callee }),
      });
    }
  }
  for (const ext of snapshot.extensions || []) {
    if (typeof ext.online === "boolean") presence.set(ext.extension, ext.online);
    tile(ext.extension);
  }
  tiles.forEach((_, ext) => render(ext));
  renderCalls();
}

function completed(e) {
  const row = document.createElement("tr");
  const d = e.durations || {};
  const cells = [new Date(e.occurred_at).toLocaleTimeString(), e.extension,
    (e.caller && e.caller.number) || "?", (e.callee && e.callee.number) || "?",
    (e.hangup && e.hangup.cause) || closedBy(e), d.billing != null ? `${d.billing} s` : ""];
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    row.append(td);
  }
  const body = $("completed");
  body.prepend(row);
  while (body.rows.length > COMPLETED_ROWS) body.deleteRow(-1);
}

// A call callbridge closed itself, its hangup never received (too old, or reconciled).
function closedBy(e) {
  const by = e.detail && e.detail.closed_by;
  return by ? `closed by callbridge (${by})` : "";
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
  // No saved positions: a page (re)loaded knows nothing, so it starts from each channel's
  // state; after a reconnect the client resumes, and gets the state again only when the
  // missed events are no longer in history.
  board.bridge = connect({
    url: `${scheme}//${location.host}${config.ws_path}`,
    token: tokenSource(config.demo),
    channels: [`calls:${tenant}`, `system:${tenant}`],
    onEvent,
    onSnapshot,
    onState: setConnection,
    onGap: (gap) => { $("notices").textContent = `Missed events on ${gap.channel} (${gap.reason}).`; },
  });
  board.bridge.addEventListener("renewed", () => {
    $("renewals").textContent = `· token renewed ×${board.bridge.stats.renewals}`;
  });
  setInterval(() => tiles.forEach(tick), 1000);
}

main();
