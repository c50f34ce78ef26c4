//! Channel names and the globs that grant rights on them (CONTRACT §5.1, §5.3).
//!
//! A channel name is 1–128 characters of `A-Z a-z 0-9 _ - : .`, starting with a letter or a
//! digit. A glob is an exact channel name, or a prefix followed by a single trailing `*`
//! (`room:*`, `*`); no other wildcard exists.
use serde::{Deserialize, Deserializer, Serialize};

/// Longest channel name, in characters (all allowed characters are ASCII, so also bytes).
pub const MAX_CHANNEL_LEN: usize = 128;

/// Why a string is not a valid channel name or glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// The name is the empty string.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`].
    #[error("channel name is longer than {MAX_CHANNEL_LEN} characters")]
    TooLong,
    /// The first character is not an ASCII letter or digit.
    #[error("channel name must start with a letter or digit")]
    BadStart,
    /// A character outside `A-Z a-z 0-9 _ - : .` (a `*` only at the end of a glob).
    #[error("channel name contains {0:?}; allowed are A-Z a-z 0-9 _ - : .")]
    BadChar(char),
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.')
}

/// Checks `name` against the channel-name rule without allocating.
pub fn validate_channel_name(name: &str) -> Result<(), ChannelNameError> {
    let first = name.chars().next().ok_or(ChannelNameError::Empty)?;
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelNameError::TooLong);
    }
    if !first.is_ascii_alphanumeric() {
        return Err(ChannelNameError::BadStart);
    }
    match name.chars().find(|&c| !allowed(c)) {
        Some(bad) => Err(ChannelNameError::BadChar(bad)),
        None => Ok(()),
    }
}

/// A validated channel name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ChannelName(String);

impl ChannelName {
    /// Validates and wraps `name`.
    pub fn parse(name: &str) -> Result<Self, ChannelNameError> {
        validate_channel_name(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The owned name.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for ChannelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ChannelNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        validate_channel_name(&raw).map_err(serde::de::Error::custom)?;
        Ok(Self(raw))
    }
}

/// A right-granting pattern: an exact channel name, or a prefix ending in `*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ChannelGlob(String);

impl ChannelGlob {
    /// Validates a glob: `*`, `prefix*` (the prefix obeys the channel-name characters and
    /// start rule, and may be shorter than a full name), or an exact channel name.
    pub fn parse(glob: &str) -> Result<Self, ChannelNameError> {
        match glob.strip_suffix('*') {
            Some("") => {}
            Some(prefix) => {
                if prefix.len() >= MAX_CHANNEL_LEN {
                    return Err(ChannelNameError::TooLong);
                }
                validate_channel_name(prefix)?;
            }
            None => validate_channel_name(glob)?,
        }
        Ok(Self(glob.to_owned()))
    }

    /// Whether this glob grants `channel`.
    pub fn matches(&self, channel: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => self.0 == channel,
        }
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ChannelGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_contract_examples() {
        for ok in ["room:1", "a", "9", "A-b_c:d.e", &"x".repeat(128)] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(ChannelName::parse(""), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::parse(&"x".repeat(129)),
            Err(ChannelNameError::TooLong)
        );
        assert_eq!(ChannelName::parse(":room"), Err(ChannelNameError::BadStart));
        assert_eq!(ChannelName::parse("_room"), Err(ChannelNameError::BadStart));
        assert_eq!(
            ChannelName::parse("room 1"),
            Err(ChannelNameError::BadChar(' '))
        );
        assert_eq!(
            ChannelName::parse("room*"),
            Err(ChannelNameError::BadChar('*'))
        );
        assert_eq!(ChannelName::parse("é"), Err(ChannelNameError::BadStart));
        assert_eq!(
            ChannelName::parse("aé"),
            Err(ChannelNameError::BadChar('é'))
        );
        assert_eq!(
            ChannelName::parse("a/b"),
            Err(ChannelNameError::BadChar('/'))
        );
    }

    #[test]
    fn globs_match_exact_and_prefix() {
        let star = ChannelGlob::parse("*").unwrap();
        let room = ChannelGlob::parse("room:*").unwrap();
        let exact = ChannelGlob::parse("room:1").unwrap();
        assert!(star.matches("anything"));
        assert!(room.matches("room:1") && room.matches("room:"));
        assert!(!room.matches("roomy") && !room.matches("lobby"));
        assert!(exact.matches("room:1") && !exact.matches("room:10"));
    }

    #[test]
    fn rejects_bad_globs() {
        for bad in ["", "**", "room*:1", "*room", ":*", "room *", "r*m"] {
            assert!(ChannelGlob::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<ChannelGlob>(r#""a b""#).is_err());
    }

    proptest! {
        #[test]
        fn any_valid_name_is_matched_by_itself_and_star(name in "[A-Za-z0-9][A-Za-z0-9_:.-]{0,127}") {
            let parsed = ChannelName::parse(&name).unwrap();
            prop_assert!(ChannelGlob::parse(parsed.as_str()).unwrap().matches(&name));
            prop_assert!(ChannelGlob::parse("*").unwrap().matches(&name));
        }

        #[test]
        fn validation_never_panics(s in any::<String>()) {
            let _ = ChannelName::parse(&s);
            let _ = ChannelGlob::parse(&s);
        }
    }
}
