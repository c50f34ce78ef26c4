//! Twilio, played against a running Tether (CONTRACT §10.6): the signed `/twilio/voice`
//! webhook, the media stream with 20 ms μ-law frames at 50/s, marks and a DTMF digit, an
//! optional drop of the stream followed through `/twilio/voice/after`, and a per-call report
//! (frames sent and echoed, gaps, round trip). `tether simulate-call` prints it; the
//! integration tests drive the gateway with it, so the tests and the tool play the same Twilio.
//!
//! Each media payload starts with the frame's index (4 bytes, big endian), so an echoing
//! agent's answers are matched to what was sent whatever their order or `streamSid`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::http::SIGNATURE_HEADER;
use super::signature;

/// Frame length: 20 ms of 8 kHz μ-law.
pub const FRAME_BYTES: usize = 160;
/// Frames per second (one per 20 ms).
pub const FRAMES_PER_SEC: u64 = 50;
/// How long the end of a call waits for the last echoes.
const TAIL: Duration = Duration::from_millis(1_000);
/// Bound on each HTTP request and each WebSocket connect.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to play.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// Where Tether listens, `http://127.0.0.1:8081` (requests go here).
    pub target: url::Url,
    /// `PUBLIC_URL` as Tether knows it: what the webhooks are signed over.
    pub public_url: String,
    /// `TWILIO_AUTH_TOKEN`, to sign like Twilio.
    pub auth_token: Vec<u8>,
    /// `AccountSid` sent with the webhooks.
    pub account_sid: String,
    /// How long each call streams audio.
    pub duration: Duration,
    /// Drop the stream (TCP closed without `stop`) this long after it started, once.
    pub drop_after: Option<Duration>,
}

/// What happened to one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReport {
    /// The `CallSid` played.
    pub call_sid: String,
    /// Media frames sent.
    pub frames_sent: u64,
    /// Distinct frames that came back.
    pub echoed: u64,
    /// Frames sent but never echoed, below the highest echoed index.
    pub gaps: u64,
    /// Marks the agent answered.
    pub marks: u64,
    /// Streams re-established after a drop.
    pub resumes: u32,
    /// Median round trip of the echoed frames.
    pub rtt_p50: Duration,
    /// Largest round trip.
    pub rtt_max: Duration,
    /// The `streamSid`s the echoes carried (one per stream when Tether puts the current one in).
    pub stream_sids: BTreeSet<String>,
    /// What `/twilio/voice/after` answered at the end: `hangup` or `connect`.
    pub after: &'static str,
}

impl std::fmt::Display for CallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "call {} frames_sent={} echoed={} gaps={} marks={} resumes={} rtt_p50_ms={:.1} rtt_max_ms={:.1} after={}",
            self.call_sid,
            self.frames_sent,
            self.echoed,
            self.gaps,
            self.marks,
            self.resumes,
            self.rtt_p50.as_secs_f64() * 1e3,
            self.rtt_max.as_secs_f64() * 1e3,
            self.after
        )
    }
}

/// Why a call could not be played.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    /// A request failed or timed out.
    #[error("{what}: {detail}")]
    Http {
        /// Which request.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// Tether answered with something other than the expected TwiML.
    #[error("{what} answered {status}: {body}")]
    Answer {
        /// Which request.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The body (TwiML or error JSON).
        body: String,
    },
    /// The media WebSocket failed.
    #[error("media stream: {0}")]
    Stream(String),
}

/// The `<Stream>` of a `<Connect>` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTwiml {
    /// `<Stream url>`.
    pub url: String,
    /// The `callToken` parameter.
    pub call_token: String,
}

/// Reads a `<Connect><Stream url=…><Parameter name="callToken" value=…/>` answer; `None` for
/// any other TwiML (`<Hangup/>`, `<Say>`). Hand-written over an XML crate: Tether's TwiML has a
/// fixed shape (`twiml.rs`) and only two attributes are needed.
#[must_use]
pub fn parse_connect(twiml: &str) -> Option<StreamTwiml> {
    let stream = &twiml[twiml.find("<Stream ")?..];
    let url = attribute(stream, "url")?;
    let param = &stream[stream.find("name=\"callToken\"")?..];
    let call_token = attribute(param, "value")?;
    Some(StreamTwiml { url, call_token })
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let len = tag[start..].find('"')?;
    Some(
        tag[start..start + len]
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// A Twilio that plays calls against one Tether.
#[derive(Debug, Clone)]
pub struct Player {
    options: PlayOptions,
    http: reqwest::Client,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Player {
    /// A player for `options`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(options: PlayOptions) -> Result<Self, PlayError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| PlayError::Http {
                what: "client",
                detail: e.to_string(),
            })?;
        Ok(Self { options, http })
    }

    /// POSTs a signed form to `path`; the status and body.
    ///
    /// # Errors
    /// When the request fails.
    pub async fn webhook(
        &self,
        what: &'static str,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<(u16, String), PlayError> {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signed_url = format!("{}{path}", self.options.public_url.trim_end_matches('/'));
        let signature = signature::compute(&self.options.auth_token, &signed_url, &params);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let target = self
            .options
            .target
            .join(path)
            .map_err(|e| PlayError::Http {
                what,
                detail: e.to_string(),
            })?;
        let fail = |e: reqwest::Error| PlayError::Http {
            what,
            detail: e.to_string(),
        };
        let response = self
            .http
            .post(target)
            .header("content-type", "application/x-www-form-urlencoded")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(fail)?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(fail)?))
    }

    fn call_form<'a>(&'a self, call_sid: &'a str) -> [(&'a str, &'a str); 5] {
        [
            ("AccountSid", self.options.account_sid.as_str()),
            ("CallSid", call_sid),
            ("CallStatus", "in-progress"),
            ("From", "+15550100"),
            ("To", "+15550199"),
        ]
    }

    /// `POST /twilio/voice` for `call_sid`: the `<Stream>` to open.
    ///
    /// # Errors
    /// When the answer is not a `<Connect>` (a fallback `<Say>` while the agent is down too).
    pub async fn voice(&self, call_sid: &str) -> Result<StreamTwiml, PlayError> {
        let (status, body) = self
            .webhook("/twilio/voice", "/twilio/voice", &self.call_form(call_sid))
            .await?;
        match parse_connect(&body) {
            Some(s) if status == 200 => Ok(s),
            _ => Err(PlayError::Answer {
                what: "/twilio/voice",
                status,
                body,
            }),
        }
    }

    /// `POST /twilio/voice/after` for `call_sid`: `Some` stream to open (a resume), `None` on
    /// `<Hangup/>`.
    ///
    /// # Errors
    /// When the request fails or the answer is neither.
    pub async fn after(&self, call_sid: &str) -> Result<Option<StreamTwiml>, PlayError> {
        let (status, body) = self
            .webhook(
                "/twilio/voice/after",
                "/twilio/voice/after",
                &self.call_form(call_sid),
            )
            .await?;
        if status == 200 && body.contains("<Hangup/>") {
            return Ok(None);
        }
        match parse_connect(&body) {
            Some(s) if status == 200 => Ok(Some(s)),
            _ => Err(PlayError::Answer {
                what: "/twilio/voice/after",
                status,
                body,
            }),
        }
    }

    /// Opens the media WebSocket of `stream` (signed over its `<Stream url>`, sent to the
    /// target) and sends `connected` and `start`.
    ///
    /// # Errors
    /// When the upgrade is refused or the connection fails.
    pub async fn open_stream(
        &self,
        stream: &StreamTwiml,
        call_sid: &str,
        stream_sid: &str,
    ) -> Result<Socket, PlayError> {
        let path = stream
            .url
            .find("/twilio/media")
            .map_or("/twilio/media", |i| &stream.url[i..]);
        let mut ws_url = self.options.target.clone();
        let scheme = if ws_url.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        ws_url
            .set_scheme(scheme)
            .map_err(|()| PlayError::Stream("bad target URL".into()))?;
        let ws_url = ws_url
            .join(path)
            .map_err(|e| PlayError::Stream(e.to_string()))?;
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| PlayError::Stream(e.to_string()))?;
        let signature = signature::compute(&self.options.auth_token, &stream.url, &[]);
        request.headers_mut().insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&signature).map_err(|e| PlayError::Stream(e.to_string()))?,
        );
        let (mut socket, _) = tokio::time::timeout(
            REQUEST_TIMEOUT,
            // Small frames at 50/s: Nagle would hold each behind the previous ACK.
            tokio_tungstenite::connect_async_with_config(request, None, true),
        )
        .await
        .map_err(|_| PlayError::Stream("connect timed out".into()))?
        .map_err(|e| PlayError::Stream(e.to_string()))?;
        for frame in [
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            start_frame(
                &self.options.account_sid,
                call_sid,
                stream_sid,
                &stream.call_token,
            ),
        ] {
            send(&mut socket, &frame).await?;
        }
        Ok(socket)
    }

    /// Plays one whole call: voice → stream → (drop → after → stream) → `stop` → after.
    ///
    /// # Errors
    /// When a step fails; a refused call (`<Say>` fallback) too.
    pub async fn play(&self, call_sid: &str) -> Result<CallReport, PlayError> {
        let stream = self.voice(call_sid).await?;
        self.play_stream(&stream, call_sid).await
    }

    /// [`Self::play`] from the `<Stream>` a `/twilio/voice` already answered.
    ///
    /// # Errors
    /// When a step fails.
    pub async fn play_stream(
        &self,
        first: &StreamTwiml,
        call_sid: &str,
    ) -> Result<CallReport, PlayError> {
        let mut stream = first.clone();
        let mut tally = Tally::default();
        let mut resumes = 0;
        let mut drop_at = self.options.drop_after;
        let total_frames = self.options.duration.as_millis() as u64 * FRAMES_PER_SEC / 1_000;
        let mut streams = 0u32;
        loop {
            streams += 1;
            let stream_sid = format!("MZ{call_sid}{streams:02}");
            let mut socket = self.open_stream(&stream, call_sid, &stream_sid).await?;
            tally.seq = 1; // `start` was 1; each stream counts afresh, as Twilio's do.
            let dropped = self
                .stream_frames(&mut socket, &stream_sid, &mut tally, total_frames, drop_at)
                .await?;
            if dropped {
                // Abrupt: the TCP connection goes away without a close frame, like a tunnel.
                drop(socket);
                drop_at = None;
                match self.after(call_sid).await? {
                    Some(next) => {
                        resumes += 1;
                        stream = next;
                        continue;
                    }
                    None => break,
                }
            }
            // A caller hangs up after the last words came back: wait for the echoes first.
            tally.drain(&mut socket, TAIL, true).await;
            send(
                &mut socket,
                &json!({"event": "stop", "sequenceNumber": tally.seq.to_string(),
                        "streamSid": stream_sid,
                        "stop": {"accountSid": self.options.account_sid, "callSid": call_sid}}),
            )
            .await?;
            tally.drain(&mut socket, TAIL, false).await;
            let _ = socket.close(None).await;
            break;
        }
        let after = match self.after(call_sid).await? {
            None => "hangup",
            Some(_) => "connect",
        };
        Ok(tally.report(call_sid, resumes, after))
    }

    /// Sends frames at 50/s until `total` were sent (`false`) or `drop_at` is reached on this
    /// stream (`true`), reading echoes meanwhile.
    async fn stream_frames(
        &self,
        socket: &mut Socket,
        stream_sid: &str,
        tally: &mut Tally,
        total: u64,
        drop_at: Option<Duration>,
    ) -> Result<bool, PlayError> {
        let began = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1_000 / FRAMES_PER_SEC));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while tally.sent < total {
            if drop_at.is_some_and(|d| began.elapsed() >= d) {
                return Ok(true);
            }
            tokio::select! {
                _ = tick.tick() => {
                    let index = tally.sent;
                    tally.seq += 1;
                    send(socket, &media_frame(stream_sid, tally.seq, index)).await?;
                    tally.sent_at.insert(index, Instant::now());
                    tally.sent += 1;
                    if index % FRAMES_PER_SEC == FRAMES_PER_SEC - 1 {
                        tally.seq += 1;
                        send(socket, &json!({"event": "mark", "sequenceNumber": tally.seq.to_string(),
                            "streamSid": stream_sid, "mark": {"name": format!("m{index}")}})).await?;
                    }
                    if index == FRAMES_PER_SEC {
                        tally.seq += 1;
                        send(socket, &json!({"event": "dtmf", "sequenceNumber": tally.seq.to_string(),
                            "streamSid": stream_sid, "dtmf": {"track": "inbound_track", "digit": "5"}})).await?;
                    }
                }
                incoming = socket.next() => match incoming {
                    Some(Ok(Message::Text(t))) => tally.heard(t.as_str()),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        Ok(false)
    }
}

fn start_frame(account_sid: &str, call_sid: &str, stream_sid: &str, token: &str) -> Value {
    json!({
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream_sid,
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"callToken": token},
        },
    })
}

fn media_frame(stream_sid: &str, seq: u64, index: u64) -> Value {
    let mut audio = vec![0xFF_u8; FRAME_BYTES];
    audio[..4].copy_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes());
    json!({
        "event": "media",
        "sequenceNumber": seq.to_string(),
        "streamSid": stream_sid,
        "media": {
            "track": "inbound",
            "chunk": (index + 1).to_string(),
            "timestamp": (index * 20).to_string(),
            "payload": base64::engine::general_purpose::STANDARD.encode(&audio),
        },
    })
}

async fn send(socket: &mut Socket, frame: &Value) -> Result<(), PlayError> {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .map_err(|e| PlayError::Stream(e.to_string()))
}

/// What was sent and heard, across the call's streams.
#[derive(Default)]
struct Tally {
    sent: u64,
    seq: u64,
    sent_at: HashMap<u64, Instant>,
    echoed: BTreeSet<u64>,
    rtts: Vec<Duration>,
    marks: u64,
    stream_sids: BTreeSet<String>,
}

impl Tally {
    fn heard(&mut self, text: &str) {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(sid) = frame["streamSid"].as_str() {
            self.stream_sids.insert(sid.to_owned());
        }
        match frame["event"].as_str() {
            Some("mark") => self.marks += 1,
            Some("media") => {
                let Some(audio) = frame["media"]["payload"]
                    .as_str()
                    .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                else {
                    return;
                };
                let Some(head) = audio.get(..4) else { return };
                let index = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
                if let Some(at) = self.sent_at.get(&index)
                    && self.echoed.insert(index)
                {
                    self.rtts.push(at.elapsed());
                }
            }
            _ => {}
        }
    }

    /// Reads what arrives for at most `tail`; with `until_echoed`, only until every frame
    /// sent came back.
    async fn drain(&mut self, socket: &mut Socket, tail: Duration, until_echoed: bool) {
        let until = tokio::time::Instant::now() + tail;
        while !(until_echoed && self.echoed.len() as u64 == self.sent)
            && let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, socket.next()).await
        {
            if let Message::Text(t) = m {
                self.heard(t.as_str());
            }
        }
    }

    fn report(mut self, call_sid: &str, resumes: u32, after: &'static str) -> CallReport {
        self.rtts.sort_unstable();
        let top = self.echoed.last().copied();
        let gaps = top.map_or(0, |top| top + 1 - self.echoed.len() as u64);
        CallReport {
            call_sid: call_sid.to_owned(),
            frames_sent: self.sent,
            echoed: self.echoed.len() as u64,
            gaps,
            marks: self.marks,
            resumes,
            rtt_p50: self
                .rtts
                .get(self.rtts.len() / 2)
                .copied()
                .unwrap_or_default(),
            rtt_max: self.rtts.last().copied().unwrap_or_default(),
            stream_sids: self.stream_sids,
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tethers_connect_and_nothing_else() {
        let urls = super::super::twiml::PublicUrls::new("https://abc.example");
        let got = parse_connect(&super::super::twiml::connect(&urls, "t&<k>\"1")).unwrap();
        assert_eq!(got.url, "wss://abc.example/twilio/media");
        assert_eq!(got.call_token, "t&<k>\"1");
        assert_eq!(parse_connect(&super::super::twiml::hangup()), None);
        assert_eq!(parse_connect("<Response><Stream url=\"x"), None);
        assert_eq!(parse_connect(""), None);
    }

    #[test]
    fn echoes_count_once_and_gaps_are_holes_below_the_top() {
        let mut t = Tally::default();
        for i in 0..5 {
            t.sent_at.insert(i, Instant::now());
        }
        t.sent = 5;
        for i in [0, 1, 3, 3] {
            t.heard(&media_frame("MZ1", i + 1, i).to_string());
        }
        t.heard(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m"}}"#);
        t.heard("not json");
        t.heard(r#"{"event":"media","media":{"payload":"AA=="}}"#);
        let r = t.report("CA1", 0, "hangup");
        assert_eq!((r.echoed, r.gaps, r.marks), (3, 1, 1));
        assert_eq!(r.stream_sids.into_iter().collect::<Vec<_>>(), ["MZ1"]);
    }
}
