// A graceful server stop (SIGTERM): the client gets `reconnect` with `after_ms`, then 1012,
// and waits the advised time (plus the session's spread of up to 10 %; not a failure, not its
// own backoff) before the next attempt;
// once the server is back it is connected again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Server, pkg, until, tap } from "./support.mjs";

const { TetherClient } = pkg;

test("1012: the advised wait, not counted as a failure", async (t) => {
  const server = new Server({ drainMs: 1500 });
  await server.start();
  t.after(() => server.stop());
  const wire = tap();
  // Attempts against the draining, then stopped server fail fast: keep the budget and the
  // breaker out of the way of the restart.
  const c = new TetherClient({ initialRetryDelay: 50, maxRetryDelay: 250, maxRetryAttempts: 100, breakerThreshold: 100, url: server.url,
    token: server.token("advice"), WebSocket: wire.WebSocket });
  t.after(() => c.close());
  const attempts = [];
  c.on("attempt", (a) => attempts.push({ ...a, at: performance.now(), failed: c.metrics().failed_attempts }));
  await until("connected", () => c.state.state === "CONNECTED");
  const sockets = wire.made.length;

  const exited = server.kill("SIGTERM");
  await until("advised attempt", () => attempts.some((a) => a.cause === "server_advice"));
  const advice = wire.frames.find((f) => f.frame.type === "reconnect");
  assert.ok(advice, "a reconnect frame came first");
  assert.equal(advice.frame.reason, "shutdown");
  const advised = attempts.find((a) => a.cause === "server_advice");
  // The advised time plus up to 10 % (so a crowd told the same number still spreads).
  const after = advice.frame.after_ms;
  assert.ok(advised.delayMs >= after && advised.delayMs <= Math.ceil(after * 1.1), `${advised.delayMs} in [${after}, ${after} × 1.1]`);
  assert.equal(advised.failed, 0, "the advised close is not a failed attempt");
  assert.equal(c.state.label, "Reconnecting...");
  await until("next socket", () => wire.made.length > sockets);
  // Honoured: the next socket was not opened before the advised wait was over.
  assert.ok(wire.made[sockets] - advised.at >= advised.delayMs - 2, `${wire.made[sockets] - advised.at} >= ${advised.delayMs}`);

  const e = await exited;
  assert.equal(e.code, 0, "a drained server exits 0");
  await server.start();
  await until("connected again", () => c.state.state === "CONNECTED", 15000);
});
