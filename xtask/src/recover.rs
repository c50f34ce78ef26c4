//! `cargo xtask recover`: the runbook's "Connection Loss" recovery, automated for the
//! development stack: clean up, restart the tunnel, restart the server, verify health — each
//! step reported with its outcome and duration.
//!
//! The seed did this with `./cleanup.sh`, `./start-ngrok.sh`, `pm2 restart ws-server` and
//! `curl /health`. Here the processes belong to `cargo xtask dev`'s supervisor, so recovery
//! stops whatever the pid files of `target/dev/` record (only those pids, only while their
//! command line still matches), then starts `dev` again in the background with the arguments
//! the previous run had (from its pid file; `--tunnel`/`--no-web` override), and follows it
//! until the tunnel, the server and `/health` are back. The new `dev` keeps running after
//! `recover` returns; its output is in `target/dev/dev.out`.
//!
//! Production is recovered by its own supervisor (`docs/runbook.md`: `systemctl restart`,
//! `pm2 restart tether`, `kubectl rollout restart`).

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::dev::{NGROK_API_PORT, SERVER_PORT, Steps, WEB_PORT, check_port, dev_dir};
use crate::supervisor::{http_get, pidfile, procfs};

/// `cargo xtask recover`: restart the development stack and verify it.
#[derive(clap::Args)]
pub struct Args {
    /// Restart with a tunnel even if the previous run had none (`ngrok`).
    #[arg(long, value_name = "KIND")]
    tunnel: Option<String>,
    /// Restart without the web app even if the previous run had it.
    #[arg(long)]
    no_web: bool,
    /// How long to wait for the stack to come back (a first build can be slow), in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// Runs `cargo xtask recover`.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(recover(args))
}

async fn recover(args: Args) -> Result<()> {
    let dir = dev_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);

    // What the previous run was started with, before cleanup removes the record.
    let previous = pidfile::read(&dir.join("xtask.pid")).ok();
    let mut dev_args = previous_dev_args(previous.as_ref().map(|r| r.cmdline.as_slice()));
    if let Some(kind) = &args.tunnel
        && !dev_args.iter().any(|a| a == "--tunnel")
    {
        dev_args.extend(["--tunnel".into(), kind.into()]);
    }
    if args.no_web && !dev_args.iter().any(|a| a == "--no-web") {
        dev_args.push("--no-web".into());
    }
    let with_tunnel = dev_args.iter().any(|a| a == "--tunnel");
    let with_web = !dev_args.iter().any(|a| a == "--no-web");

    let mut steps = Steps::new(
        "recover",
        &["cleanup", "relaunch", "tunnel", "server", "health"],
    );
    let result = async {
        steps
            .run("cleanup", "stop what target/dev/*.pid records", async {
                let cleaned = pidfile::cleanup(&dir, Duration::from_secs(15)).await;
                if cleaned.is_empty() {
                    println!("    nothing was running");
                }
                for c in &cleaned {
                    println!("    {c}");
                }
                let mut ports = vec![SERVER_PORT];
                if with_web {
                    ports.push(WEB_PORT);
                }
                if with_tunnel {
                    ports.push(NGROK_API_PORT);
                }
                let busy: Vec<String> = ports
                    .into_iter()
                    .filter_map(|p| check_port(p).err().map(|why| format!("{p}: {why}")))
                    .collect();
                if !busy.is_empty() {
                    bail!(
                        "still busy after cleanup (not started by `cargo xtask dev`): {}",
                        busy.join("; ")
                    );
                }
                Ok(())
            })
            .await?;

        let launched_at = SystemTime::now();
        let pid = steps
            .run(
                "relaunch",
                "start `cargo xtask dev` again in the background",
                async {
                    let pid = launch_dev(&dir, &dev_args)?;
                    println!(
                        "    pid {pid}: xtask {} (output: target/dev/dev.out)",
                        dev_args
                            .iter()
                            .map(|a| a.to_string_lossy())
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    Ok(pid)
                },
            )
            .await?;

        if with_tunnel {
            steps
                .run(
                    "tunnel",
                    "wait for ngrok to be verified (PUBLIC_URL)",
                    async {
                        let url =
                            wait_fresh_file(&dir.join("public_url"), launched_at, pid, deadline)
                                .await?;
                        println!("    PUBLIC_URL={}", url.trim());
                        Ok(())
                    },
                )
                .await?;
        } else {
            steps.skip("tunnel", "the previous run had no --tunnel");
        }

        steps
            .run("server", "wait for the supervised server to start", async {
                let record =
                    wait_pid_file(&dir.join("server.pid"), launched_at, pid, deadline).await?;
                println!("    pid {}", record.pid);
                Ok(())
            })
            .await?;

        steps
            .run("health", "verify GET /health answers 200", async {
                let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, SERVER_PORT));
                loop {
                    match http_get(addr, "/health").await {
                        Ok((200, body)) => {
                            println!("    {}", body.trim());
                            break;
                        }
                        other => {
                            check_alive(pid)?;
                            if Instant::now() >= deadline {
                                bail!("/health did not answer 200 in time: {other:?}");
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                if with_web {
                    println!("    the web app follows on http://localhost:{WEB_PORT} once built");
                }
                Ok(())
            })
            .await
    }
    .await;
    steps.summary();
    match result {
        Ok(()) => {
            println!("recover: the stack is back; `tail -f target/dev/dev.out` to follow it");
            Ok(())
        }
        Err(err) => {
            let out = std::fs::read_to_string(dir.join("dev.out")).unwrap_or_default();
            let tail: Vec<&str> = out.lines().rev().take(25).collect();
            if !tail.is_empty() {
                println!("\nthe last lines of target/dev/dev.out:");
                for line in tail.iter().rev() {
                    println!("    {line}");
                }
            }
            Err(err)
        }
    }
}

/// The arguments of the previous `dev` (`dev --tunnel ngrok …`), or plain `dev`.
fn previous_dev_args(cmdline: Option<&[String]>) -> Vec<OsString> {
    let Some(cmdline) = cmdline else {
        return vec!["dev".into()];
    };
    match cmdline.iter().position(|a| a == "dev") {
        Some(i) => cmdline[i..].iter().map(OsString::from).collect(),
        None => vec!["dev".into()],
    }
}

/// Starts this xtask binary with `args` in its own session-less process group, detached from
/// our terminal, its output appended to `target/dev/dev.out`; its pid.
#[allow(clippy::zombie_processes)] // It outlives us by design; `init` reaps it after we exit.
fn launch_dev(dir: &Path, args: &[OsString]) -> Result<u32> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("dev.out"))
        .context("opening target/dev/dev.out")?;
    let err = out.try_clone().context("duplicating the output file")?;
    let child = std::process::Command::new(exe)
        .args(args)
        .current_dir(crate::util::project_root())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Not in our process group: our Ctrl-C or exit must not stop the recovered stack.
        .process_group(0)
        .spawn()
        .context("starting `cargo xtask dev`")?;
    // Deliberately not waited for: it outlives us, and its pid file is how it is found again.
    Ok(child.id())
}

/// Fails when the relaunched `dev` has exited.
fn check_alive(pid: u32) -> Result<()> {
    if procfs::is_alive(pid) {
        Ok(())
    } else {
        bail!("the relaunched `cargo xtask dev` (pid {pid}) exited")
    }
}

/// Waits until `path` was written after `since`; its content.
async fn wait_fresh_file(
    path: &Path,
    since: SystemTime,
    pid: u32,
    deadline: Instant,
) -> Result<String> {
    loop {
        let fresh = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if fresh && let Ok(text) = std::fs::read_to_string(path) {
            return Ok(text);
        }
        check_alive(pid)?;
        if Instant::now() >= deadline {
            bail!("{} was not written in time", path.display());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits for a pid file written after `since` whose process runs.
async fn wait_pid_file(
    path: &Path,
    since: SystemTime,
    pid: u32,
    deadline: Instant,
) -> Result<pidfile::Record> {
    let since_ms = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    loop {
        if let Ok(record) = pidfile::read(path)
            && record.started.unix_millis() >= since_ms
            && procfs::is_alive(record.pid)
        {
            return Ok(record);
        }
        check_alive(pid)?;
        if Instant::now() >= deadline {
            bail!("{} did not appear in time", path.display());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_runs_arguments_are_replayed() {
        let recorded: Vec<String> = ["/repo/target/debug/xtask", "dev", "--tunnel", "ngrok"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            previous_dev_args(Some(&recorded)),
            ["dev", "--tunnel", "ngrok"].map(OsString::from)
        );
        assert_eq!(previous_dev_args(None), [OsString::from("dev")]);
        let odd: Vec<String> = vec!["xtask".into()];
        assert_eq!(previous_dev_args(Some(&odd)), [OsString::from("dev")]);
    }

    #[tokio::test]
    async fn waiting_for_a_pid_file_stops_when_the_launched_process_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut gone = tokio::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = gone.id().expect("pid");
        gone.wait().await.expect("wait");
        let err = wait_pid_file(
            &dir.path().join("server.pid"),
            SystemTime::now(),
            pid,
            Instant::now() + Duration::from_secs(20),
        )
        .await
        .expect_err("the launcher is gone");
        assert!(err.to_string().contains("exited"), "{err}");
    }
}
