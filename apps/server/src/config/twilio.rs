//! The Twilio settings: all four (`TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN` or its file,
//! `TWILIO_PHONE_NUMBER`, `PUBLIC_URL`) or none.

use std::fmt;

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

/// Reads the four settings; `None` when none is given (a warning in production).
pub(super) fn load(c: &mut Check, s: &Settings, env: &Env, prod: bool) -> Option<TwilioConfig> {
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
