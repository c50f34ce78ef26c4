//! The Twilio voice gateway's settings (CONTRACT §2, §10): the four `TWILIO_*`/`PUBLIC_URL`
//! values (all or none) as [`TwilioConfig`], and the call path's own settings
//! (`TETHER_AGENT_URL`, `TETHER_CALL_RESUMES`, `TETHER_CALL_BUFFER_MS`) as [`CallSettings`].

use std::fmt;
use std::time::Duration;

use super::{Check, Env, TWILIO_TOKEN_ENV, given};
use crate::auth::Secret;
use crate::cli::Settings;

/// The Twilio settings (all four or none).
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioConfig {
    /// `TWILIO_ACCOUNT_SID`.
    pub account_sid: String,
    /// `TWILIO_AUTH_TOKEN` (redacted in `Debug`).
    pub auth_token: Secret,
    /// `TWILIO_PHONE_NUMBER`.
    pub phone_number: String,
    /// `PUBLIC_URL`.
    pub public_url: String,
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &self.auth_token)
            .field("phone_number", &self.phone_number)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// Where a call's audio goes (`TETHER_AGENT_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentUrl {
    /// `builtin:echo`: the agent inside Tether that sends every `media` straight back.
    Echo,
    /// A `ws://` or `wss://` URL of the user's own Media Streams handler.
    Remote(String),
}

/// The call path's settings, parsed (and checked) even while Twilio is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSettings {
    /// The upstream agent [default: `builtin:echo`].
    pub agent: AgentUrl,
    /// How many times one call's media stream may be re-established [default: 3].
    pub resumes: u32,
    /// Inbound audio held while the agent link is down [default: 2000 ms].
    pub buffer: Duration,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self {
            agent: AgentUrl::Echo,
            resumes: 3,
            buffer: Duration::from_millis(2000),
        }
    }
}

/// `--agent-url`, `--call-resumes`, `--call-buffer-ms`.
pub(super) fn parse_calls(c: &mut Check, s: &Settings) -> CallSettings {
    let defaults = CallSettings::default();
    let agent = match given(s.agent_url.as_ref()) {
        None | Some("builtin:echo") => AgentUrl::Echo,
        Some(raw) => match url::Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") && u.host().is_some() => {
                AgentUrl::Remote(raw.to_owned())
            }
            _ => {
                c.error(
                    "TETHER_AGENT_URL",
                    format!("not a ws:// or wss:// URL, nor builtin:echo: {raw:?}"),
                );
                AgentUrl::Echo
            }
        },
    };
    let resumes = c.num(
        "TETHER_CALL_RESUMES",
        s.call_resumes.as_ref(),
        defaults.resumes,
        0,
    );
    let buffer = c.millis("TETHER_CALL_BUFFER_MS", s.call_buffer_ms.as_ref(), 2000, 0);
    CallSettings {
        agent,
        resumes,
        buffer,
    }
}

pub(super) fn parse_twilio(
    c: &mut Check,
    s: &Settings,
    env: &Env,
    prod: bool,
) -> Option<TwilioConfig> {
    let token = match (
        env.get(TWILIO_TOKEN_ENV),
        given(s.twilio_auth_token_file.as_ref()),
    ) {
        (Some(t), None) => Some(t.to_owned()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim_end_matches(['\r', '\n']).to_owned()).filter(|t| !t.is_empty()),
            Err(e) => {
                c.error(
                    "TWILIO_AUTH_TOKEN_FILE",
                    format!("cannot read {path:?}: {e}"),
                );
                return None;
            }
        },
        (Some(_), Some(_)) => {
            c.error(
                "TWILIO_AUTH_TOKEN",
                "set either TWILIO_AUTH_TOKEN or TWILIO_AUTH_TOKEN_FILE, not both",
            );
            return None;
        }
        (None, None) => None,
    };
    let sid = given(s.twilio_account_sid.as_ref());
    let phone = given(s.twilio_phone_number.as_ref());
    let public_url = given(s.public_url.as_ref());
    let present = [
        ("TWILIO_ACCOUNT_SID", sid.is_some()),
        (TWILIO_TOKEN_ENV, token.is_some()),
        ("TWILIO_PHONE_NUMBER", phone.is_some()),
        ("PUBLIC_URL", public_url.is_some()),
    ];
    let missing: Vec<&str> = present
        .iter()
        .filter(|(_, p)| !p)
        .map(|(n, _)| *n)
        .collect();
    if missing.len() == present.len() {
        if prod {
            c.warn(
                "TWILIO_ACCOUNT_SID",
                "Twilio not configured: the Twilio features are off",
            );
        }
        return None;
    }
    if !missing.is_empty() {
        c.error(
            &missing.join(", "),
            "missing (Twilio needs all of TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER, PUBLIC_URL, or none)",
        );
        return None;
    }
    let (sid, token, phone, public_url) = (sid?, token?, phone?, public_url?);
    match url::Url::parse(public_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            c.error("PUBLIC_URL", format!("not an http(s) URL: {public_url:?}"));
            return None;
        }
    }
    Some(TwilioConfig {
        account_sid: sid.to_owned(),
        auth_token: Secret::new(token.into_bytes()),
        phone_number: phone.to_owned(),
        public_url: public_url.to_owned(),
    })
}
