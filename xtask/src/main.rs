//! `cargo xtask`: Tether's task runner.
//!
//! Every subcommand lives in its own file, exposing `pub struct Args` (a `clap::Args`) and
//! `pub fn run(args: Args) -> anyhow::Result<()>`. Adding one is a two-line change here: a
//! `mod` line and a line in the `tasks!` list below (its doc comment becomes the `--help` text).
//! Shared helpers (step output, the workspace root, the wasm target) are in `util.rs`.

mod test;
mod tidy;
mod util;
// h-web: the dashboard build, its dev web server and the real-browser test.
mod browser;
mod web;
mod webserve;
// h-client: the recovery drill and its fault-injecting proxy.
mod chaos;
mod faultproxy;
// h-ops: the development stack, its supervisor and tunnel monitor, and the operations checks.
mod dev;
mod doctor;
// h-security: cargo-fuzz targets for a bounded time.
mod fuzz;
mod recover;
mod supervisor;
// h-server-rt: the server's load generator.
mod bench;
mod postgres;

use clap::Parser;

/// Declares the subcommand enum and its dispatch from one list of `Variant(module)` entries, so
/// that a new subcommand cannot be declared without being dispatched.
macro_rules! tasks {
    ($($(#[$doc:meta])* $variant:ident($module:ident),)*) => {
        #[derive(clap::Subcommand)]
        enum Task {
            $($(#[$doc])* $variant($module::Args),)*
        }

        impl Task {
            fn run(self) -> anyhow::Result<()> {
                match self {
                    $(Task::$variant(args) => $module::run(args),)*
                }
            }
        }
    };
}

tasks! {
    /// Everything CI checks: format, tidy, clippy (native and wasm32), tests, web, chaos smoke.
    Test(test),
    /// Only the house-rule checks (`//!` headers, banned test attributes, dependency direction).
    Tidy(tidy),
    /// Build the web dashboard (`web build`) or run its real-browser scenario (`web test`).
    Web(web),
    /// The connection-recovery drill: clients publish and subscribe while the server is killed.
    Chaos(chaos),
    /// Boot the stack in the startup order of CONTRACT §9 (`--tunnel ngrok` for a public URL).
    Dev(dev),
    /// The deployment checklist: PASS/WARN/FAIL per check (`--post URL` after deploying).
    Doctor(doctor),
    /// The runbook's recovery: clean up, restart tunnel and server, verify health.
    Recover(recover),
    /// Fuzz the frame decoder and the HTTP publish body (nightly, cargo-fuzz) for a bounded time.
    Fuzz(fuzz),
    /// Server benchmark over loopback: set-up rate, fan-out throughput/latency, idle memory.
    Bench(bench),
}

/// Tether's task runner; run it as `cargo xtask <task>`.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

fn main() -> std::process::ExitCode {
    match Cli::parse().task.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Printed by hand rather than returned from `main`: anyhow's `Debug` adds a stack
            // backtrace whenever RUST_BACKTRACE is set, which buries the one line that matters.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
