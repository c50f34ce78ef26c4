//! [`Timestamp`]: a UTC instant with millisecond precision, written as RFC 3339 on the wire.
//!
//! The protocol carries wall-clock times (`server_time`, `published_at`, `expires_at`) as
//! RFC 3339 strings in UTC (CONTRACT §5), always with three fractional digits and `Z`, e.g.
//! `2026-11-27T14:00:00.123Z`. Parsing accepts any RFC 3339 offset and converts to UTC.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Milliseconds since the Unix epoch, UTC. Reading the clock is the caller's business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// Why a string is not a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 time: {0}")]
pub struct TimestampError(String);

// The wire form: always UTC, always milliseconds.
const WIRE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

impl Timestamp {
    /// The instant `ms` milliseconds after 1970-01-01T00:00:00Z.
    pub const fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down), as JWT claims count time.
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The instant `secs` seconds after the epoch.
    pub const fn from_unix_seconds(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// This instant moved by `ms` milliseconds (negative moves back), saturating.
    #[must_use]
    pub const fn add_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub const fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Parses any RFC 3339 time and converts it to UTC milliseconds.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let parsed =
            OffsetDateTime::parse(text, &Rfc3339).map_err(|e| TimestampError(e.to_string()))?;
        let ms = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms)
            .map(Self)
            .map_err(|_| TimestampError("out of range".to_owned()))
    }

    fn to_datetime(self) -> OffsetDateTime {
        // Every i64 millisecond count below ±9999 years fits; clamp beyond so formatting never fails.
        const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
        let ms = self.0.clamp(MIN_MS, MAX_MS);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .expect("clamped to the range time supports")
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self
            .to_datetime()
            .format(WIRE_FORMAT)
            .expect("the wire format only uses fields every UTC datetime has");
        f.write_str(&text)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_and_z() {
        let t = Timestamp::from_unix_millis(1_795_788_000_123);
        assert_eq!(t.to_string(), "2026-11-27T14:00:00.123Z");
    }

    #[test]
    fn parses_offsets_into_utc() {
        let t = Timestamp::parse("2026-11-27T15:00:00.5+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T14:00:00.500Z");
    }

    #[test]
    fn rejects_garbage() {
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("").is_err());
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }

    #[test]
    fn extreme_values_still_format() {
        assert_eq!(
            Timestamp::from_unix_millis(i64::MAX).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(i64::MIN).to_string(),
            "0000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn seconds_round_down() {
        assert_eq!(Timestamp::from_unix_millis(1999).unix_seconds(), 1);
        assert_eq!(Timestamp::from_unix_millis(-1).unix_seconds(), -1);
    }
}
