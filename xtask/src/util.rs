//! Helpers shared by the xtask subcommands: the workspace root, running commands with visible
//! step output and durations, reading `cargo metadata`, and making sure the wasm target exists.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The browser target the shared crates and the web app build for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// The workspace root: the folder holding the root `Cargo.toml`.
///
/// Taken from where xtask was compiled, so it is right whatever folder `cargo xtask` runs in.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: xtask/ sits one level below the workspace root")
        .to_path_buf()
}

/// A `cargo` command to run in the workspace root.
///
/// Plain `cargo` through `PATH` (the rustup proxy), so `cargo fmt`, `cargo clippy` and
/// `cargo nextest` resolve to the toolchain that `rust-toolchain.toml` pins. The target
/// directory is whatever the caller's environment says (default `target/`), shared by every
/// step so nothing is built twice.
pub fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(project_root());
    cmd
}

/// The command line as a user would type it, for step output and error messages.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            let _ = write!(line, " '{arg}'"); // Writing to a String cannot fail.
        } else {
            let _ = write!(line, " {arg}"); // Writing to a String cannot fail.
        }
    }
    line
}

/// Runs `cmd` with inherited stdout/stderr, echoing it first; fails when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("  $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; on failure the error carries its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Whether `cargo <subcommand> --version` works, e.g. to find out if cargo-nextest is installed.
pub fn cargo_has_subcommand(subcommand: &str) -> bool {
    cargo([subcommand, "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Makes sure the `wasm32-unknown-unknown` target of the pinned toolchain is installed.
///
/// rustup does not always install the targets `rust-toolchain.toml` lists (for example when
/// the toolchain was already present), so this checks and installs it, saying so.
pub fn ensure_wasm_target() -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["target", "list", "--installed"])
        .current_dir(project_root());
    let installed = match list.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => bail!(
            "`rustup target list --installed` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            println!("  note: rustup not found; assuming the {WASM_TARGET} target is installed");
            return Ok(());
        }
        Err(err) => return Err(err).context("could not start `rustup`"),
    };
    if installed.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    println!("  the {WASM_TARGET} target is missing; installing it with rustup");
    run(Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .current_dir(project_root()))
}

/// One named step of a task, run by [`run_steps`].
pub struct Step<'a> {
    name: &'static str,
    about: &'static str,
    hint: Option<&'static str>,
    skip: bool,
    action: Box<dyn FnOnce() -> Result<()> + 'a>,
}

impl<'a> Step<'a> {
    /// A step called `name` (short, used by `--skip`), described by `about`.
    pub fn new(
        name: &'static str,
        about: &'static str,
        action: impl FnOnce() -> Result<()> + 'a,
    ) -> Self {
        Step {
            name,
            about,
            hint: None,
            skip: false,
            action: Box::new(action),
        }
    }

    /// What to tell the user when this step fails (e.g. the command that fixes it).
    pub fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// The step's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Marks the step as skipped: it is listed but not run.
    pub fn skip(mut self, skip: bool) -> Self {
        self.skip = skip;
        self
    }
}

/// How a step ended, for the summary.
enum Outcome {
    Ok(Duration),
    Skipped,
    Failed(Duration),
    NotRun,
}

/// Runs `steps` in order, printing each with its outcome and duration, and stops at the first
/// failure with an error naming the step. A summary table closes the output either way.
pub fn run_steps(task: &str, steps: Vec<Step<'_>>) -> Result<()> {
    let started = Instant::now();
    let total = steps.len();
    let mut outcomes: Vec<(&'static str, Outcome)> = Vec::with_capacity(total);
    let mut failure = None;
    for (index, step) in steps.into_iter().enumerate() {
        let number = index + 1;
        if failure.is_some() {
            outcomes.push((step.name, Outcome::NotRun));
            continue;
        }
        if step.skip {
            println!("==> [{number}/{total}] {}: skipped", step.name);
            outcomes.push((step.name, Outcome::Skipped));
            continue;
        }
        println!("==> [{number}/{total}] {}: {}", step.name, step.about);
        let step_started = Instant::now();
        let result = (step.action)();
        let took = step_started.elapsed();
        match result {
            Ok(()) => {
                println!("<== [{number}/{total}] {}: ok in {}", step.name, secs(took));
                outcomes.push((step.name, Outcome::Ok(took)));
            }
            Err(err) => {
                println!(
                    "<== [{number}/{total}] {}: FAILED after {}",
                    step.name,
                    secs(took)
                );
                outcomes.push((step.name, Outcome::Failed(took)));
                failure = Some((step.name, step.hint, err));
            }
        }
    }

    println!();
    println!("{task}: summary");
    for (name, outcome) in &outcomes {
        let (word, took) = match outcome {
            Outcome::Ok(took) => ("ok", secs(*took)),
            Outcome::Skipped => ("skipped", String::new()),
            Outcome::Failed(took) => ("FAILED", secs(*took)),
            Outcome::NotRun => ("not run", String::new()),
        };
        println!("  {name:<14} {word:<8} {took:>8}");
    }
    println!("  {:<14} {:<8} {:>8}", "total", "", secs(started.elapsed()));

    match failure {
        None => {
            println!("{task}: all steps passed");
            Ok(())
        }
        Some((name, hint, err)) => {
            if let Some(hint) = hint {
                println!("hint: {hint}");
            }
            Err(err.context(format!("{task}: step `{name}` failed")))
        }
    }
}

/// A duration as seconds with one decimal, e.g. `12.3s`.
pub fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// The parts of `cargo metadata --format-version 1` the tasks read.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    /// Every package in the graph (only the members with `--no-deps`).
    pub packages: Vec<Package>,
    /// Ids of the workspace members.
    pub workspace_members: Vec<String>,
    /// Ids of the default members (what a bare `cargo build` in the root builds).
    #[serde(default)]
    pub workspace_default_members: Vec<String>,
    /// The resolved dependency graph (absent with `--no-deps`).
    pub resolve: Option<Resolve>,
    /// The workspace root folder.
    pub workspace_root: PathBuf,
}

/// One package of [`Metadata`].
#[derive(Debug, Deserialize)]
pub struct Package {
    /// Package name, e.g. `protocol`.
    pub name: String,
    /// Opaque package id, the key of the resolve graph.
    pub id: String,
    /// Path of its `Cargo.toml`.
    pub manifest_path: PathBuf,
    /// Its targets (lib, bins, tests…).
    pub targets: Vec<Target>,
}

/// One target of a [`Package`].
#[derive(Debug, Deserialize)]
pub struct Target {
    /// Kinds such as `lib`, `bin`, `test`, `proc-macro`.
    pub kind: Vec<String>,
}

/// The resolved graph of [`Metadata`].
#[derive(Debug, Deserialize)]
pub struct Resolve {
    /// One node per package.
    pub nodes: Vec<Node>,
}

/// One package's resolved dependencies.
#[derive(Debug, Deserialize)]
pub struct Node {
    /// The package id.
    pub id: String,
    /// Its dependencies with their kinds.
    pub deps: Vec<NodeDep>,
}

/// One resolved dependency edge.
#[derive(Debug, Deserialize)]
pub struct NodeDep {
    /// The dependency's package id.
    pub pkg: String,
    /// How it is used; `kind` is `None` for normal, `"dev"` or `"build"` otherwise.
    pub dep_kinds: Vec<DepKind>,
}

/// The kind of one dependency edge.
#[derive(Debug, Deserialize)]
pub struct DepKind {
    /// `None` for a normal dependency, `Some("dev")` or `Some("build")` otherwise.
    pub kind: Option<String>,
}

impl Metadata {
    /// `cargo metadata` for the whole workspace; with `deps` the resolved graph too.
    pub fn load(deps: bool) -> Result<Metadata> {
        let mut cmd = cargo(["metadata", "--format-version", "1"]);
        if !deps {
            cmd.arg("--no-deps");
        }
        let json = output(&mut cmd)?;
        serde_json::from_str(&json).context("could not parse `cargo metadata` output")
    }

    /// The workspace members.
    pub fn members(&self) -> impl Iterator<Item = &Package> {
        self.packages
            .iter()
            .filter(|p| self.workspace_members.contains(&p.id))
    }

    /// The default members, or every member when the manifest names none.
    pub fn default_members(&self) -> impl Iterator<Item = &Package> {
        let defaults = if self.workspace_default_members.is_empty() {
            &self.workspace_members
        } else {
            &self.workspace_default_members
        };
        self.packages.iter().filter(|p| defaults.contains(&p.id))
    }

    /// Whether a workspace member called `name` exists.
    pub fn has_member(&self, name: &str) -> bool {
        self.members().any(|p| p.name == name)
    }
}

impl Package {
    /// Whether the package has a library target.
    pub fn has_lib(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.kind.iter().any(|k| k == "lib" || k == "rlib"))
    }
}

/// Whether xtask runs as root (it may then install Debian packages itself).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs Debian `packages` with apt-get (update first) when running as root; otherwise
/// fails with the exact command to run. `what` names the need in the messages.
pub fn apt_install(what: &str, packages: &[&str]) -> Result<()> {
    let install = format!(
        "apt-get update && apt-get install -y {}",
        packages.join(" ")
    );
    if !is_root() {
        bail!("{what} is missing; install it with: sudo sh -c '{install}'");
    }
    println!("{what} is missing; running `{install}`");
    let mut update = vec!["update"];
    let mut add = vec!["install", "-y"];
    add.extend_from_slice(packages);
    for args in [std::mem::take(&mut update), add] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("`apt-get {}` failed ({status})", args.join(" "));
        }
    }
    Ok(())
}
