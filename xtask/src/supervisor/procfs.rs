//! Reading Linux's `/proc`: a process's resident memory and CPU time, its command line, and
//! which process holds a TCP port.
//!
//! Everything here is a plain read of text files; a process that vanished between two reads
//! simply yields `None`, never an error, because that race is normal for a supervisor.

use std::fs;
use std::path::Path;

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`), or `None` when the
/// process is gone or is a zombie (which has no `VmRSS` line).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:   1234 kB` line of a `status` file, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let unit = words.next().unwrap_or("kB");
    let factor = match unit {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        _ => 1,
    };
    Some(value.saturating_mul(factor))
}

/// CPU time `pid` has used so far (user + system), in clock ticks (`utime` + `stime` of
/// `/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// Fields 14 and 15 of a `stat` line. The command name (field 2) is in parentheses and may
/// contain spaces and parentheses itself, so counting starts after the *last* `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); utime is field 14, i.e. index 11 here.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's CPU time so far, in the same clock ticks as [`cpu_ticks`], summed over all
/// CPUs (first line of `/proc/stat`), and the number of CPUs.
///
/// Dividing a process's tick delta by `total delta / cpus` gives its share of one CPU without
/// knowing the tick rate (`CLK_TCK`), which would otherwise need `sysconf` (unsafe FFI).
pub fn machine_ticks() -> Option<(u64, u32)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(&stat)
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u32)> {
    let mut lines = stat.lines();
    let first = lines.next()?;
    let total = first
        .strip_prefix("cpu ")?
        .split_whitespace()
        // guest and guest_nice (fields 9, 10) are already counted in user and nice.
        .take(8)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    let cpus = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((total, u32::try_from(cpus.max(1)).unwrap_or(1)))
}

/// Samples a process's CPU use as a percentage of one CPU (like `top`), between two calls.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Option<(u64, u64)>,
}

impl CpuSampler {
    /// The share of one CPU `pid` used since the previous call; `None` on the first call or
    /// when the process is gone.
    pub fn sample(&mut self, pid: u32) -> Option<f64> {
        let proc_ticks = cpu_ticks(pid)?;
        let (machine, cpus) = machine_ticks()?;
        let previous = self.last.replace((proc_ticks, machine));
        let (prev_proc, prev_machine) = previous?;
        let machine_delta = machine.checked_sub(prev_machine)?;
        if machine_delta == 0 {
            return None;
        }
        let per_cpu = machine_delta as f64 / f64::from(cpus);
        Some(proc_ticks.saturating_sub(prev_proc) as f64 / per_cpu * 100.0)
    }
}

/// The command line of `pid` as its arguments (`/proc/<pid>/cmdline`, NUL-separated).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        // Kernel threads and zombies have an empty command line.
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

/// Whether a process `pid` exists (and is not a zombie waiting to be reaped).
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A process found holding a TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    /// Its process id.
    pub pid: u32,
    /// Its command line, joined with spaces (or its `comm` name when that is unreadable).
    pub command: String,
}

/// Which processes have a listening TCP socket (IPv4 or IPv6) on `port`.
///
/// Reads the socket inodes of `/proc/net/tcp{,6}` in state LISTEN, then looks for a process
/// with a file descriptor `socket:[inode]` among `/proc/*/fd`. Processes of other users are only
/// visible to root; an empty list with a busy port means "held by something we may not see".
pub fn port_holders(port: u16) -> Vec<PortHolder> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut holders = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return holders;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|target| target.to_str().map(|t| wanted.iter().any(|w| w == t)))
                .unwrap_or(false)
        });
        if holds {
            holders.push(PortHolder {
                pid,
                command: describe(pid, &entry.path()),
            });
        }
    }
    holders
}

/// A readable name for a process: its command line, or its `comm` name.
fn describe(pid: u32, dir: &Path) -> String {
    if let Some(args) = cmdline(pid) {
        return args.join(" ");
    }
    fs::read_to_string(dir.join("comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// The inodes of the LISTEN sockets on `port` in one `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *state == LISTEN && inode != 0).then_some(inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\tsh\nVmPeak:\t  9000 kB\nVmRSS:\t    1536 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(1536 * 1024));
        assert_eq!(parse_vm_rss("Name:\tzombie\n"), None);
    }

    #[test]
    fn stat_ticks_survive_parentheses_in_the_name() {
        // A command name with a space and a `)`: counting must start after the last `)`.
        let stat =
            "4242 (we ird) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 2 3";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn machine_ticks_sum_the_first_line_and_count_cpus() {
        let stat = "cpu  10 0 20 100 5 0 0 0 7 0\ncpu0 5 0 10 50 2 0 0 0 0 0\ncpu1 5 0 10 50 3 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_machine_ticks(stat), Some((135, 2)));
    }

    #[test]
    fn finds_listening_sockets_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0\n   1: 0100007F:1F91 0100007F:C000 01 00000000:00000000 00:00000000 00000000     0        0 6666 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 8081), vec![5555]);
        assert!(listening_inodes(table, 3000).is_empty());
    }

    #[test]
    fn names_this_process_as_the_holder_of_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("bound address").port();
        let holders = port_holders(port);
        assert!(
            holders.iter().any(|h| h.pid == std::process::id()),
            "{holders:?}"
        );
        drop(listener);
        assert!(port_holders(port).is_empty());
    }

    #[test]
    fn this_process_is_alive_and_has_a_command_line() {
        assert!(is_alive(std::process::id()));
        assert!(cmdline(std::process::id()).is_some_and(|args| !args.is_empty()));
        assert!(rss_bytes(std::process::id()).is_some_and(|rss| rss > 0));
    }
}
