//! `cargo xtask js build|test`: the `@tether/client` npm package (CONTRACT §13).
//!
//! `build` compiles `crates/client-js` to wasm with the same cargo invocation and the same
//! linked `wasm-bindgen-cli-support` as the dashboard (`web::cargo_build_wasm`,
//! `web::bindgen_web`), inlines the wasm as base64 into an ES module (so the package needs no
//! fetch, no `fs` and no bundler plugin: it loads the same way in a bundler, a plain
//! `<script type=module>` and Node.js ≥ 20), compiles the TypeScript driver with the `tsc`
//! that `package-lock.json` pins, and lays the package out in `target/js/pkg`.
//!
//! `test` builds it, makes sure the debug `tether` binary is current (a no-op after the
//! workspace tests built it) and runs the Node tests (`node --test`) in
//! `crates/client-js/test/` against real servers the tests start on ephemeral loopback ports.
//!
//! npm packages come only from the npm registry, through `npm ci` and the committed lock file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;

use crate::util::{self, ensure_wasm_target, project_root};
use crate::web::{self, BindgenOptions};

/// The wasm-bindgen module name inside the package (`tether_core.js`).
const CORE_NAME: &str = "tether_core";

/// The longest one Node test may run before the runner fails it.
const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `cargo xtask js`: build the package or build and test it.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: JsCommand,
}

#[derive(clap::Subcommand)]
enum JsCommand {
    /// Build the npm package into `target/js/pkg/`.
    Build,
    /// Build it, then run the Node tests against a real `tether` on loopback.
    Test,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct JsBuild {
    /// The package folder (`package.json`, `index.js`, `index.d.ts`, …).
    pub pkg: PathBuf,
}

/// Runs `cargo xtask js build|test`.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        JsCommand::Build => build().map(|_| ()),
        JsCommand::Test => test_step(),
    }
}

/// The package source folder.
pub fn source_dir() -> PathBuf {
    project_root().join("crates/client-js")
}

/// Where `build` writes the installable package.
pub fn pkg_dir() -> PathBuf {
    web::target_dir().join("js").join("pkg")
}

/// The step `cargo xtask test` runs: build the package and run the Node tests.
pub fn test_step() -> Result<()> {
    let built = build()?;
    let tether = crate::chaos::server::build()?;
    let dir = source_dir();
    let tests: Vec<PathBuf> = std::fs::read_dir(dir.join("test"))
        .context("listing crates/client-js/test")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    ensure!(!tests.is_empty(), "no *.test.mjs in crates/client-js/test");
    let mut sorted = tests;
    sorted.sort();
    let tmp = web::target_dir().join("js").join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("--test")
        // One file at a time: each starts its own servers, and the machine has few cores.
        .arg("--test-concurrency=1")
        // Every wait inside the tests has its own deadline; this bounds a test that hangs.
        .arg(format!("--test-timeout={}", TEST_TIMEOUT.as_millis()))
        .args(&sorted)
        .env("TETHER_BIN", &tether)
        .env("TETHER_JS_PKG", built.pkg.join("index.js"))
        .env("TETHER_TEST_TMP", &tmp);
    util::run(&mut cmd).context("the Node tests of @tether/client failed")
}

/// Builds the package into [`pkg_dir`] and prints its size.
pub fn build() -> Result<JsBuild> {
    ensure_wasm_target()?;
    let src = source_dir();
    npm_ci(&src)?;

    let wasm = web::cargo_build_wasm("client-js")?;
    let staging = web::target_dir().join("js").join("build");
    let pkg = pkg_dir();
    for dir in [&staging, &pkg] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let options = BindgenOptions {
        typescript: true,
        default_wasm_url: false,
    };
    web::bindgen_web(&wasm, &staging, CORE_NAME, options)?;
    write_inline_wasm(&staging)?;
    for entry in std::fs::read_dir(src.join("ts")).context("listing crates/client-js/ts")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "ts") {
            let name = path.file_name().context("a file name")?;
            std::fs::copy(&path, staging.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }

    // The driver: strict TypeScript compiled to ES2022 modules with declarations. Files on the
    // command line, so the dev tsconfig.json (which type-checks `ts/` in place) is not used.
    let mut tsc = Command::new("node");
    tsc.current_dir(&src)
        .arg(src.join("node_modules/typescript/bin/tsc"))
        .args(["--strict", "--declaration", "--skipLibCheck"])
        .args([
            "--target",
            "es2022",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
        ])
        .args(["--lib", "es2022,dom"])
        .arg("--rootDir")
        .arg(&staging)
        .arg("--outDir")
        .arg(&pkg)
        .arg(staging.join("index.ts"));
    util::run(&mut tsc).context("compiling the TypeScript driver")?;

    for name in [
        format!("{CORE_NAME}.js"),
        format!("{CORE_NAME}.d.ts"),
        format!("{CORE_NAME}_wasm.js"),
        format!("{CORE_NAME}_wasm.d.ts"),
    ] {
        std::fs::copy(staging.join(&name), pkg.join(&name))
            .with_context(|| format!("copying {name} into the package"))?;
    }
    std::fs::copy(src.join("README.md"), pkg.join("README.md")).context("copying README.md")?;
    write_manifest(&src, &pkg)?;

    let (raw_bytes, gzip_bytes) = package_size(&pkg)?;
    println!(
        "js: wrote {} ({raw_bytes} bytes of JavaScript, {gzip_bytes} gzipped)",
        pkg.display()
    );
    Ok(JsBuild { pkg })
}

/// `npm ci` when `node_modules` is missing or older than the lock file.
fn npm_ci(src: &Path) -> Result<()> {
    let lock = src.join("package-lock.json");
    let installed = src.join("node_modules/.package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&installed), modified(&lock)) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    let mut cmd = Command::new("npm");
    cmd.current_dir(src).args(["ci", "--no-audit", "--no-fund"]);
    util::run(&mut cmd).context("installing the package's dev dependencies (npm ci)")
}

/// `tether_core_wasm.js`: the wasm as a base64 string, and its declaration.
fn write_inline_wasm(staging: &Path) -> Result<()> {
    let wasm_path = staging.join(format!("{CORE_NAME}_bg.wasm"));
    let wasm =
        std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&wasm);
    let js = format!(
        "// Generated by `cargo xtask js build`: crates/client-js compiled to wasm, inlined so\n\
         // the package loads without fetch, fs or a bundler plugin.\n\
         export const wasmBase64 = \"{b64}\";\n"
    );
    std::fs::write(staging.join(format!("{CORE_NAME}_wasm.js")), js)?;
    std::fs::write(
        staging.join(format!("{CORE_NAME}_wasm.d.ts")),
        "/** The package's wasm, base64. */\nexport declare const wasmBase64: string;\n",
    )?;
    Ok(())
}

/// The published `package.json`: the source manifest without what only development needs.
fn write_manifest(src: &Path, pkg: &Path) -> Result<()> {
    let text = std::fs::read_to_string(src.join("package.json")).context("reading package.json")?;
    let mut manifest: serde_json::Value =
        serde_json::from_str(&text).context("parsing crates/client-js/package.json")?;
    let obj = manifest
        .as_object_mut()
        .context("package.json is not an object")?;
    for key in ["devDependencies", "scripts", "private"] {
        obj.remove(key);
    }
    let out = serde_json::to_string_pretty(&manifest)? + "\n";
    std::fs::write(pkg.join("package.json"), out).context("writing the package manifest")
}

/// Bytes of every `.js` file in `pkg`, raw and gzip -9.
fn package_size(pkg: &Path) -> Result<(u64, u64)> {
    let mut js = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(pkg)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "js"))
        .collect();
    names.sort();
    for name in names {
        js.extend(std::fs::read(&name)?);
    }
    let mut gzip = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip to measure the package")?;
    gzip.stdin
        .take()
        .context("gzip's stdin")?
        .write_all(&js)
        .context("feeding gzip")?;
    let out = gzip.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok((js.len() as u64, out.stdout.len() as u64))
}
