// Tether under PM2: the seed's `pm2 start ... --max-memory-restart 500M --restart-delay 3000
// --exp-backoff-restart-delay=100` and "Max restart attempts: 10", for the `tether` binary.
//
//   pm2 start deploy/pm2/ecosystem.config.js      # TETHER_BIN=/path/to/tether to override
//   pm2 logs tether --raw | jq 'select(.event)'   # CONTRACT §7 JSON lines
//   pm2 save && pm2 startup                        # survive a reboot
//
// Where PM2's semantics differ from what the seed meant, a comment says so. docs/deployment.md
// has the walk-through; docs/runbook.md how to operate it.

"use strict";

const path = require("path");

// The binary to run: an installed one, or the one `cargo build --release -p server` made.
const bin =
  process.env.TETHER_BIN ||
  path.resolve(__dirname, "..", "..", "target", "release", "tether");

// The drain window of the server (CONTRACT §2, TETHER_DRAIN_MS, default 5000 ms).
const drainMs = Number(process.env.TETHER_DRAIN_MS || 5000);

module.exports = {
  apps: [
    {
      name: "tether",
      script: bin,
      args: ["serve"],
      // A native binary, not a Node script: no interpreter, fork mode, one instance (the SQLite
      // store belongs to one process; `cluster` mode is for Node programs only anyway).
      interpreter: "none",
      exec_mode: "fork",
      instances: 1,
      cwd: process.env.TETHER_HOME || path.resolve(__dirname, "..", ".."),

      autorestart: true,

      // Seed: "Memory limit: 500MB". PM2 polls memory every 30 s (PM2_WORKER_INTERVAL) and,
      // past the limit, restarts the process gracefully (SIGTERM → drain → exit), so a fast
      // leak can overshoot between two polls. "500M" is 500 MiB.
      max_memory_restart: "500M",

      // Seed: "Restart delay: 3000ms" and `--exp-backoff-restart-delay=100`. PM2 applies only
      // one of the two: when exp_backoff_restart_delay is set it wins, so the real delays are
      // 100 ms, 150 ms, 225 ms, … (×1.5, capped at 15 s; reset after 30 s of stable uptime),
      // not 3000 ms growing. Both are kept as the seed wrote them; to get "3 s growing" set
      // exp_backoff_restart_delay to 3000 instead.
      restart_delay: 3000,
      exp_backoff_restart_delay: 100,

      // Seed: "Max restart attempts: 10". PM2 counts only *unstable* restarts, runs shorter than
      // min_uptime, and only within min_uptime × max_restarts of the first start; the default
      // min_uptime of 1 s would let a server that crashes after two seconds loop forever. With
      // 30 s, a run that dies within half a minute counts, the counting window is 300 s, and the
      // tenth such crash leaves the app `errored` (`pm2 restart tether` to try again).
      max_restarts: 10,
      min_uptime: "30s",

      // Seed: "CPU limit: 80%". PM2 has no CPU limit: watch `pm2 monit`, or run under systemd
      // (CPUQuota=80%) or Kubernetes (cpu: 800m) where a hard limit is needed.

      // Shutdown: the server drains for drainMs after SIGTERM, then exits 0 (CONTRACT §5.6).
      // PM2 sends kill_signal, waits kill_timeout, then SIGKILLs: it must outlast the drain.
      kill_signal: "SIGTERM",
      kill_timeout: drainMs + 5000,

      // The server writes one JSON object per line on stdout (CONTRACT §7); keep it verbatim.
      time: false,
      merge_logs: true,

      env: {
        TETHER_ENV: "production",
        TETHER_LOG_FORMAT: "json",
        TETHER_DRAIN_MS: String(drainMs),
        // TETHER_JWT_SECRET_FILE, TETHER_ALLOWED_ORIGINS, TETHER_TRUSTED_PROXIES, DATABASE_URL:
        // set them in the environment that runs `pm2 start` or in an `env_production` block;
        // never put the secret itself in this file.
      },
    },
  ],
};
