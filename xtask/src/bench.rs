//! `cargo xtask bench`: a load generator of our own against the real `tether` binary over
//! loopback, alone or (`--peers`) beside a bare tokio-tungstenite server and Node `ws`.
//!
//! The servers run as child processes (their own fd budget and their own RSS, read from
//! `/proc/<pid>/status`); this process is the load generator. Alone, it measures (`solo`):
//!
//! 1. connection set-up rate: WebSocket upgrade + `hello` → `welcome`, with a fixed number of
//!    attempts in flight;
//! 2. publish → deliver throughput and latency (p50/p99) with 1, 100 and 1,000 subscribers on
//!    one channel: one publisher keeps a window of publishes in flight, every message carries
//!    its send time, every subscriber records the delay at arrival;
//! 3. server memory per idle, authenticated, subscribed connection at 10,000 connections.
//!
//! With `--peers` (`peers`): the side-by-side table of issue 14, repeated and pinned.
//!
//! The servers are built with `--release` unless `--debug` is given; `--smoke` is a tiny run
//! for `cargo xtask test` (debug build of `tether` only, small counts) that only checks the
//! numbers come out. It leaves the peers out: they need a build of `bare-peer` and an npm
//! install, too slow for every test run; they run only behind `--peers`. Figures and commands are in `docs/benchmarks.md`.
//!
//! Layout: `bench/server.rs` starts the processes under test, `bench/load.rs` holds the client
//! side, `bench/scenarios.rs` the measurements, `bench/solo.rs` and `bench/peers.rs` the two
//! reports. Further scenarios go in a file of their own under `bench/` with one line below.
use anyhow::Result;

mod fdmax;
mod load;
mod peers;
mod scenarios;
mod server;
mod solo;
mod storm;
mod twilio;

/// `cargo xtask bench` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A tiny run (debug build, small counts) that only checks the benchmark works.
    #[arg(long)]
    smoke: bool,
    /// Benchmark a debug build instead of `--release`.
    #[arg(long)]
    debug: bool,
    /// Tether beside the bare tokio-tungstenite server and Node `ws`, pinned, repeated; one
    /// table with the ratios to the bare server.
    #[arg(long)]
    peers: bool,
    /// With `--peers`: how many times each scenario runs (median and range are printed).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Idle connections for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Messages published per fan-out scenario (fewer with 1,000 subscribers).
    #[arg(long, default_value_t = 5_000)]
    messages: usize,
    /// Connections opened for the set-up rate.
    #[arg(long, default_value_t = 2_000)]
    setups: usize,
    /// Instead of the scenarios: attempt this many connections against Tether's open-files
    /// cap and count admitted, refused (503) and failed ones (`bench/fdmax.rs`).
    #[arg(long)]
    fd_max: Option<usize>,
    /// Instead of the scenarios: a reconnect storm of this many native clients, the server
    /// SIGKILLed and restarted (`bench/storm.rs`).
    #[arg(long)]
    storm: Option<usize>,
    /// Instead of the scenarios: this many simulated Twilio calls at once through
    /// `builtin:echo` (`bench/twilio.rs`); 200 is 10,000 frames/s each way.
    #[arg(long)]
    calls: Option<usize>,
    /// With `--calls`: seconds of audio per call.
    #[arg(long, default_value_t = 20.0)]
    call_seconds: f64,
    /// Run only these scenarios (`setup`, `fanout`, `memory`); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The `cargo xtask test` step: a tiny run on the debug build the tests step already made, so
/// the benchmark cannot rot between real runs (figures from it mean nothing).
pub fn test_step() -> Result<()> {
    run(Args {
        smoke: true,
        debug: true,
        peers: false,
        reps: 1,
        idle: 0,
        messages: 0,
        setups: 0,
        fd_max: None,
        storm: None,
        calls: None,
        call_seconds: 0.0,
        only: Vec::new(),
    })
}

pub fn run(args: Args) -> Result<()> {
    if args.smoke {
        solo::run(&solo::Plan {
            release: false,
            idle: 50,
            messages: 200,
            setups: 50,
            fanouts: vec![1, 10],
            only: args.only,
        })?;
        return twilio::run(false, 2, 1.0);
    }
    if let Some(calls) = args.calls {
        return twilio::run(!args.debug, calls, args.call_seconds);
    }
    if let Some(attempts) = args.fd_max {
        return fdmax::run(!args.debug, attempts);
    }
    if let Some(clients) = args.storm {
        return storm::run(!args.debug, clients);
    }
    if args.peers {
        return peers::run(&peers::Plan::full(!args.debug, args.reps.max(1)));
    }
    solo::run(&solo::Plan {
        release: !args.debug,
        idle: args.idle,
        messages: args.messages,
        setups: args.setups,
        fanouts: vec![1, 100, 1_000],
        only: args.only,
    })
}
