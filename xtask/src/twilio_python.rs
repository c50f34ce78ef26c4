//! The official Twilio helper library for the signature tests: `target/twilio-venv`, a Python
//! virtual environment with `twilio` from PyPI, so `apps/server`'s signature tests compare our
//! signer with Twilio's own `RequestValidator` on every `cargo xtask test` (they also check an
//! independent stdlib-HMAC implementation, which needs only Python 3). Python 3 and its `venv`
//! module come from Debian's packages when missing and running as root.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{apt_install, project_root, run};

/// The pinned helper library (the version the vectors were checked with).
pub const TWILIO_PYPI: &str = "twilio==9.13.0";

/// The venv's interpreter, creating the venv and installing [`TWILIO_PYPI`] when needed.
pub fn ensure() -> Result<PathBuf> {
    let venv = project_root().join("target").join("twilio-venv");
    let python = venv.join("bin").join("python");
    if imports_twilio(&python) {
        return Ok(python);
    }
    if !works(Command::new("python3").args(["-m", "venv", "--help"])) {
        apt_install("Python 3 with venv", &["python3", "python3-venv"])?;
    }
    println!("  creating {} with {TWILIO_PYPI} (PyPI)", venv.display());
    let created = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .context("running python3 -m venv")?;
    if !created.success() {
        // Debian's python3 without ensurepip: the venv module needs python3-venv.
        apt_install("Python's venv module", &["python3-venv"])?;
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
    }
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        TWILIO_PYPI,
    ]))?;
    if !imports_twilio(&python) {
        bail!(
            "{} cannot import twilio after installing it",
            python.display()
        );
    }
    Ok(python)
}

fn imports_twilio(python: &std::path::Path) -> bool {
    python.exists() && works(Command::new(python).args(["-c", "import twilio"]))
}

fn works(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
