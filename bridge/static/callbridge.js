// callbridge.js: the browser client of callbridge's /ws endpoint (docs/protocol.md).
// An ES module with no dependencies. Usage:
//
//   import { connect } from "/callbridge.js";
//   const bridge = connect({
//     url: "wss://bridge.example/ws",
//     token: async () => (await fetch("/my/token")).text(),
//     channels: ["calls:acme"],
//     onEvent: (event, frame) => console.log(event.type, event.extension),
//     onSnapshot: (snapshot) => showCalls(snapshot.channel, snapshot.calls),
//   });
//   bridge.addEventListener("gap", (e) => refreshFromRestApi(e.detail.channel));

// What to do after each close code (bridge.downstream.protocol.CLOSE_ADVICE); others: "backoff".
export const CLOSE_ADVICE = {
  1001: "now", 1012: "now",
  1000: "backoff", 1011: "backoff", 1013: "backoff", 4002: "backoff", 4008: "backoff",
  4009: "backoff", 4010: "backoff",
  4001: "new_token", 4003: "new_token", 4004: "new_token",
  1008: "never", 1009: "never", 4000: "never",
};

export function closeAdvice(code) {
  return CLOSE_ADVICE[code] || "backoff";
}

// Full jitter: a random delay in [0, min(max, base * 2^attempt)) seconds.
export function backoffDelay(attempt, base = 0.5, max = 30, random = Math.random) {
  return random() * Math.min(max, base * 2 ** Math.min(attempt, 30));
}

// Offsets are "<ms>-<seq>": compare them as a pair of integers.
export function compareOffsets(a, b) {
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  return as === bs ? 0 : as < bs ? -1 : 1;
}

const SEEN_LIMIT = 4096; // event ids remembered per client, to drop repeated frames

export class CallBridge extends EventTarget {
  // options: url, token (async ({reason}) => string), channels, backoff {base, max},
  // renewBefore (seconds before expiry to renew; default a quarter of the lifetime, <= 60),
  // positions ({channel: {epoch, offset}} to resume from, e.g. saved from positions()),
  // state (ask for each channel's live state: a "snapshot" event; default false).
  constructor(options) {
    super();
    if (!options || !options.url || typeof options.token !== "function") {
      throw new TypeError("callbridge: url and an async token() callback are required");
    }
    this.url = options.url;
    this._token = options.token;
    this._backoff = { base: 0.5, max: 30, ...(options.backoff || {}) };
    this._renewBefore = options.renewBefore;
    this._channels = new Set(options.channels || []);
    this._cursors = new Map(); // channel -> {epoch, offset}
    for (const [channel, p] of Object.entries(options.positions || {})) {
      if (p && typeof p.epoch === "string" && typeof p.offset === "string") {
        this._cursors.set(channel, { epoch: p.epoch, offset: p.offset });
      }
    }
    this._wantState = Boolean(options.state);
    this._seen = new Map(); // "channel event-id" -> true, insertion ordered, bounded
    this._pending = new Map(); // request id -> {resolve, reject}
    this._nextId = 1;
    this._attempt = 0;
    this._timers = {};
    this._ws = null;
    this._stopped = true;
    this.state = "idle";
    this.stats = { connects: 0, renewals: 0, events: 0, duplicates: 0, gaps: 0, snapshots: 0 };
  }

  start() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._connect("connect");
    return this;
  }

  // Stop for good: close the socket and cancel every timer.
  close() {
    this._stopped = true;
    this._clearTimers();
    if (this._ws) this._ws.close(1000, "client closed");
    this._setState("closed");
  }

  // Add channels; resolves when the server confirms (at once while disconnected: they are
  // subscribed on the next connection). A channel with a known position resumes from it.
  subscribe(channels) {
    const added = channels.filter((c) => !this._channels.has(c));
    channels.forEach((c) => this._channels.add(c));
    return this._live() ? this._request(this._subscribeMessage(channels, added))
      : Promise.resolve(null);
  }

  // Remove channels and forget their position.
  unsubscribe(channels) {
    channels.forEach((c) => { this._channels.delete(c); this._cursors.delete(c); });
    return this._live() ? this._request({ type: "unsubscribe", channels }) : Promise.resolve(null);
  }

  // The last {epoch, offset} seen on a channel, or undefined.
  cursor(channel) {
    return this._cursors.get(channel);
  }

  // {channel: {epoch, offset}} of every channel held that has a position: JSON to save (with
  // whatever the application built from the events) and to pass back as `positions`.
  positions() {
    const out = {};
    for (const channel of this._channels) {
      const cur = this._cursors.get(channel);
      if (cur && cur.offset) out[channel] = { epoch: cur.epoch, offset: cur.offset };
    }
    return out;
  }

  get channels() {
    return [...this._channels];
  }

  // ---- connection ----

  async _connect(reason) {
    this._setState(this.stats.connects ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this._token({ reason });
    } catch (err) {
      this._emit("error", { code: "token_callback", message: String(err) });
      return this._retry(closeAdvice(0));
    }
    if (this._stopped) return;
    const ws = new WebSocket(this.url);
    this._ws = ws;
    this._welcomed = false;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
    ws.onmessage = (m) => this._onMessage(ws, m.data);
    ws.onclose = (e) => this._onClose(ws, e.code, e.reason);
    ws.onerror = () => {}; // a close always follows; decided there
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._clearTimers();
    for (const { reject } of this._pending.values()) reject(new Error(`closed (${code})`));
    this._pending.clear();
    const advice = closeAdvice(code);
    this._emit("close", { code, reason, advice });
    if (this._stopped) return;
    if (advice === "never") {
      this._stopped = true;
      this._setState("closed");
      return;
    }
    this._retry(advice);
  }

  _retry(advice) {
    const delay = advice === "now" && this._attempt === 0
      ? 0 : backoffDelay(this._attempt, this._backoff.base, this._backoff.max);
    this._attempt += 1;
    this._setState("reconnecting");
    const reason = advice === "new_token" ? "rejected" : "reconnect";
    this._timers.retry = setTimeout(() => this._connect(reason), delay * 1000);
  }

  _live() {
    return this._ws !== null && this._welcomed;
  }

  _send(message) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(message));
  }

  _request(message) {
    const id = `c${this._nextId++}`;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      this._send({ ...message, id });
    });
  }

  // ---- server messages ----

  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    this._touch();
    switch (msg.type) {
      case "welcome": return this._onWelcome(msg);
      case "event": return this._onEvent(msg);
      case "gap": return this._onGap(msg);
      case "state": return this._onSnapshot(msg);
      case "renewed":
        this.stats.renewals += 1;
        this._scheduleRenew(msg.expires_at);
        this._emit("renewed", msg);
        break;
      case "subscribed":
        // A channel without a position starts from the one the server read when it was
        // subscribed: events published while a reconnect is under way are then resumed too.
        // One with a position keeps it (the server answers a lost epoch with a gap).
        for (const [channel, epoch] of Object.entries(msg.epochs || {})) {
          const offset = (msg.offsets || {})[channel];
          const cur = this._cursors.get(channel);
          if (offset && (!cur || !cur.offset)) this._cursors.set(channel, { epoch, offset });
        }
        break;
      case "unsubscribed":
        if (msg.reason) msg.channels.forEach((c) => this._channels.delete(c));
        this._emit("unsubscribed", msg);
        break;
      case "error": this._emit("error", msg); break;
      default: break; // heartbeat, pong: liveness only
    }
    const waiter = msg.id != null && this._pending.get(msg.id);
    if (waiter) {
      this._pending.delete(msg.id);
      if (msg.type === "error") waiter.reject(Object.assign(new Error(msg.message), msg));
      else waiter.resolve(msg);
    }
  }

  _onWelcome(msg) {
    this._welcomed = true;
    this._attempt = 0;
    this.stats.connects += 1;
    this.session = msg;
    this._startHeartbeat(msg.heartbeat, msg.idle_timeout);
    this._scheduleRenew(msg.expires_at);
    this._setState("open");
    this._emit("welcome", msg);
    if (this._channels.size) {
      const channels = [...this._channels];
      this._request(this._subscribeMessage(channels, channels)).catch(() => {});
    }
  }

  // Resume `fresh` channels (not held on this connection yet) from their positions; with
  // `state`, the server answers each with the missed events, or with a state message when
  // history no longer covers the position (instead of a gap), or when there is no position.
  _subscribeMessage(channels, fresh) {
    const resume = {};
    for (const c of fresh) {
      const cur = this._cursors.get(c);
      if (cur && cur.offset) resume[c] = { epoch: cur.epoch, offset: cur.offset };
    }
    const message = { type: "subscribe", channels, resume };
    if (this._wantState) message.state = true;
    return message;
  }

  _onEvent(frame) {
    const { channel, epoch, offset, event } = frame;
    const cur = this._cursors.get(channel);
    if (!frame.provisional && cur && cur.offset && cur.epoch === epoch
        && compareOffsets(offset, cur.offset) <= 0) {
      this.stats.duplicates += 1;
      return;
    }
    if (!frame.provisional) this._cursors.set(channel, { epoch, offset });
    const key = `${channel} ${event && event.id}`;
    if (this._seen.has(key)) {
      this.stats.duplicates += 1;
      return;
    }
    this._seen.set(key, true);
    if (this._seen.size > SEEN_LIMIT) this._seen.delete(this._seen.keys().next().value);
    this.stats.events += 1;
    this._emit("event", frame);
  }

  // A channel's live state: it replaces whatever was built from the channel's earlier events;
  // the events that follow come after its offset, which becomes the channel's position.
  _onSnapshot(msg) {
    const { channel, epoch, offset } = msg;
    if (!this._channels.has(channel) || typeof epoch !== "string" || typeof offset !== "string") {
      return;
    }
    this._cursors.set(channel, { epoch, offset });
    this.stats.snapshots += 1;
    this._emit("snapshot", msg);
  }

  _onGap(msg) {
    // The position stays: resuming from it again is answered with what history still has
    // after it (the new epoch's events after an epoch change) or the same gap.
    this.stats.gaps += 1;
    this._emit("gap", msg);
  }

  // ---- timers: heartbeat, liveness, renewal ----

  // The server's heartbeat tells when it has gone silent; pings are sent only when the server
  // closes quiet clients (idle_timeout > 0): the browser answers websocket pings by itself.
  _startHeartbeat(seconds, idleTimeout) {
    const every = Math.max(1, Number(seconds) || 25);
    this._deadAfter = (2 * every + 5) * 1000;
    clearInterval(this._timers.ping);
    const idle = Number(idleTimeout) || 0;
    if (idle > 0) {
      const ping = Math.max(0.5, idle / 3);
      this._timers.ping = setInterval(() => this._send({ type: "ping" }), ping * 1000);
    }
    this._touch();
  }

  // Anything from the server proves the link alive; silence past the limit means it died.
  _touch() {
    clearTimeout(this._timers.dead);
    if (!this._deadAfter) return;
    this._timers.dead = setTimeout(() => {
      if (this._ws) this._ws.close(1000, "no traffic from the server");
    }, this._deadAfter);
  }

  _scheduleRenew(expiresAt) {
    clearTimeout(this._timers.renew);
    const left = Number(expiresAt) - Date.now() / 1000;
    if (!Number.isFinite(left)) return;
    const before = this._renewBefore ?? Math.min(60, left / 4);
    this._timers.renew = setTimeout(() => this._renew(), Math.max(0, left - before) * 1000);
  }

  async _renew() {
    try {
      const token = await this._token({ reason: "renew" });
      await this._request({ type: "renew", token });
    } catch (err) {
      // the old grant stays in force: try again shortly, until the server closes with 4003
      this._emit("error", { code: err.code || "renew_failed", message: String(err.message || err) });
      if (this._live()) this._timers.renew = setTimeout(() => this._renew(), 5000);
    }
  }

  _clearTimers() {
    clearInterval(this._timers.ping);
    for (const name of ["retry", "dead", "renew"]) clearTimeout(this._timers[name]);
    this._timers = {};
    this._deadAfter = 0;
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._emit("state", { state });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// Create a client, wire onEvent/onGap/onState/onSnapshot callbacks if given, and start it.
// State is asked for when `state` is true, or, when `state` is not given, with an onSnapshot.
export function connect(options) {
  const state = options.state ?? Boolean(options.onSnapshot);
  const bridge = new CallBridge({ ...options, state });
  if (options.onSnapshot) bridge.addEventListener("snapshot", (e) => options.onSnapshot(e.detail));
  if (options.onEvent) bridge.addEventListener("event", (e) => options.onEvent(e.detail.event, e.detail));
  if (options.onGap) bridge.addEventListener("gap", (e) => options.onGap(e.detail));
  if (options.onState) bridge.addEventListener("state", (e) => options.onState(e.detail.state));
  return bridge.start();
}
