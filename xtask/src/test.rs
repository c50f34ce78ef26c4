//! `cargo xtask test`: everything CI checks, in the order that fails fastest.
//!
//! Steps: fmt → tidy → clippy (native, default members) → clippy for wasm32 (the sans-IO
//! crates) → tests (cargo-nextest) → doctests → web (wasm build + browser tests) → js (the
//! npm package and its Node tests) → chaos smoke → bench smoke.
//! Every step shares one target directory (the caller's, default `target/`), runs in the dev
//! profile and builds each thing once; the first failure stops the run with the step's name.

use anyhow::{Result, bail};

use crate::{
    tidy,
    util::{self, Metadata, Step, WASM_TARGET},
};

/// Arguments of `cargo xtask test`. By default every step runs.
#[derive(clap::Args)]
pub struct Args {
    /// Skip a step by name (repeatable), e.g. `--skip web` on a machine without a browser.
    #[arg(long, value_name = "STEP")]
    skip: Vec<String>,
}

/// Runs the steps in order and stops at the first failure.
pub fn run(args: Args) -> Result<()> {
    let metadata = Metadata::load(false)?;
    let nextest = util::cargo_has_subcommand("nextest");

    let steps = vec![
        Step::new("fmt", "formatting (cargo fmt --check)", fmt)
            .hint("run `cargo fmt --all` and commit the result"),
        Step::new(
            "tidy",
            "house rules: //! headers, banned attributes, dependency direction",
            tidy::check,
        ),
        Step::new("clippy", "lints, native, default members", clippy_native)
            .hint("fix the warnings above; clippy runs with `-D warnings`"),
        Step::new(
            "clippy-wasm",
            "lints on wasm32 for the sans-IO crates",
            || clippy_wasm(&metadata),
        )
        .hint("the sans-IO crates must build for wasm32-unknown-unknown without warnings"),
        Step::new("tests", "unit and integration tests", move || {
            tests(nextest)
        }),
        Step::new(
            "doctests",
            "documentation examples of the libraries",
            || doctests(&metadata, nextest),
        ),
        // ---- web (owned by h-web, `xtask/src/web.rs`) -------------------------------------
        // The wasm release build of apps/web, then the real-browser scenario against a real
        // server (Chromium installed with apt-get when missing and running as root).
        Step::new(
            "web",
            "web app wasm build and browser tests",
            crate::web::test_step,
        )
        .hint("screenshots and logs are in target/browser/"),
        // ---- js (owned by js, `xtask/src/js.rs`) -------------------------------------------
        // @tether/client built (wasm inlined in an ES module, .d.ts) and its Node tests
        // against a real `tether` on loopback, reusing the debug binary the tests built.
        Step::new(
            "js",
            "@tether/client: package build and Node tests",
            crate::js::test_step,
        ),
        // ---- chaos smoke (owned by h-client, `xtask/src/chaos.rs`) ---------------------------
        // A short connection-recovery drill: a real server killed and restarted under live
        // clients; nothing may be lost or duplicated.
        Step::new(
            "chaos",
            "chaos smoke: kill and restart the server",
            crate::chaos::test_step,
        ),
        // A tiny benchmark run on the debug build, so `cargo xtask bench` keeps working; the
        // figures of docs/benchmarks.md come from full release runs, never from tests.
        Step::new(
            "bench",
            "benchmark smoke: a tiny load run against the debug build",
            crate::bench::test_step,
        ),
        // -------------------------------------------------------------------------------------
    ];

    let known: Vec<&str> = steps.iter().map(Step::name).collect();
    if let Some(unknown) = args.skip.iter().find(|s| !known.contains(&s.as_str())) {
        bail!(
            "unknown step `{unknown}` for --skip; the steps are: {}",
            known.join(", ")
        );
    }
    let steps = steps
        .into_iter()
        .map(|step| {
            let skip = args.skip.iter().any(|s| s == step.name());
            step.skip(skip)
        })
        .collect();
    util::run_steps("xtask test", steps)
}

fn fmt() -> Result<()> {
    util::run(&mut util::cargo(["fmt", "--all", "--", "--check"]))
}

fn clippy_native() -> Result<()> {
    // No `--workspace`: the default members are everything native; apps/web is left out of
    // them on purpose and is built by the web step for wasm32 only.
    util::run(&mut util::cargo([
        "clippy",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn clippy_wasm(metadata: &Metadata) -> Result<()> {
    let present: Vec<&str> = tidy::SANS_IO
        .iter()
        .copied()
        .filter(|name| metadata.has_member(name))
        .collect();
    if present.is_empty() {
        println!(
            "  none of {} is in the workspace yet",
            tidy::SANS_IO.join(", ")
        );
        return Ok(());
    }
    util::ensure_wasm_target()?;
    let mut cmd = util::cargo(["clippy", "--target", WASM_TARGET, "--lib"]);
    for name in present {
        cmd.args(["--package", name]);
    }
    cmd.args(["--", "-D", "warnings"]);
    util::run(&mut cmd)
}

fn tests(nextest: bool) -> Result<()> {
    // The signature tests compare with Twilio's own validator: required, not skipped.
    let python = crate::twilio_python::ensure()?;
    let with_python = |mut cmd: std::process::Command| {
        cmd.env("TETHER_TEST_PYTHON", &python)
            .env("TETHER_REQUIRE_TWILIO_PYTHON", "1");
        cmd
    };
    if nextest {
        // Output is inherited, so nextest's closing `Summary [...] N tests run` line is
        // printed; CI reads it to see that tests actually ran.
        util::run(&mut with_python(util::cargo([
            "nextest",
            "run",
            "--no-fail-fast",
        ])))
    } else {
        println!("  note: cargo-nextest is not installed; falling back to `cargo test`");
        println!("        (install it with `cargo install cargo-nextest --locked`)");
        util::run(&mut with_python(util::cargo(["test", "--no-fail-fast"])))
    }
}

fn doctests(metadata: &Metadata, nextest: bool) -> Result<()> {
    if !nextest {
        println!("  already run by `cargo test` in the tests step");
        return Ok(());
    }
    // nextest does not run doctests; cargo does, for library targets only. No `--package`
    // list: the same package selection as the tests step unifies features the same way, so
    // every dependency built there is reused here.
    if !metadata.default_members().any(|p| p.has_lib()) {
        println!("  no library in the default members");
        return Ok(());
    }
    util::run(&mut util::cargo(["test", "--doc", "--no-fail-fast"]))
}
