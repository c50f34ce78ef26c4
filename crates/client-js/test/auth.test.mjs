// 4401 against a real `tether`: a provider is asked again and the client connects; a fixed
// token that the server refuses, or a provider that says no token will come, ends in FAILED.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Server, pkg, until, tap } from "./support.mjs";

const { TetherClient } = pkg;
const FAST = { initialRetryDelay: 50, maxRetryDelay: 250 };

test("4401 with a token provider: a new token, then connected", async (t) => {
  const server = new Server();
  await server.start();
  t.after(() => server.stop());
  const good = server.token("auth");
  let calls = 0;
  const wire = tap();
  const c = new TetherClient({ ...FAST, url: server.url, WebSocket: wire.WebSocket,
    token: async () => (++calls === 1 ? "not.a.jwt" : good) });
  t.after(() => c.close());
  const states = [];
  c.on("state", (s) => states.push(s.state));
  await until("connected", () => c.state.state === "CONNECTED", 15000, () => JSON.stringify(states));
  assert.equal(calls, 2, "asked once for the first hello and once after the 4401");
  assert.ok(wire.frames.some((f) => f.frame.type === "error" && f.frame.code === "AUTH_FAILURE"));
  assert.equal(wire.made.length, 2);
  assert.ok(!states.includes("FAILED"));
});

test("4401 with a fixed token: FAILED, label Offline, no further attempt", async (t) => {
  const server = new Server();
  await server.start();
  t.after(() => server.stop());
  const wire = tap();
  const c = new TetherClient({ ...FAST, url: server.url, WebSocket: wire.WebSocket, token: "not.a.jwt" });
  t.after(() => c.close());
  await until("failed", () => c.state.state === "FAILED");
  assert.equal(c.state.label, "Offline");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(wire.made.length, 1);
});

test("a provider that gives no token: FAILED", async (t) => {
  const server = new Server();
  await server.start();
  t.after(() => server.stop());
  const c = new TetherClient({ ...FAST, url: server.url, WebSocket, token: () => null });
  t.after(() => c.close());
  await until("failed", () => c.state.state === "FAILED");
  assert.equal(c.state.label, "Offline");
});
