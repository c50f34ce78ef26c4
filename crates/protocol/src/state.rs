//! The five connection states of CONTRACT §8 and the label a UI shows for each.
use serde::{Deserialize, Serialize};

/// Where a client connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectionState {
    /// First attempt, never connected yet.
    Connecting,
    /// `welcome` received.
    Connected,
    /// Connection lost; waiting for or making the next attempt.
    Reconnecting,
    /// Not trying: closed on request, or the network reports offline.
    Disconnected,
    /// Attempts spent, or 4401 with no way to get a new token. Left only by an explicit retry
    /// or the network coming back online.
    Failed,
}

impl ConnectionState {
    /// Every state.
    pub const ALL: [ConnectionState; 5] = [
        Self::Connecting,
        Self::Connected,
        Self::Reconnecting,
        Self::Disconnected,
        Self::Failed,
    ];

    /// The UI label of CONTRACT §8 (`Connected`, `Connecting...`, `Reconnecting...`, `Offline`).
    pub const fn label(self) -> &'static str {
        match self {
            Self::Connecting => "Connecting...",
            Self::Connected => "Connected",
            Self::Reconnecting => "Reconnecting...",
            Self::Disconnected | Self::Failed => "Offline",
        }
    }

    /// The state's name as logged and serialized (`CONNECTING`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "CONNECTING",
            Self::Connected => "CONNECTED",
            Self::Reconnecting => "RECONNECTING",
            Self::Disconnected => "DISCONNECTED",
            Self::Failed => "FAILED",
        }
    }

    /// Whether the client is trying to (re)connect in this state.
    pub const fn is_trying(self) -> bool {
        matches!(self, Self::Connecting | Self::Reconnecting)
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_the_contract() {
        let labels: Vec<_> = ConnectionState::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            [
                "Connecting...",
                "Connected",
                "Reconnecting...",
                "Offline",
                "Offline"
            ]
        );
    }

    #[test]
    fn names_serialize_screaming() {
        for s in ConnectionState::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
