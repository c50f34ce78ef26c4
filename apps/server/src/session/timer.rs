//! The session machine's one timer table: every deadline of a connection, keyed by [`Timer`],
//! on the machine's own clock (quinn-proto's `connection/timer.rs` shape).
//!
//! The driver sleeps until [`TimerTable::next`] and then calls `Machine::handle_timeout`;
//! the machine asks [`TimerTable::expired`] which deadlines are due. One table instead of a
//! tokio timer per deadline: each armed timer costs memory on every idle connection.
use std::time::Instant;

/// A connection's deadlines, most urgent first (the order [`TimerTable::expired`] yields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// `exp` plus the verification leeway passed: close 4401.
    TokenExpired = 0,
    /// `token_expiring` is due (the expiry notice before `exp`).
    TokenExpiring = 1,
    /// Nothing received for the dead-link time: check and close 1001, or re-arm.
    DeadLink = 2,
    /// The next WebSocket ping.
    Ping = 3,
    /// No `hello` within the connection timeout: close 4408.
    Hello = 4,
}

impl Timer {
    /// Every timer, most urgent first.
    pub const ALL: [Self; 5] = [
        Self::TokenExpired,
        Self::TokenExpiring,
        Self::DeadLink,
        Self::Ping,
        Self::Hello,
    ];
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerTable {
    at: [Option<Instant>; 5],
}

impl TimerTable {
    /// Arms (or moves) `timer`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// When `timer` fires, if armed.
    #[must_use]
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// Disarms everything (the connection is closing).
    pub fn clear(&mut self) {
        self.at = [None; 5];
    }

    /// The earliest armed deadline.
    #[must_use]
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Disarms and returns the most urgent timer due at `now`, if any.
    pub fn expired(&mut self, now: Instant) -> Option<Timer> {
        let due = Timer::ALL
            .into_iter()
            .find(|t| self.get(*t).is_some_and(|at| at <= now))?;
        self.stop(due);
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_urgent_first_when_both_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::Ping, t0 + 3 * s);
        table.set(Timer::DeadLink, t0 + 5 * s);
        table.set(Timer::TokenExpired, t0 + 3 * s);
        assert_eq!(table.next(), Some(t0 + 3 * s));
        assert_eq!(table.expired(t0 + 2 * s), None, "nothing due yet");
        assert_eq!(table.expired(t0 + 3 * s), Some(Timer::TokenExpired));
        assert_eq!(table.expired(t0 + 3 * s), Some(Timer::Ping));
        assert_eq!(table.expired(t0 + 3 * s), None);
        assert_eq!(table.next(), Some(t0 + 5 * s));
        table.clear();
        assert_eq!(table.next(), None);
    }
}
