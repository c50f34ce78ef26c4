//! The Twilio call records the [`super::Store`] keeps (CONTRACT §10.4): what a resume needs to
//! join a dropped stream to its call, after a restart too. Backends implement
//! [`super::Store::call_put`], [`super::Store::call_get`], [`super::Store::call_consume_token`]
//! and [`super::Store::calls_active`] over the `calls` table of migration `0002_calls.sql`.

use protocol::Timestamp;
use serde_json::Value;

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// TwiML issued or a stream attached: the call is live.
    Active,
    /// The stream ended without Twilio's `stop`: `/twilio/voice/after` may resume it.
    Dropped,
    /// Over: `stop` seen, the agent hung up, Tether chose to end it, or resumes are spent.
    Ended,
}

impl CallState {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Dropped => "dropped",
            Self::Ended => "ended",
        }
    }

    /// From the stored spelling (unknown text reads as `Ended`, the safe choice).
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "dropped" => Self::Dropped,
            _ => Self::Ended,
        }
    }
}

/// One call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// Twilio's `AccountSid`.
    pub account_sid: String,
    /// The current (or last) media stream's `streamSid`.
    pub stream_sid: Option<String>,
    /// Where the call stands.
    pub state: CallState,
    /// Why it ended (`stop`, `agent_hangup`, `resumes_exhausted`, …).
    pub end_reason: Option<String>,
    /// Streams re-established so far.
    pub resumes: u32,
    /// SHA-256 (hex) of the call token not yet used; `None` once a stream consumed it.
    pub token_digest: Option<String>,
    /// When that token stops being valid.
    pub token_expires_at: Option<Timestamp>,
    /// The stream's `customParameters` minus `callToken`, replayed to a relinked agent.
    pub custom_parameters: Value,
    /// When the call reached Tether.
    pub started_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}
