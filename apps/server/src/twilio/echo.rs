//! `builtin:echo` (CONTRACT §10.3): the agent inside Tether. It sends every inbound `media`
//! payload straight back and answers each `mark` with a `mark` of the same name; everything
//! else it ignores. Pure: text in, replies out.

use serde_json::{Value, json};

/// What the echo agent answers to one frame it received.
#[must_use]
pub fn reply(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get("event")?.as_str()? {
        "media" => {
            let payload = v.get("media")?.get("payload")?.as_str()?;
            Some(json!({"event": "media", "media": {"payload": payload}}).to_string())
        }
        "mark" => {
            let name = v.get("mark")?.get("name")?.as_str()?;
            Some(json!({"event": "mark", "mark": {"name": name}}).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_media_and_marks_only() {
        assert_eq!(
            reply(r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","payload":"AAA="},"streamSid":"MZ"}"#).as_deref(),
            Some(r#"{"event":"media","media":{"payload":"AAA="}}"#)
        );
        assert_eq!(
            reply(r#"{"event":"mark","mark":{"name":"m7"}}"#).as_deref(),
            Some(r#"{"event":"mark","mark":{"name":"m7"}}"#)
        );
        for other in [
            r#"{"event":"start"}"#,
            r#"{"event":"mark"}"#,
            "junk",
            r#"{"event":"media"}"#,
        ] {
            assert_eq!(reply(other), None, "{other}");
        }
    }
}
