//! The pid files under `target/dev/`, and stopping what a previous `cargo xtask dev` left.
//!
//! The seed's `cleanup.sh` killed processes by name; CONTRACT §9 narrows that to "only those
//! pids": each supervised process writes `<name>.pid` with its pid *and* its command line, and
//! cleanup signals a pid only while `/proc/<pid>/cmdline` still matches what was recorded, so a
//! pid reused by an unrelated process after a reboot is never touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use protocol::Timestamp;
use serde::{Deserialize, Serialize};

use super::{procfs, signal_pid};

/// One pid file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// What it is: `xtask`, `server`, `ngrok`.
    pub component: String,
    /// Its process id.
    pub pid: u32,
    /// Its command line when it was started, from `/proc/<pid>/cmdline`.
    pub cmdline: Vec<String>,
    /// When it was recorded.
    pub started: Timestamp,
}

/// Records `pid` (with its current command line) in `path`.
pub fn write(path: &Path, component: &str, pid: u32) -> Result<()> {
    let record = Record {
        component: component.to_owned(),
        pid,
        cmdline: settled_cmdline(pid),
        started: super::now(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&record).context("encoding the pid record")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The command line of a just-started `pid`. Right after a spawn, `/proc/<pid>/cmdline` can
/// still be empty or show the forked copy of *our* command line until the child's `exec` has
/// completed; recording that would make a later cleanup leave the process alone. Polls briefly
/// until it differs from ours.
fn settled_cmdline(pid: u32) -> Vec<String> {
    let ours = procfs::cmdline(std::process::id());
    let mut last = Vec::new();
    for _ in 0..200 {
        match procfs::cmdline(pid) {
            Some(args) if Some(&args) != ours.as_ref() || pid == std::process::id() => {
                return args;
            }
            Some(args) => last = args,
            None if !procfs::is_alive(pid) => break,
            None => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    last
}

/// Removes `path` if it still records `pid` (a newer run may have replaced it).
pub fn remove(path: &Path, pid: u32) {
    if read(path).is_ok_and(|r| r.pid == pid) {
        // Already gone is as good as removed.
        let _ = std::fs::remove_file(path);
    }
}

/// Reads one pid file.
pub fn read(path: &Path) -> Result<Record> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// What cleanup did with one pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    /// The recorded process was running and has been stopped.
    Stopped {
        /// Its component.
        component: String,
        /// Its pid.
        pid: u32,
        /// Whether it needed SIGKILL after ignoring SIGTERM.
        killed: bool,
    },
    /// The recorded process had already exited; the stale file was removed.
    NotRunning {
        /// Its component.
        component: String,
        /// Its pid.
        pid: u32,
    },
    /// The pid now belongs to another program; it was left alone and the file removed.
    PidReused {
        /// Its component.
        component: String,
        /// The pid.
        pid: u32,
        /// What runs under that pid now.
        now_running: String,
    },
    /// The file could not be read; it was removed.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

impl std::fmt::Display for Cleaned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cleaned::Stopped {
                component,
                pid,
                killed,
            } => {
                let how = if *killed {
                    "killed (ignored SIGTERM)"
                } else {
                    "stopped"
                };
                write!(
                    f,
                    "{component} (pid {pid}) left running by a previous run: {how}"
                )
            }
            Cleaned::NotRunning { component, pid } => {
                write!(
                    f,
                    "{component} (pid {pid}) had already exited; stale pid file removed"
                )
            }
            Cleaned::PidReused {
                component,
                pid,
                now_running,
            } => write!(
                f,
                "{component}'s pid {pid} now belongs to `{now_running}`; left alone, stale pid file removed"
            ),
            Cleaned::Unreadable { path, error } => {
                write!(f, "{}: unreadable ({error}); removed", path.display())
            }
        }
    }
}

/// Stops every process recorded in a `*.pid` file of `dir`: the previous `xtask` first (it
/// then stops its own children in order), then the rest. SIGTERM, then SIGKILL after
/// `timeout`. A missing `dir` means nothing to clean.
pub async fn cleanup(dir: &Path, timeout: Duration) -> Vec<Cleaned> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pid"))
        .collect();
    // `xtask.pid` first: a previous dev session stops its children itself, gracefully.
    files.sort_by_key(|p| (p.file_stem().is_none_or(|s| s != "xtask"), p.clone()));

    let mut outcomes = Vec::new();
    for path in files {
        if !path.exists() {
            // Removed meanwhile: the previous `xtask`, stopped above, cleans up its own files.
            continue;
        }
        let record = match read(&path) {
            Ok(record) => record,
            Err(err) => {
                let _ = std::fs::remove_file(&path); // Unreadable: nothing to act on.
                outcomes.push(Cleaned::Unreadable {
                    path,
                    error: format!("{err:#}"),
                });
                continue;
            }
        };
        outcomes.push(stop_recorded(&record, timeout).await);
        remove(&path, record.pid);
    }
    outcomes
}

/// Stops one recorded process if it is still the same program.
async fn stop_recorded(record: &Record, timeout: Duration) -> Cleaned {
    let component = record.component.clone();
    let pid = record.pid;
    if !procfs::is_alive(pid) {
        return Cleaned::NotRunning { component, pid };
    }
    match procfs::cmdline(pid) {
        Some(now) if now == record.cmdline => {}
        now => {
            return Cleaned::PidReused {
                component,
                pid,
                now_running: now.map_or_else(|| "?".to_owned(), |args| args.join(" ")),
            };
        }
    }
    signal_pid(pid, "TERM").await;
    if wait_gone(pid, timeout).await {
        return Cleaned::Stopped {
            component,
            pid,
            killed: false,
        };
    }
    signal_pid(pid, "KILL").await;
    wait_gone(pid, Duration::from_secs(2)).await;
    Cleaned::Stopped {
        component,
        pid,
        killed: true,
    }
}

/// Polls until `pid` is gone, at most `timeout`; whether it went.
async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !procfs::is_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !procfs::is_alive(pid)
}
