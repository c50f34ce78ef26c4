// @tether/client: the driver (CONTRACT section 13). It moves bytes and time between the
// platform's WebSocket, one timer, the app's token provider, an optional storage and the wasm
// Core (resilience::Session). Every decision (when to retry, what a close code means, which
// URL is next, when a queued publish expires, what a failed token fetch means) is Core's: the
// driver switches on the `kind` Core hands it and does exactly that.
import initWasm, { Core } from "./tether_core.js";
import { wasmBase64 } from "./tether_core_wasm.js";

function bytes(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
await initWasm({ module_or_path: bytes(wasmBase64) });

export type ConnectionStateName = "CONNECTING" | "CONNECTED" | "RECONNECTING" | "DISCONNECTED" | "FAILED";
/** A state change: `label` is the UI text of CONTRACT section 8. */
export interface StateChange { state: ConnectionStateName; label: string; from?: ConnectionStateName }
/** A delivered message: offsets per channel increase by one, with no gap and no repeat. */
export interface Message { channel: string; offset: number; id: string; data: unknown; published_at: string }
/** A publish stored by the server (`duplicate`: it had been stored before, under the same id). */
export interface Ack { offset: number; duplicate: boolean }
export type AlertKind = "latency" | "reconnects" | "failed_messages" | "downtime";
/** An alert begins (`active`) or ends. */
export interface Alert { kind: AlertKind; active: boolean; value?: number; threshold?: number }
/** A server error, a refused publish (`source: "publish"`) or an undecodable frame. */
export interface TetherError { code: string; message: string; channel?: string; source: string }
/** The next connection attempt is scheduled, and why it waits this long. */
export interface AttemptScheduled { attempt: number; delayMs: number; cause: "backoff" | "server_advice" | "breaker" | "network_online" }
/** What `metrics()` returns (the session's quality snapshot). */
export interface Metrics {
  state: ConnectionStateName; label: string; rtt_ms: number | null; rtt_median_ms: number | null; rtt_p95_ms: number | null;
  delivery_rate: number | null; sent: number; acked: number; failed_messages: number; queue_length: number;
  attempts: number; failed_attempts: number; outage_attempts: number; reconnects: number;
  reconnection_success_rate: number | null; downtime_total_ms: number; current_downtime_ms: number; alerts: string[];
}
/**
 * A token as is (never renewed: a 4401 then ends in FAILED), or a provider asked for every
 * connection and after a 4401 or `token_expiring`. A provider that returns `null`/`undefined`
 * says no token will come (FAILED); one that throws failed this time (a failed attempt).
 */
export type TokenProvider = string | (() => string | null | undefined | Promise<string | null | undefined>);
export interface StorageLike { getItem(key: string): string | null; setItem(key: string, value: string): void }
export interface SocketLike {
  readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(text: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => SocketLike;
export interface TetherClientOptions {
  url?: string; urls?: string[]; token: TokenProvider;
  /** `localStorage` or any `{getItem, setItem}`: the outbox and offsets survive a reload. */
  storage?: StorageLike; storageKey?: string;
  /** A WebSocket class (Node.js 20 has none built in: pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  initialRetryDelay?: number; maxRetryDelay?: number; maxRetryAttempts?: number; connectionTimeout?: number;
  heartbeatInterval?: number; latencyThreshold?: number; breakerThreshold?: number; breakerWindow?: number;
  breakerOpen?: number; queueCapacity?: number; qualityInterval?: number; reportInterval?: number; dedupWindow?: number;
}
/** The server confirmed a subscription (after every reconnect too): `replayed` messages follow. */
export interface Subscribed { channel: string; epoch: string; offset: number; replayed: number }
type Events = { state: StateChange; alert: Alert; message: Message; error: TetherError; attempt: AttemptScheduled; subscribed: Subscribed };
export interface Subscription { unsubscribe(): void; pause(): void; resume(): void }

const now = () => performance.now();
/** Options that are the driver's own; every other one goes to Core, which checks it. */
const DRIVER_OPTIONS = new Set(["url", "urls", "token", "storage", "storageKey", "WebSocket"]);

export class TetherClient {
  private core: Core;
  private ws?: SocketLike;
  private timer?: ReturnType<typeof setTimeout>;
  private pumping = false;
  private persistDue = false;
  private listeners = new Map<string, Set<(v: any) => void>>();
  private pending = new Map<string, { resolve: (a: Ack) => void; reject: (e: TetherError) => void }>();
  private handlers = new Map<string, Set<(m: Message) => void>>();
  private WS: WebSocketConstructor;
  private online = () => { this.core.networkOnline(now()); this.pump(); };
  private offline = () => { this.core.networkOffline(now()); this.pump(); };

  constructor(private options: TetherClientOptions) {
    const WS = options.WebSocket ?? (globalThis as any).WebSocket;
    if (!WS) throw new Error("no WebSocket: pass one as options.WebSocket");
    this.WS = WS;
    const core: Record<string, unknown> = { urls: options.urls ?? (options.url !== undefined ? [options.url] : []) };
    for (const [k, v] of Object.entries(options)) if (!DRIVER_OPTIONS.has(k) && v !== undefined) core[k] = v;
    const seed = crypto.getRandomValues(new Uint32Array(2));
    const saved = options.storage?.getItem(this.key()) ?? undefined;
    const fixed = typeof options.token === "string" ? options.token : undefined;
    this.core = new Core(JSON.stringify(core), seed[0], seed[1], now(), Date.now(), saved, fixed);
    const g = globalThis as any;
    if (typeof g.addEventListener === "function" && typeof g.window !== "undefined") {
      g.addEventListener("online", this.online);
      g.addEventListener("offline", this.offline);
    }
    this.core.connect(now());
    this.pump();
  }

  /** Listens to `state`, `alert`, `message` (every channel), `error`, `attempt` or `subscribed`; returns the remover. */
  on<K extends keyof Events>(event: K, fn: (v: Events[K]) => void): () => void {
    const set = this.listeners.get(event) ?? new Set();
    set.add(fn); this.listeners.set(event, set);
    return () => { set.delete(fn); };
  }
  /** The current state and its label. */
  get state(): StateChange { return JSON.parse(this.core.state()); }
  /** Subscribes; after every reconnect the client resumes from the last offset handed to `handler`. */
  subscribe(channel: string, handler: (m: Message) => void): Subscription {
    const set = this.handlers.get(channel) ?? new Set();
    if (set.size === 0) {
      const err = this.core.subscribe(now(), channel, undefined);
      if (err) throw new Error(err);
    }
    set.add(handler); this.handlers.set(channel, set);
    this.pump();
    return {
      unsubscribe: () => {
        set.delete(handler);
        if (set.size === 0 && this.handlers.get(channel) === set) { this.handlers.delete(channel); this.core.unsubscribe(now(), channel); this.pump(); }
      },
      pause: () => { this.core.pause(channel); },
      resume: () => { this.core.resume(now(), channel); this.pump(); },
    };
  }
  /** Publishes (queued while offline); resolves once the server stored it, exactly once. */
  publish(channel: string, data: unknown, id: string = crypto.randomUUID()): Promise<Ack> {
    return new Promise((resolve, reject) => {
      const err = this.core.publish(now(), id, channel, JSON.stringify(data) ?? "");
      if (err) { reject({ code: "BAD_REQUEST", message: err, channel, source: "publish" }); return; }
      this.pending.set(id, { resolve, reject });
      this.pump();
    });
  }
  /** RTT, delivery rate, failed attempts, reconnect success, downtime, queue length, alerts. */
  metrics(): Metrics { return JSON.parse(this.core.metrics(now())); }
  /** Publishes waiting in the queue (in flight included). */
  get queueLength(): number { return this.core.queueLength(); }
  /** Tries again now (leaves FAILED). */
  retry(): void { this.core.retry(now()); this.pump(); }
  /** Connects again after `close()`. */
  connect(): void { this.core.connect(now()); this.pump(); }
  /** Closes (DISCONNECTED); queued publishes stay queued (and in the storage). */
  close(): void {
    this.core.close(now());
    this.pump();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const g = globalThis as any;
    if (typeof g.removeEventListener === "function") {
      g.removeEventListener("online", this.online);
      g.removeEventListener("offline", this.offline);
    }
  }

  private key() { return this.options.storageKey ?? "tether:session"; }
  private emit(event: string, v: unknown) {
    for (const fn of this.listeners.get(event) ?? []) { try { fn(v); } catch (e) { console.error(e); } }
  }
  private pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        let busy = false;
        for (let e; (e = this.core.pollEvent(now())) !== undefined;) { busy = true; this.handle(JSON.parse(e)); }
        // Whatever may reach the server is in the storage first.
        if (this.persistDue) { this.persistDue = false; this.options.storage?.setItem(this.key(), this.core.persist()); }
        for (let o; (o = this.core.pollOutput()) !== undefined;) { busy = true; this.perform(JSON.parse(o)); }
        if (this.core.pollFetch()) { busy = true; this.fetchToken(); }
        if (!busy) break;
      }
    } finally { this.pumping = false; }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const at = this.core.pollTimeout();
    if (at !== undefined) {
      this.timer = setTimeout(() => { this.timer = undefined; this.core.handleTimeout(now()); this.pump(); }, Math.max(0, at - now()));
    }
  }
  private fetchToken() {
    const provider = this.options.token;
    Promise.resolve()
      .then(() => (typeof provider === "function" ? provider() : provider))
      .then((t) => { this.core.tokenFetched(now(), t ?? undefined); this.pump(); },
        (e) => { this.core.tokenFailed(now(), String(e?.message ?? e)); this.pump(); });
  }
  /** Forgets the socket (its late events are ignored) and closes it. */
  private drop(code?: number, reason = "") {
    const ws = this.ws;
    this.ws = undefined;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try { ws.close(code, reason); } catch { try { ws.close(); } catch { /* already closing */ } }
  }
  private perform(o: any) {
    switch (o.kind) {
      case "open": {
        this.drop(1000, "");
        let ws: SocketLike;
        try { ws = new this.WS(o.url, "tether.v1"); } catch (e) { this.core.transportError(now(), String(e)); return; }
        this.ws = ws;
        const mine = () => this.ws === ws;
        ws.onopen = () => { if (mine()) { this.core.socketOpened(now()); this.pump(); } };
        ws.onmessage = (ev) => { if (mine() && typeof ev.data === "string") { this.core.handleText(now(), ev.data); this.pump(); } };
        // A refused or failed connection: its close event follows and reports it.
        ws.onerror = () => {};
        ws.onclose = (ev) => { if (mine()) { this.ws = undefined; this.core.socketClosed(now(), ev.code || 1006, ev.reason ?? ""); this.pump(); } };
        break;
      }
      case "send":
        try { if (this.ws && this.ws.readyState === 1) this.ws.send(o.text); } catch { /* its close event follows */ }
        break;
      case "close":
        this.drop(o.code, o.reason);
        break;
    }
  }
  private handle(e: any) {
    switch (e.kind) {
      case "state": this.emit("state", { state: e.state, label: e.label, from: e.from }); break;
      case "message": {
        const m: Message = { channel: e.channel, offset: e.offset, id: e.id, data: e.data, published_at: e.published_at };
        for (const h of this.handlers.get(m.channel) ?? []) { try { h(m); } catch (x) { console.error(x); } }
        this.emit("message", m);
        break;
      }
      case "acked": this.pending.get(e.id)?.resolve({ offset: e.offset, duplicate: e.duplicate }); this.pending.delete(e.id); break;
      case "failed": {
        const err: TetherError = { code: e.code, message: e.message, channel: e.channel, source: "publish" };
        this.pending.get(e.id)?.reject(err); this.pending.delete(e.id); this.emit("error", err);
        break;
      }
      case "alert": this.emit("alert", { kind: e.alert, active: e.active, value: e.value, threshold: e.threshold }); break;
      case "attempt_scheduled": this.emit("attempt", { attempt: e.attempt, delayMs: e.delay_ms, cause: e.cause }); break;
      case "error": this.emit("error", { code: e.code, message: e.message, channel: e.channel ?? undefined, source: e.source }); break;
      case "subscribed": this.emit("subscribed", { channel: e.channel, epoch: e.epoch, offset: e.offset, replayed: e.replayed }); break;
      case "ended": if (e.cause === "refused") this.handlers.delete(e.channel); break;
      case "persist": this.persistDue = true; break;
    }
  }
}
