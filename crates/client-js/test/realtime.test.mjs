// Against a real `tether` on loopback: connect, subscribe, publish and ack (a retry of the same
// id is a duplicate), resume after a server kill with no loss and no repeat, and the offline
// queue across a simulated reload (a fresh client on the same storage).
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Server, pkg, until, memoryStorage, closedPort } from "./support.mjs";

const { TetherClient } = pkg;
const FAST = { initialRetryDelay: 50, maxRetryDelay: 250 };

function client(t, options) {
  const c = new TetherClient({ WebSocket, ...FAST, ...options });
  t.after(() => c.close());
  return c;
}

test("connect, subscribe, publish and ack; the same id again is a duplicate", async (t) => {
  const server = new Server();
  await server.start();
  t.after(() => server.stop());
  const c = client(t, { url: server.url, token: server.token() });
  const states = [];
  c.on("state", (s) => states.push(s.label));
  const got = [];
  const subscribed = [];
  c.on("subscribed", (s) => subscribed.push(s));
  c.subscribe("room:basic", (m) => got.push(m));
  await until("subscribed", () => subscribed.length === 1, 15000, () => JSON.stringify(states));
  assert.deepEqual(c.state, { state: "CONNECTED", label: "Connected" });
  assert.deepEqual(states, ["Connected"]);
  assert.equal(subscribed[0].channel, "room:basic");

  const ack = await c.publish("room:basic", { text: "hi" }, "basic-1");
  assert.deepEqual(ack, { offset: 1, duplicate: false });
  const again = await c.publish("room:basic", { text: "hi" }, "basic-1");
  assert.deepEqual(again, { offset: 1, duplicate: true });
  const second = await c.publish("room:basic", [2]);
  assert.deepEqual(second, { offset: 2, duplicate: false });
  await until("two messages", () => got.length === 2);
  assert.deepEqual(got.map((m) => [m.offset, m.id, m.data]), [[1, "basic-1", { text: "hi" }], [2, got[1].id, [2]]]);
  const m = c.metrics();
  assert.equal(m.acked, 3);
  assert.equal(m.delivery_rate, 1);
  assert.equal(m.failed_attempts, 0);
  await assert.rejects(c.publish("bad channel!", 1), (e) => e.code === "BAD_REQUEST");
});

test("resume after a server kill: every message once, in order", async (t) => {
  const server = new Server();
  await server.start();
  t.after(() => server.stop());
  const sub = client(t, { url: server.url, token: server.token("sub") });
  const pub = client(t, { url: server.url, token: server.token("pub") });
  const offsets = [];
  const subscribed = [];
  sub.on("subscribed", (s) => subscribed.push(s));
  sub.subscribe("room:resume", (m) => offsets.push(m.offset));
  await until("subscribed", () => subscribed.length === 1);
  for (let n = 1; n <= 5; n++) assert.equal((await pub.publish("room:resume", { n })).offset, n);
  await until("five delivered", () => offsets.length === 5);

  const killed = await server.kill("SIGKILL");
  assert.equal(killed.signal, "SIGKILL");
  await until("both see the loss", () => sub.state.state === "RECONNECTING" && pub.state.state === "RECONNECTING");
  assert.equal(sub.state.label, "Reconnecting...");
  // Published while the server is down: queued, sent after the reconnect.
  const later = [6, 7, 8, 9, 10].map((n) => pub.publish("room:resume", { n }));
  assert.equal(pub.queueLength, 5);
  await server.start();
  const acks = await Promise.all(later);
  assert.deepEqual(acks.map((a) => a.offset), [6, 7, 8, 9, 10]);
  assert.ok(acks.every((a) => a.duplicate === false));
  await until("ten delivered", () => offsets.length >= 10);
  // Give a repeat the time to show up before judging.
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(offsets, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.ok(subscribed.length >= 2, "resubscribed after the reconnect");
  assert.equal(sub.metrics().reconnects, 1);
  assert.equal(pub.queueLength, 0);
});

test("the queue survives a reload: a fresh client on the same storage sends it once", async (t) => {
  const server = new Server();
  await server.start();
  t.after(() => server.stop());
  const storage = memoryStorage();
  const token = server.token("reload");
  // The first page never reaches a server: its publishes wait in the queue (and the storage).
  const first = new TetherClient({ WebSocket, ...FAST, url: `ws://127.0.0.1:${await closedPort()}/ws`, token, storage });
  const unsent = [1, 2, 3].map((n) => first.publish("room:reload", { n }, `reload-${n}`));
  unsent.forEach((p) => p.catch(() => {}));
  assert.equal(first.queueLength, 3);
  first.close();
  assert.ok(storage.map.size > 0, "persisted");

  const second = client(t, { url: server.url, token, storage });
  assert.equal(second.queueLength, 3, "restored from the storage");
  await until("flushed", () => second.queueLength === 0 && second.metrics().acked === 3, 15000,
    () => JSON.stringify(second.metrics()));
  second.close();
  // A third page on the same storage has nothing left to send.
  const third = client(t, { url: server.url, token, storage });
  assert.equal(third.queueLength, 0);
  await until("third connected", () => third.state.state === "CONNECTED");
  const history = await server.history("room:reload");
  assert.deepEqual(history.map((m) => [m.offset, m.id, m.data.n]), [[1, "reload-1", 1], [2, "reload-2", 2], [3, "reload-3", 3]]);
});
