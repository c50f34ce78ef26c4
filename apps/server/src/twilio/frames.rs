//! Twilio Media Streams frames (research §1–2): the lenient reading of what Twilio and the
//! agent send, and the frames Tether writes itself. Numeric fields arrive as strings and are
//! parsed leniently; unknown fields and events are ignored. The original text of a Twilio frame
//! is what gets forwarded, so nothing here has to re-serialise it faithfully.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Frames larger than this are refused (a 20 ms frame is ~300 bytes; agents may send longer
/// audio in one `media`, so the bound is generous).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// A frame Twilio sent, as far as Tether needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// `connected`: always first.
    Connected,
    /// `start`: the stream's identity and parameters.
    Start(StartInfo),
    /// `media`: one chunk of caller audio.
    Media {
        /// `sequenceNumber`, when it parses.
        seq: Option<u64>,
        /// `media.timestamp` (ms since the stream started), when it parses.
        timestamp: Option<u64>,
        /// Decoded audio length in bytes (8 bytes per ms of 8 kHz μ-law).
        audio_bytes: usize,
    },
    /// `dtmf`, `mark`: passed through.
    Other {
        /// `sequenceNumber`, when it parses.
        seq: Option<u64>,
    },
    /// `stop`: the stream (and with `<Connect>`, the call) is over.
    Stop,
    /// An event Tether does not know: ignored (still forwarded).
    Unknown,
}

/// The identity a `start` carries.
#[derive(Debug, Clone, PartialEq)]
pub struct StartInfo {
    /// `streamSid`.
    pub stream_sid: String,
    /// `start.callSid`.
    pub call_sid: String,
    /// `start.accountSid`.
    pub account_sid: String,
    /// `start.customParameters` (string values; others kept as given).
    pub custom_parameters: Map<String, Value>,
    /// The whole `start` object, to rebuild a `start` for a relinked agent.
    pub start: Value,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or not an object with a string `event`.
    #[error("not a Media Streams frame: {0}")]
    Malformed(String),
    /// A `start` without its identity fields.
    #[error("start without {0}")]
    IncompleteStart(&'static str),
    /// Over [`MAX_FRAME_BYTES`].
    #[error("frame over {MAX_FRAME_BYTES} bytes")]
    TooLarge,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "sequenceNumber", default)]
    sequence_number: Option<Value>,
    #[serde(rename = "streamSid", default)]
    stream_sid: Option<String>,
    #[serde(default)]
    media: Option<RawMedia<'a>>,
    #[serde(default)]
    start: Option<Value>,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(borrow, default)]
    payload: Option<std::borrow::Cow<'a, str>>,
}

/// A string or number field as `u64` ("numeric strings parsed leniently").
fn lenient_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Bytes of audio a base64 payload decodes to (without decoding it).
#[must_use]
pub fn decoded_len(b64: &str) -> usize {
    let padding = b64.bytes().rev().take_while(|b| *b == b'=').count();
    (b64.len() / 4 * 3).saturating_sub(padding)
}

/// Reads a Twilio frame.
pub fn parse_twilio(text: &str) -> Result<Inbound, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge);
    }
    let raw: Raw<'_> =
        serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let Some(event) = raw.event else {
        return Err(FrameError::Malformed("no event".into()));
    };
    let seq = lenient_u64(raw.sequence_number.as_ref());
    Ok(match event.as_ref() {
        "connected" => Inbound::Connected,
        "start" => {
            let start = raw.start.unwrap_or(Value::Null);
            let field = |name: &'static str| {
                start
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or(FrameError::IncompleteStart(name))
            };
            let call_sid = field("callSid")?;
            let account_sid = field("accountSid").unwrap_or_default();
            let stream_sid = match raw.stream_sid {
                Some(s) => s,
                None => field("streamSid")?,
            };
            let custom_parameters = start
                .get("customParameters")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            Inbound::Start(StartInfo {
                stream_sid,
                call_sid,
                account_sid,
                custom_parameters,
                start,
            })
        }
        "media" => {
            let media = raw.media;
            Inbound::Media {
                seq,
                timestamp: media
                    .as_ref()
                    .and_then(|m| lenient_u64(m.timestamp.as_ref())),
                audio_bytes: media
                    .as_ref()
                    .and_then(|m| m.payload.as_deref())
                    .map_or(0, decoded_len),
            }
        }
        "dtmf" | "mark" => Inbound::Other { seq },
        "stop" => Inbound::Stop,
        _ => Inbound::Unknown,
    })
}

/// What the agent may send back (research §2): `media`, `mark`, `clear`.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentFrame {
    /// To Twilio, with the current `streamSid` put in.
    ToTwilio(Value),
    /// Anything else (other events, bad JSON): not forwarded.
    Ignored(String),
}

/// Reads an agent frame; `media`/`mark`/`clear` objects are returned for forwarding.
#[must_use]
pub fn parse_agent(text: &str) -> AgentFrame {
    if text.len() > MAX_FRAME_BYTES {
        return AgentFrame::Ignored("frame too large".into());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => match map.get("event").and_then(Value::as_str) {
            Some("media" | "mark" | "clear") => AgentFrame::ToTwilio(Value::Object(map)),
            Some(other) => AgentFrame::Ignored(format!("event {other:?} is not sent to Twilio")),
            None => AgentFrame::Ignored("no event".into()),
        },
        Ok(_) => AgentFrame::Ignored("not an object".into()),
        Err(e) => AgentFrame::Ignored(format!("not JSON: {e}")),
    }
}

/// `frame` with `streamSid` set to `stream_sid`, as text.
#[must_use]
pub fn with_stream_sid(mut frame: Value, stream_sid: &str) -> String {
    if let Value::Object(map) = &mut frame {
        map.insert("streamSid".into(), Value::String(stream_sid.to_owned()));
    }
    frame.to_string()
}

/// A `connected` as Twilio sends it.
#[must_use]
pub fn connected() -> String {
    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()
}

/// A `start` for a relinked agent or a resumed stream: the stream's own `start` with
/// `customParameters.tetherResumed = "true"` (and without the used `callToken`).
#[must_use]
pub fn resumed_start(info: &StartInfo) -> String {
    let mut start = info.start.clone();
    if !start.is_object() {
        start = json!({"callSid": info.call_sid, "accountSid": info.account_sid});
    }
    start["streamSid"] = Value::String(info.stream_sid.clone());
    let mut params = info.custom_parameters.clone();
    params.remove("callToken");
    params.insert("tetherResumed".into(), Value::String("true".into()));
    start["customParameters"] = Value::Object(params);
    json!({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": info.stream_sid})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"callToken":"t","FirstName":"Jane"}},"streamSid":"MZ1"}"#;

    #[test]
    fn reads_the_documented_examples() {
        assert_eq!(
            parse_twilio(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
            Ok(Inbound::Connected)
        );
        let Ok(Inbound::Start(info)) = parse_twilio(START) else {
            panic!("start parses")
        };
        assert_eq!(
            (info.call_sid.as_str(), info.stream_sid.as_str()),
            ("CA1", "MZ1")
        );
        assert_eq!(info.custom_parameters["FirstName"], "Jane");
        assert_eq!(
            parse_twilio(
                r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AAAA"},"streamSid":"MZ1"}"#
            ),
            Ok(Inbound::Media {
                seq: Some(4),
                timestamp: Some(5),
                audio_bytes: 3
            })
        );
        assert_eq!(
            parse_twilio(
                r#"{"event":"dtmf","streamSid":"MZ","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#
            ),
            Ok(Inbound::Other { seq: Some(5) })
        );
        assert_eq!(
            parse_twilio(r#"{"event":"stop","sequenceNumber":"5","stop":{}}"#),
            Ok(Inbound::Stop)
        );
        assert_eq!(
            parse_twilio(r#"{"event":"future","x":1}"#),
            Ok(Inbound::Unknown)
        );
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        for bad in [
            "",
            "nul",
            "[1,2]",
            "{}",
            r#"{"event":5}"#,
            "{\"event\":\"media\"",
            "\"x\"",
        ] {
            assert!(parse_twilio(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_twilio(r#"{"event":"start","start":{"streamSid":"MZ"}}"#),
            Err(FrameError::IncompleteStart("callSid"))
        );
        assert_eq!(
            parse_twilio(&"x".repeat(MAX_FRAME_BYTES + 1)),
            Err(FrameError::TooLarge)
        );
        // Lenient numbers: garbage becomes None, not an error.
        assert_eq!(
            parse_twilio(r#"{"event":"media","sequenceNumber":"x","media":{"timestamp":7}}"#),
            Ok(Inbound::Media {
                seq: None,
                timestamp: Some(7),
                audio_bytes: 0
            })
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_twilio(&deep).is_err());
    }

    #[test]
    fn agent_frames_and_resumed_start() {
        let AgentFrame::ToTwilio(v) =
            parse_agent(r#"{"event":"media","media":{"payload":"AA=="}}"#)
        else {
            panic!("media goes to Twilio")
        };
        assert_eq!(
            with_stream_sid(v, "MZ9"),
            r#"{"event":"media","media":{"payload":"AA=="},"streamSid":"MZ9"}"#
        );
        assert!(matches!(
            parse_agent(r#"{"event":"session.update"}"#),
            AgentFrame::Ignored(_)
        ));
        assert!(matches!(parse_agent("not json"), AgentFrame::Ignored(_)));
        let Ok(Inbound::Start(info)) = parse_twilio(START) else {
            panic!()
        };
        let again: Value = serde_json::from_str(&resumed_start(&info)).unwrap();
        assert_eq!(again["start"]["customParameters"]["tetherResumed"], "true");
        assert_eq!(again["start"]["customParameters"]["FirstName"], "Jane");
        assert!(
            again["start"]["customParameters"]
                .get("callToken")
                .is_none()
        );
        assert_eq!(again["streamSid"], "MZ1");
        assert_eq!(decoded_len(&"A".repeat(216)), 162);
        assert_eq!(decoded_len("AAA="), 2);
    }
}
