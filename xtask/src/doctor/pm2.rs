//! `deploy.pm2.live`: the PM2 ecosystem file really running `tether serve` under PM2, and PM2
//! restarting it after a kill.
//!
//! PM2 is installed from npm into `target/pm2/` (once; npm must be installed — without it the
//! check fails saying so, it is not skipped) and runs with its own `PM2_HOME` in a temporary
//! folder, so it never touches a PM2 the machine may already run. The server gets a production
//! configuration of its own (a random secret, loopback trusted proxy, a free port, a store in
//! the temporary folder) through the environment of `pm2 start`, which PM2 passes on.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::supervisor::{http_get, procfs};
use crate::util::project_root;

/// The PM2 major the ecosystem file is written for.
const PM2_PACKAGE: &str = "pm2@5";

/// Installs PM2 into `target/pm2/` unless it is there; the path of its CLI.
pub fn ensure_pm2() -> Result<PathBuf> {
    let prefix = project_root().join("target").join("pm2");
    let cli = prefix.join("node_modules").join(".bin").join("pm2");
    if cli.is_file() {
        return Ok(cli);
    }
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&prefix)
        .arg(PM2_PACKAGE)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "npm is not installed; the PM2 check needs it (`apt-get install npm`, or Node.js from nodejs.org)"
        ),
        Err(err) => return Err(err).context("running npm"),
    };
    if !out.status.success() || !cli.is_file() {
        bail!(
            "`npm install {PM2_PACKAGE}` into {} failed: {}",
            prefix.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(cli)
}

/// Stops the private PM2 daemon however the check ends.
struct Daemon<'a> {
    cli: &'a Path,
    home: &'a Path,
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        // Stops the app and the daemon; a failure here leaves nothing we could do better.
        let _ = Command::new(self.cli)
            .arg("kill")
            .env("PM2_HOME", self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Starts the ecosystem file with `tether` under a private PM2, kills the server, and checks
/// that PM2 brings it back; a one-line account.
pub async fn pm2_live(tether: &Path, ecosystem: &Path) -> Result<String> {
    let cli = ensure_pm2()?;
    let tmp = tempfile::tempdir().context("a temporary folder for PM2")?;
    let home = tmp.path().join("pm2-home");
    let port = {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
        l.local_addr()?.port()
    };
    let secret: String = {
        // 48 hex characters from the kernel's randomness; never printed.
        let mut f = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
        let mut buf = [0u8; 24];
        std::io::Read::read_exact(&mut f, &mut buf).context("reading /dev/urandom")?;
        buf.iter().map(|b| format!("{b:02x}")).collect()
    };
    let pm2 = |args: &[&str]| {
        let mut cmd = Command::new(&cli);
        cmd.args(args)
            .env("PM2_HOME", &home)
            .env("TETHER_BIN", tether)
            .env("TETHER_HOME", tmp.path())
            .env("PORT", port.to_string())
            .env("TETHER_HOST", "127.0.0.1")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/data/tether.db", tmp.path().display()),
            )
            .env("TETHER_JWT_SECRET", &secret)
            .env("TETHER_TRUSTED_PROXIES", "127.0.0.1/32")
            .env("TETHER_ALLOWED_ORIGINS", "https://app.example.com")
            .stdin(Stdio::null());
        cmd
    };
    let _daemon = Daemon {
        cli: &cli,
        home: &home,
    };
    let out = pm2(&["start"])
        .arg(ecosystem)
        .output()
        .context("running `pm2 start`")?;
    if !out.status.success() {
        bail!(
            "`pm2 start {}` failed: {}",
            ecosystem.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let first = wait_live(&pm2, addr, None)
        .await
        .context("the first start")?;

    // Kill it as a crash would; PM2 must start it again (after its restart delay).
    let killed_at = Instant::now();
    Command::new("kill")
        .args(["-s", "KILL", &first.to_string()])
        .status()
        .context("running kill")?;
    let second = wait_live(&pm2, addr, Some(first))
        .await
        .context("the restart after a kill")?;
    let restarts = app_field(&pm2, "restart_time")?.unwrap_or_default();
    if restarts < 1 {
        bail!("PM2 reports {restarts} restarts after the kill");
    }
    Ok(format!(
        "PM2 ran `tether serve` (pid {first}, /health/live 200 on {addr}), restarted it {:.1} s after SIGKILL (pid {second}, restart_time {restarts})",
        killed_at.elapsed().as_secs_f64()
    ))
}

/// A field of the `tether` app's `pm2_env` from `pm2 jlist`.
fn app_field(pm2: &dyn Fn(&[&str]) -> Command, field: &str) -> Result<Option<u64>> {
    let out = pm2(&["jlist"]).output().context("running `pm2 jlist`")?;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "`pm2 jlist` printed: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let app = list
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["name"] == "tether"));
    Ok(app.and_then(|a| a["pm2_env"][field].as_u64()))
}

/// Waits until PM2 lists a `tether` pid other than `not` that is alive and whose server
/// answers `/health/live`; that pid.
async fn wait_live(
    pm2: &dyn Fn(&[&str]) -> Command,
    addr: SocketAddr,
    not: Option<u32>,
) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("not listed yet");
    while Instant::now() < deadline {
        let out = pm2(&["jlist"]).output().context("running `pm2 jlist`")?;
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let app = list
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == "tether"));
        if let Some(app) = app {
            let pid = app["pid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0);
            last = format!("status {} pid {pid}", app["pm2_env"]["status"]);
            if pid != 0 && Some(pid) != not && procfs::is_alive(pid) {
                match http_get(addr, "/health/live").await {
                    Ok((200, _)) => return Ok(pid),
                    Ok((code, body)) => last = format!("pid {pid}: /health/live {code} {body}"),
                    Err(err) => last = format!("pid {pid}: {err:#}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("no live `tether` under PM2 within 60 s ({last})")
}
