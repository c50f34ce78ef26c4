//! The open-files budget: at start `tether serve` raises its soft `RLIMIT_NOFILE` to the hard
//! limit and derives the WebSocket connection limit from it, keeping a reserve for the
//! server's own files, so the server answers `503 admission_refused` at its limit instead of
//! failing `accept` with EMFILE (`Too many open files`) while clients time out.
//!
//! Each admitted WebSocket holds one descriptor. The reserve covers what is not a WebSocket:
//! the listener, epoll and eventfds, the SQLite files of the writer and the read pool (database,
//! WAL and shared memory each), log and OTLP sockets, `/health` and `/v1` requests in flight,
//! and the connections being refused (accepted, answered `503`, closed) or still sending their
//! request head. A configured `TETHER_MAX_CONNECTIONS` above the derived cap is lowered to it,
//! with a warning; below it, it is kept.

use crate::config::Config;

/// The least number of descriptors kept for the server's own use.
pub const MIN_RESERVE: u64 = 128;
/// The reserve grows with the budget: one descriptor in this many, for the refused and
/// half-open connections a crowd at the limit brings.
pub const RESERVE_SHARE: u64 = 20;

/// The descriptor budget found at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit in force (after raising it).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The most WebSocket connections the budget allows.
    pub connection_cap: usize,
}

/// Descriptors kept back from a soft limit of `soft`.
#[must_use]
pub fn reserve(soft: u64) -> u64 {
    (soft / RESERVE_SHARE).max(MIN_RESERVE)
}

/// The most WebSocket connections a soft limit of `soft` allows (at least 1, so a tiny limit
/// still serves someone).
#[must_use]
pub fn connection_cap(soft: u64) -> usize {
    let cap = soft.saturating_sub(reserve(soft)).max(1);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Raises the soft open-files limit to the hard one and returns the budget in force.
///
/// # Errors
/// When the limits cannot be read or set (the error of `getrlimit`/`setrlimit`).
pub fn raise() -> std::io::Result<FdBudget> {
    let soft = rlimit::increase_nofile_limit(u64::MAX)?;
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    Ok(FdBudget {
        soft,
        hard,
        connection_cap: connection_cap(soft),
    })
}

/// Lowers `configured` to the budget's cap; returns the limit to use and whether it was lowered.
#[must_use]
pub fn clamp(configured: usize, budget: &FdBudget) -> (usize, bool) {
    if configured > budget.connection_cap {
        (budget.connection_cap, true)
    } else {
        (configured, false)
    }
}

/// [`raise`], then fits `config.limits.max_connections` into the budget, logging
/// `fd_limit` (info) and, when the configured limit had to be lowered,
/// `max_connections_lowered` (warn). When the limits cannot be read the configuration is kept
/// and `fd_limit_unknown` (warn) is logged.
pub fn apply(config: &mut Config) {
    let budget = match raise() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(component = "server", event = "fd_limit_unknown", error = %e);
            return;
        }
    };
    let configured = config.limits.max_connections;
    let (limit, lowered) = clamp(configured, &budget);
    config.limits.max_connections = limit;
    if lowered {
        tracing::warn!(
            component = "server",
            event = "max_connections_lowered",
            configured,
            max_connections = limit,
            fd_soft_limit = budget.soft,
            "TETHER_MAX_CONNECTIONS lowered to what the open-files limit allows"
        );
    }
    tracing::info!(
        component = "server",
        event = "fd_limit",
        fd_soft_limit = budget.soft,
        fd_hard_limit = budget.hard,
        connection_cap = budget.connection_cap,
        max_connections = limit,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_at_least_the_minimum_and_grows_with_the_budget() {
        assert_eq!(reserve(0), MIN_RESERVE);
        assert_eq!(reserve(1_024), MIN_RESERVE);
        assert_eq!(reserve(20_000), 1_000);
        assert_eq!(connection_cap(20_000), 19_000);
        assert_eq!(connection_cap(1_024), 896);
        // A limit smaller than the reserve still admits one connection.
        assert_eq!(connection_cap(50), 1);
        assert_eq!(
            connection_cap(u64::MAX),
            usize::try_from(u64::MAX - u64::MAX / 20).unwrap()
        );
    }

    #[test]
    fn a_configured_limit_above_the_cap_is_lowered_and_one_below_is_kept() {
        let budget = FdBudget {
            soft: 20_000,
            hard: 20_000,
            connection_cap: connection_cap(20_000),
        };
        assert_eq!(clamp(19_990, &budget), (19_000, true));
        assert_eq!(clamp(10_000, &budget), (10_000, false));
        assert_eq!(clamp(19_000, &budget), (19_000, false));
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let budget = raise().expect("getrlimit/setrlimit work on this platform");
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(budget.soft, soft);
        assert_eq!(budget.hard, hard);
        // Linux lets an unprivileged process raise its soft limit up to the hard one, but the
        // kernel caps it at fs.nr_open even when the hard limit is "unlimited".
        if hard != rlimit::INFINITY {
            assert_eq!(soft, hard);
        }
        assert_eq!(budget.connection_cap, connection_cap(soft));
    }
}
