// Type declarations for callbridge.js (docs/client.md, docs/protocol.md, docs/events.md).

export type CloseAdvice = "now" | "backoff" | "new_token" | "never";
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";
/** Why the token callback is called: first connect, reconnect, after a token was refused
 * (4001/4003/4004), or an in-band renewal before expiry. */
export type TokenReason = "connect" | "reconnect" | "rejected" | "renew";

export interface CallEvent {
  v: number;
  id: string;
  type: string;
  provider: string;
  tenant: string;
  occurred_at: string;
  account?: string;
  call_id?: string;
  other_leg_id?: string;
  bridge_id?: string;
  extension?: string;
  direction?: "incoming" | "outgoing";
  leg_direction?: "inbound" | "outbound";
  caller?: { number: string | null; name: string | null };
  callee?: { number: string | null; name: string | null };
  hangup?: { cause: string | null; code: string | null };
  durations?: { duration: number | null; billing: number | null; ringing: number | null };
  upstream?: { name: string; msg_id?: string };
  /** On `call.ended`, `detail.closed_by` ("max_age" or "reconciled") says callbridge closed a
   * call whose hangup it never received. */
  detail?: Record<string, unknown>;
  [field: string]: unknown;
}

export interface EventFrame {
  type: "event";
  channel: string;
  epoch: string;
  offset: string;
  provisional?: boolean;
  event: CallEvent;
}

export interface GapFrame {
  type: "gap";
  channel: string;
  reason: "epoch_changed" | "trimmed" | "too_old" | "unavailable" | string;
  epoch: string;
}

export interface Party {
  number: string | null;
  name: string | null;
}

/** A leg's state in a live call. */
export type LegState = "ringing" | "answered" | "bridged" | "held" | "parked";

export interface LiveLeg {
  call_id: string;
  state: LegState;
  extension?: string;
  direction?: "incoming" | "outgoing";
  leg_direction?: "inbound" | "outbound";
  caller?: Party;
  callee?: Party;
  started_at?: string;
  answered_at?: string;
}

/** A call in progress, as the `state` message gives it (docs/events.md, "Live state"). */
export interface LiveCall {
  /** the call's bridge id when a leg knows it, else its first leg's call id */
  call_id: string;
  state: LegState;
  direction?: "internal" | "inbound" | "outbound";
  caller?: Party;
  callee?: Party;
  provider?: string;
  account?: string;
  started_at?: string;
  answered_at?: string;
  extensions: string[];
  legs: LiveLeg[];
}

export interface ExtensionStatus {
  extension: string;
  status: "idle" | "ringing" | "talking" | "held";
  /** ids of the calls (LiveCall.call_id) the extension is in */
  calls: string[];
  /** where the provider reports presence */
  online?: boolean;
}

/** The server's `state` message: one channel's live state at `(epoch, offset)`; the channel's
 * events that follow have later offsets. Delivered as the client's `snapshot` event. */
export interface StateFrame {
  type: "state";
  id: string | number | null;
  channel: string;
  epoch: string;
  offset: string;
  calls: LiveCall[];
  extensions: ExtensionStatus[];
}

/** Saved positions to resume from: channel -> {epoch, offset}. */
export type Positions = Record<string, { epoch: string; offset: string }>;

export interface Welcome {
  type: "welcome";
  sub: string;
  expires_at: number;
  expiry_grace: number;
  session: string;
  heartbeat: number;
  idle_timeout: number;
}

export interface ErrorDetail {
  id?: string | number | null;
  code: string;
  message: string;
}

export interface Cursor {
  epoch: string;
  /** null after a gap, until the next event of the channel */
  offset: string | null;
}

export interface CallBridgeOptions {
  /** ws(s)://host/ws */
  url: string;
  /** Returns a websocket token; called on every connect and before every renewal. */
  token: (context: { reason: TokenReason }) => Promise<string> | string;
  channels?: string[];
  /** Full-jitter backoff, seconds: delay in [0, min(max, base * 2^attempt)). */
  backoff?: { base?: number; max?: number };
  /** Seconds before expires_at to renew; default a quarter of the remaining lifetime, at most 60. */
  renewBefore?: number;
  /** Where to resume channels from on the first connection (from `positions()`, saved). */
  positions?: Positions;
  /** Ask for each channel's live state on every subscribe (a `snapshot` event per channel
   * instead of a `gap` when a resume cannot be served). Default: false for `new CallBridge`;
   * for `connect`, true when `onSnapshot` is given. */
  state?: boolean;
}

export interface ConnectOptions extends CallBridgeOptions {
  onEvent?: (event: CallEvent, frame: EventFrame) => void;
  onGap?: (gap: GapFrame) => void;
  /** The connection's state (not a channel's live state: that is `onSnapshot`). */
  onState?: (state: ConnectionState) => void;
  /** A channel's live state (the server's `state` message). */
  onSnapshot?: (snapshot: StateFrame) => void;
}

export interface CallBridgeEventMap {
  event: CustomEvent<EventFrame>;
  gap: CustomEvent<GapFrame>;
  snapshot: CustomEvent<StateFrame>;
  state: CustomEvent<{ state: ConnectionState }>;
  welcome: CustomEvent<Welcome>;
  renewed: CustomEvent<{ type: "renewed"; id: string | number | null; expires_at: number }>;
  unsubscribed: CustomEvent<{ channels: string[]; reason?: string }>;
  error: CustomEvent<ErrorDetail>;
  close: CustomEvent<{ code: number; reason: string; advice: CloseAdvice }>;
}

export declare const CLOSE_ADVICE: Readonly<Record<number, CloseAdvice>>;
export declare function closeAdvice(code: number): CloseAdvice;
export declare function backoffDelay(attempt: number, base?: number, max?: number,
                                     random?: () => number): number;
export declare function compareOffsets(a: string, b: string): -1 | 0 | 1;

export declare class CallBridge extends EventTarget {
  constructor(options: CallBridgeOptions);
  readonly url: string;
  readonly state: ConnectionState;
  readonly channels: string[];
  readonly session?: Welcome;
  readonly stats: { connects: number; renewals: number; events: number; duplicates: number;
                    gaps: number; snapshots: number };
  start(): this;
  close(): void;
  /** Resolves with the server's `subscribed` reply (null while disconnected). */
  subscribe(channels: string[]): Promise<unknown>;
  unsubscribe(channels: string[]): Promise<unknown>;
  cursor(channel: string): Cursor | undefined;
  /** The position of every channel held that has one: save it, pass it back as `positions`. */
  positions(): Positions;
  addEventListener<K extends keyof CallBridgeEventMap>(
    type: K, listener: (ev: CallBridgeEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
                   options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof CallBridgeEventMap>(
    type: K, listener: (ev: CallBridgeEventMap[K]) => void,
    options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
                      options?: boolean | EventListenerOptions): void;
}

export declare function connect(options: ConnectOptions): CallBridge;
