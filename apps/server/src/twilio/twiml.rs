//! The TwiML answers of CONTRACT §10.2, built from `PUBLIC_URL` (never from `Host`), with every
//! attribute value XML-escaped.

/// What Tether says before hanging up when the agent's circuit breaker is open.
pub const FALLBACK_TEXT: &str =
    "Sorry, our assistant is not available right now. Please call again later.";

/// The public URLs of the gateway, derived once from `PUBLIC_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrls {
    /// `PUBLIC_URL` without a trailing slash (`https://gw.example.com`).
    pub base: String,
    /// `wss://{host}/twilio/media`: the `<Stream url>`, and what the upgrade is signed over.
    pub media: String,
}

impl PublicUrls {
    /// From `PUBLIC_URL` (an `http(s)://` URL, checked by the configuration).
    #[must_use]
    pub fn new(public_url: &str) -> Self {
        let base = public_url.trim_end_matches('/').to_owned();
        let rest = base
            .split_once("://")
            .map_or(base.as_str(), |(_, rest)| rest);
        Self {
            media: format!("wss://{rest}/twilio/media"),
            base,
        }
    }

    /// `{PUBLIC_URL}{path_and_query}`: the URL Twilio signed for a webhook.
    #[must_use]
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }
}

/// `<Connect action=…><Stream url=… statusCallback=…><Parameter name="callToken" …/>`.
#[must_use]
pub fn connect(urls: &PublicUrls, call_token: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <Response><Connect action=\"{}\"><Stream url=\"{}\" statusCallback=\"{}\">\
         <Parameter name=\"callToken\" value=\"{}\"/></Stream></Connect></Response>",
        escape(&urls.url("/twilio/voice/after")),
        escape(&urls.media),
        escape(&urls.url("/twilio/stream-status")),
        escape(call_token),
    )
}

/// `<Response><Hangup/></Response>`.
#[must_use]
pub fn hangup() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>".to_owned()
}

/// `<Say>{text}</Say><Hangup/>`: the answer while the agent's breaker is open.
#[must_use]
pub fn fallback(text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>{}</Say><Hangup/></Response>",
        escape(text)
    )
}

/// XML text and attribute escaping.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_is_built_from_public_url() {
        let urls = PublicUrls::new("https://abc.ngrok-free.app/");
        assert_eq!(urls.media, "wss://abc.ngrok-free.app/twilio/media");
        assert_eq!(
            connect(&urls, "tok&<1>"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect action=\"https://abc.ngrok-free.app/twilio/voice/after\"><Stream url=\"wss://abc.ngrok-free.app/twilio/media\" statusCallback=\"https://abc.ngrok-free.app/twilio/stream-status\"><Parameter name=\"callToken\" value=\"tok&amp;&lt;1&gt;\"/></Stream></Connect></Response>"
        );
    }

    #[test]
    fn hangup_and_fallback() {
        assert!(hangup().ends_with("<Response><Hangup/></Response>"));
        assert!(fallback("a & b").ends_with("<Response><Say>a &amp; b</Say><Hangup/></Response>"));
    }
}
