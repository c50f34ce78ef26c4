// The built package loads in Node 20 and reaches FAILED after a small attempt budget against a
// port nobody listens on; a bad channel is refused at once.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";

import { pkg, closedPort } from "./support.mjs";

const { TetherClient } = pkg;

test("FAILED after the attempt budget", async () => {
  const port = await closedPort();
  const states = [];
  const c = new TetherClient({ url: `ws://127.0.0.1:${port}/ws`, token: "t", WebSocket,
    initialRetryDelay: 20, maxRetryDelay: 40, maxRetryAttempts: 3 });
  assert.deepEqual(c.state, { state: "CONNECTING", label: "Connecting..." });
  c.on("state", (s) => states.push(`${s.state}:${s.label}`));
  const deadline = Date.now() + 10000;
  while (c.state.state !== "FAILED" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(c.state.state, "FAILED");
  assert.equal(c.state.label, "Offline");
  assert.equal(states.at(-1), "FAILED:Offline", states.join(","));
  assert.equal(c.metrics().failed_attempts, 3);
  assert.throws(() => c.subscribe("bad channel!", () => {}));
  c.close();
});
