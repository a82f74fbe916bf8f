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
}

export interface ConnectOptions extends CallBridgeOptions {
  onEvent?: (event: CallEvent, frame: EventFrame) => void;
  onGap?: (gap: GapFrame) => void;
  onState?: (state: ConnectionState) => void;
}

export interface CallBridgeEventMap {
  event: CustomEvent<EventFrame>;
  gap: CustomEvent<GapFrame>;
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
                    gaps: number };
  start(): this;
  close(): void;
  /** Resolves with the server's `subscribed` reply (null while disconnected). */
  subscribe(channels: string[]): Promise<unknown>;
  unsubscribe(channels: string[]): Promise<unknown>;
  cursor(channel: string): Cursor | undefined;
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
