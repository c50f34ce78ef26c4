//! JWT claims (CONTRACT §5.1): who the client is and which channels it may use.
//!
//! Only the claims type lives here; signing and verifying belong to the server and the tools,
//! so this crate stays free of crypto and builds for wasm.
use serde::{Deserialize, Serialize};

use crate::channel::ChannelGlob;

/// The claims Tether reads from a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: the publisher identity used for deduplication.
    pub sub: String,
    /// Expiry, seconds since the epoch. Required.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issuer, checked when the server is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, checked when the server is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Channel rights. Absent: no channel rights at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<ChannelRights>,
    /// Operator rights (`/v1/admin/*`, purging a channel).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// The JWT `aud` claim: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience string.
    One(String),
    /// A list of audiences.
    Many(Vec<String>),
}

/// Globs granting subscribe and publish rights.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRights {
    /// Channels the holder may subscribe to and read history of.
    #[serde(default)]
    pub subscribe: Vec<ChannelGlob>,
    /// Channels the holder may publish to.
    #[serde(default)]
    pub publish: Vec<ChannelGlob>,
}

impl Claims {
    /// Whether these claims allow subscribing to (and reading history of) `channel`.
    pub fn can_subscribe(&self, channel: &str) -> bool {
        self.channels
            .as_ref()
            .is_some_and(|r| r.subscribe.iter().any(|g| g.matches(channel)))
    }

    /// Whether these claims allow publishing to `channel`.
    pub fn can_publish(&self, channel: &str) -> bool {
        self.channels
            .as_ref()
            .is_some_and(|r| r.publish.iter().any(|g| g.matches(channel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_channels_claim_means_no_rights() {
        let c: Claims = serde_json::from_str(r#"{"sub":"u1","exp":10}"#).unwrap();
        assert!(!c.can_subscribe("room:1"));
        assert!(!c.can_publish("room:1"));
        assert!(!c.admin);
    }

    #[test]
    fn rights_follow_globs() {
        let c: Claims = serde_json::from_str(
            r#"{"sub":"u1","exp":10,"iat":1,"channels":{"subscribe":["room:*"],"publish":["room:1"]}}"#,
        )
        .unwrap();
        assert!(c.can_subscribe("room:2"));
        assert!(!c.can_subscribe("lobby"));
        assert!(c.can_publish("room:1"));
        assert!(!c.can_publish("room:2"));
    }

    #[test]
    fn missing_sub_or_exp_is_an_error() {
        assert!(serde_json::from_str::<Claims>(r#"{"exp":10}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"u"}"#).is_err());
    }

    #[test]
    fn invalid_glob_is_an_error() {
        let bad = r#"{"sub":"u","exp":1,"channels":{"subscribe":["a b"]}}"#;
        assert!(serde_json::from_str::<Claims>(bad).is_err());
    }

    #[test]
    fn audience_forms() {
        let one: Claims = serde_json::from_str(r#"{"sub":"u","exp":1,"aud":"x"}"#).unwrap();
        assert_eq!(one.aud, Some(Audience::One("x".into())));
        let many: Claims = serde_json::from_str(r#"{"sub":"u","exp":1,"aud":["x","y"]}"#).unwrap();
        assert_eq!(many.aud, Some(Audience::Many(vec!["x".into(), "y".into()])));
    }
}
