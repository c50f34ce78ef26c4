// Test support: a real `tether serve` on an ephemeral loopback port (its binary from
// TETHER_BIN, as `cargo xtask js test` builds it), killed by pid and started again on the same
// port and database; tokens from `tether token`; the built package from TETHER_JS_PKG.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import WebSocket from "ws";

export const pkg = await import(process.env.TETHER_JS_PKG ?? new URL("../../../target/js/pkg/index.js", import.meta.url).href);
const BIN = process.env.TETHER_BIN ?? new URL("../../../target/debug/tether", import.meta.url).pathname;
const START_TIMEOUT_MS = 30000;

/** Resolves once `cond()` is true; rejects with `what` (and `detail()`) after `ms`. */
export async function until(what, cond, ms = 15000, detail = () => "") {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} ${detail()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A loopback port nobody listens on (bound, read, released). */
export async function closedPort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** An in-memory `{getItem, setItem}`: what a browser's localStorage keeps across a reload. */
export function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => void m.set(k, String(v)), map: m };
}

/** A `ws` WebSocket that records when it was made and every frame it received. */
export function tap() {
  const made = [];
  const frames = [];
  class Tapped extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      made.push(performance.now());
      this.addEventListener("message", (ev) => {
        try { frames.push({ at: Date.now(), frame: JSON.parse(String(ev.data)) }); } catch { /* not ours */ }
      });
    }
  }
  return { WebSocket: Tapped, made, frames };
}

export class Server {
  constructor({ drainMs = 1000 } = {}) {
    this.dir = fs.mkdtempSync(path.join(process.env.TETHER_TEST_TMP ?? os.tmpdir(), "tether-js-"));
    this.secret = path.join(this.dir, "secret");
    fs.writeFileSync(this.secret, "js-client-test-secret-0123456789abcdef0123456789");
    this.port = 0;
    this.drainMs = drainMs;
    this.child = undefined;
    this.log = fs.openSync(path.join(this.dir, "tether.log"), "a");
  }
  env() {
    return {
      ...process.env,
      TETHER_HOST: "127.0.0.1", PORT: String(this.port), TETHER_ENV: "development",
      DATABASE_URL: `sqlite://${path.join(this.dir, "tether.db")}`,
      TETHER_JWT_SECRET_FILE: this.secret, TETHER_LOG_FORMAT: "json",
      TETHER_DRAIN_MS: String(this.drainMs),
      // Every test client comes from 127.0.0.1: reconnect waves are not a flood here.
      TETHER_UPGRADE_BURST: "100000", TETHER_UPGRADE_PER_SEC: "100000",
    };
  }
  get url() { return `ws://127.0.0.1:${this.port}/ws`; }

  /** Starts `tether serve` (port 0 the first time, then the same port) and waits for /health/ready. */
  async start() {
    if (this.child) throw new Error("already running");
    const child = spawn(BIN, ["serve"], { env: this.env(), stdio: ["ignore", "pipe", this.log] });
    this.child = child;
    const exited = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
    this.exited = exited;
    const lines = readline.createInterface({ input: child.stdout });
    const started = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tether did not start; see ${this.dir}/tether.log`)), START_TIMEOUT_MS);
      exited.then((e) => { clearTimeout(timer); reject(new Error(`tether exited at start (${JSON.stringify(e)}); see ${this.dir}/tether.log`)); });
      lines.on("line", (line) => {
        fs.writeSync(this.log, line + "\n");
        try {
          const l = JSON.parse(line);
          if (l.event === "server_started") { clearTimeout(timer); resolve(l.data.port); }
        } catch { /* not JSON */ }
      });
    });
    this.port = await started;
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      try { if ((await fetch(`http://127.0.0.1:${this.port}/health/ready`)).status === 200) return; } catch { /* not yet */ }
      if (Date.now() > deadline) throw new Error("tether never became ready");
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  /** SIGKILL (a crash) or SIGTERM (the drain of CONTRACT 5.6); resolves when it exited. */
  async kill(signal = "SIGKILL") {
    const child = this.child;
    if (!child) return undefined;
    child.kill(signal);
    const e = await this.exited;
    this.child = undefined;
    return e;
  }
  async stop() {
    await this.kill("SIGKILL");
    fs.closeSync(this.log);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
  /** A JWT signed with this server's secret. */
  token(sub = "js-test", { ttl = 3600 } = {}) {
    return execFileSync(BIN, ["token", "--sub", sub, "--subscribe", "*", "--publish", "*", "--ttl", String(ttl)],
      { env: this.env(), encoding: "utf8" }).trim();
  }
  /** Everything retained on `channel`, read with a raw subscribe since 0 (the test's own eyes). */
  async history(channel) {
    const ws = new WebSocket(this.url, "tether.v1");
    const got = [];
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("history timed out")), 10000);
      let expected;
      ws.on("error", reject);
      ws.on("open", () => ws.send(JSON.stringify({ type: "hello", token: this.token("history") })));
      ws.on("message", (data) => {
        const f = JSON.parse(String(data));
        if (f.type === "welcome") ws.send(JSON.stringify({ type: "subscribe", channel, since: 0 }));
        if (f.type === "subscribed") expected = f.offset;
        if (f.type === "message") got.push(f);
        if (expected !== undefined && got.length >= expected) { clearTimeout(timer); resolve(); }
      });
    });
    ws.close();
    return got;
  }
}
