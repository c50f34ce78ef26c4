//! `cargo xtask fuzz [--seconds N] [--target NAME]`: runs the cargo-fuzz targets of `fuzz/`
//! (`decode_client`: WebSocket text frames; `publish_body`: the HTTP publish body) for a bounded
//! time each, on the nightly toolchain libFuzzer needs.
//!
//! cargo-fuzz is installed from crates.io (`cargo install cargo-fuzz`) when missing — for this
//! command only; `cargo xtask test` never needs it, since the server's attack tests run the
//! same target functions (`fuzz/src/lib.rs`) under proptest on stable. A crash leaves its input
//! in `fuzz/artifacts/<target>/` and fails the command; the corpus grows in
//! `fuzz/corpus/<target>/` (both git-ignored), starting from the valid examples in
//! `fuzz/seeds/<target>/`.
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, project_root, run as run_cmd};

/// The targets of `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 2] = ["decode_client", "publish_body"];

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Only this target (default: all).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Option<String>,
}

/// Runs each target for `--seconds`.
pub fn run(args: Args) -> Result<()> {
    let nightly = cargo(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !nightly {
        bail!("cargo fuzz needs the nightly toolchain: rustup toolchain install nightly");
    }
    let has_fuzz = cargo(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_fuzz {
        println!("cargo-fuzz is missing; installing it from crates.io (once)");
        run_cmd(&mut cargo(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz")?;
    }
    let fuzz_dir = project_root().join("fuzz");
    let targets: Vec<&str> = match &args.target {
        Some(t) => vec![t.as_str()],
        None => TARGETS.to_vec(),
    };
    for target in targets {
        println!("fuzzing {target} for {} s", args.seconds);
        // The growing corpus first (new finds go there), then the checked-in seeds.
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let mut cmd = cargo(["+nightly", "fuzz", "run", "--fuzz-dir"]);
        cmd.arg(&fuzz_dir)
            .arg(target)
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-rss_limit_mb=2048")
            .arg(format!(
                "-max_len={}",
                protocol::defaults::MAX_MESSAGE_BYTES + 1
            ));
        // Inputs just past the message limit still reach the size check. Its own target folder: nightly and sanitizer builds never mix with the workspace's.
        cmd.env("CARGO_TARGET_DIR", fuzz_dir.join("target"));
        run_cmd(&mut cmd).with_context(|| format!("fuzz target {target} failed"))?;
    }
    println!("fuzzing passed: no crash");
    Ok(())
}
