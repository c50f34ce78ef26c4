//! The hostile-input campaign (issue 7 §6): random and mutated frames to the live server over
//! loopback from several connections at once — broken JSON, wrong types, unknown types, deep
//! nesting, huge fields, NULs and lone surrogates, binary frames — then non-UTF-8 and oversized
//! frames. The server must never crash, must answer every undecodable text frame and every
//! binary frame with an `error` `BAD_REQUEST` while the connection stays open, must close
//! non-UTF-8 text with 1007 and oversized messages with 1009, and must still serve a good
//! client afterwards.
//!
//! Size: [`CONNECTIONS`] × [`FRAMES_PER_CONNECTION`] text frames (20,000 by default) plus
//! [`BINARY_PER_CONNECTION`] binary frames and [`CLOSES_PER_CONNECTION`] each of 1007 and 1009
//! per connection. `TETHER_CAMPAIGN_FRAMES` (text frames per connection) and
//! `TETHER_CAMPAIGN_SEED` scale and vary it for a longer manual run. The generator is
//! deterministic for a seed, so a failure names the seed and the frame to replay.
use futures_util::SinkExt as _;
use protocol::{ClientMessage, ErrorCode, ServerMessage, decode_client};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::harness::{TestServer, within};

/// Connections attacking at once.
pub const CONNECTIONS: usize = 4;
/// Text frames per connection (default; `TETHER_CAMPAIGN_FRAMES` overrides).
pub const FRAMES_PER_CONNECTION: usize = 5_000;
/// Binary frames per connection.
pub const BINARY_PER_CONNECTION: usize = 250;
/// Non-UTF-8 and oversized messages per connection (each closes the connection).
pub const CLOSES_PER_CONNECTION: usize = 5;
/// Frames sent before waiting for the answers (bounded, so the server's queue never fills).
const BATCH: usize = 100;
/// Ping ids the harness uses to find the end of a batch's answers.
const SYNC_BASE: u64 = 1 << 60;

/// xorshift64*: a tiny deterministic generator, so the campaign is reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "false",
    "-1",
    "0",
    "1e999",
    "-0.0",
    "18446744073709551616",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\\",
    "\"type\"",
    "\"publish\"",
    "\"hello\"",
    "\"subscribe\"",
    "\"id\"",
    "\"channel\"",
    "\"data\"",
    "\"since\"",
    " ",
    "\n",
    "\u{e9}",
    "\u{1f600}",
    "\u{202e}",
    "\u{feff}",
    "\"room:*\"",
    "\"../../etc\"",
    "NaN",
];

fn seeds(token: &str) -> Vec<Value> {
    vec![
        json!({"type":"ping","id":1}),
        json!({"type":"subscribe","channel":"room:1","since":0}),
        json!({"type":"subscribe","channel":"room.2","epoch":"e","since":3}),
        json!({"type":"unsubscribe","channel":"room:1"}),
        json!({"type":"publish","id":"p1","channel":"room:1","data":{"a":[1,2,{"b":null}]}}),
        json!({"type":"publish","id":"p2","channel":"camp","data":"text"}),
        json!({"type":"refresh","token":token}),
        json!({"type":"hello","token":token,"client":"x"}),
    ]
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!(-(rng.below(1000) as f64) / 7.0),
        4 => json!("x".repeat(rng.below(3) * 150 + rng.below(2) * 2_000)),
        5 => json!(""),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        7 => {
            let mut map = serde_json::Map::new();
            for i in 0..rng.below(4) {
                map.insert(format!("k{i}"), random_value(rng, depth + 1));
            }
            Value::Object(map)
        }
        _ => json!("\u{0}\u{7f}\u{fffd}"),
    }
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// One hostile text frame.
fn mutate(rng: &mut Rng, seeds: &[Value]) -> String {
    let seed = &seeds[rng.below(seeds.len())];
    let mut bytes = seed.to_string().into_bytes();
    match rng.below(11) {
        0 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] = b' ' + rng.below(95) as u8;
            }
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        2 => {
            for _ in 0..=rng.below(3) {
                let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                let at = rng.below(bytes.len() + 1);
                bytes.splice(at..at, piece.iter().copied());
            }
        }
        3 => {
            let a = rng.below(bytes.len());
            let b = (a + rng.below(12)).min(bytes.len());
            bytes.drain(a..b);
        }
        4 => {
            let a = rng.below(bytes.len());
            let b = (a + rng.below(20)).min(bytes.len());
            let copy = bytes[a..b].to_vec();
            bytes.splice(b..b, copy);
        }
        5 => {
            // A well-formed object with one field replaced by a value of a random type.
            let mut value = seed.clone();
            let keys: Vec<String> = value
                .as_object()
                .expect("seeds are objects")
                .keys()
                .cloned()
                .collect();
            let key = &keys[rng.below(keys.len())];
            value[key] = random_value(rng, 0);
            bytes = value.to_string().into_bytes();
        }
        6 => {
            let depth = 50 + rng.below(100);
            bytes = format!(
                r#"{{"type":"publish","id":"deep","channel":"camp","data":{}}}"#,
                nested(depth)
            )
            .into_bytes();
        }
        7 => {
            let len = rng.below(300);
            bytes = (0..len).map(|_| b' ' + rng.below(95) as u8).collect();
        }
        8 => {
            let shapes = [
                "[]",
                "1",
                "\"hello\"",
                "null",
                "{}",
                "",
                " ",
                r#"{"type":null}"#,
                r#"{"type":"nope"}"#,
                r#"{"type":"ping"}"#,
                r#"{"type":"ping","id":-1}"#,
                r#"{"type":"ping","id":"7"}"#,
                r#"{"type":["ping"]}"#,
                r#"{"TYPE":"ping","id":1}"#,
            ];
            bytes = shapes[rng.below(shapes.len())].as_bytes().to_vec();
        }
        9 => {
            // Field lengths just over the limits.
            let long = "c".repeat(129 + rng.below(1_000));
            let choices = [
                json!({"type":"subscribe","channel":long}),
                json!({"type":"publish","id":"i".repeat(257),"channel":"camp","data":1}),
                json!({"type":"subscribe","channel":"camp","epoch":"e".repeat(129)}),
                json!({"type":"refresh","token":"t".repeat(16 * 1024 + 1)}),
            ];
            bytes = choices[rng.below(choices.len())].to_string().into_bytes();
        }
        _ => {
            let other = seeds[rng.below(seeds.len())].to_string();
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
            bytes.extend_from_slice(&other.as_bytes()[rng.below(other.len())..]);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Tally {
    text: usize,
    undecodable: usize,
    binary: usize,
    closes_1007: usize,
    closes_1009: usize,
}

async fn attack(server: &TestServer, index: usize, frames: usize, seed: u64) -> Tally {
    let mut rng = Rng(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let token = server.token(&format!("attacker-{index}"));
    let seeds = seeds(&token);
    let mut tally = Tally::default();
    let mut client = server.connect().await;
    client.hello(&token).await;
    let mut sync = SYNC_BASE + (index as u64) * (1 << 40);
    let mut sent = 0;
    while sent < frames {
        let batch: Vec<String> = (0..BATCH.min(frames - sent))
            .map(|_| mutate(&mut rng, &seeds))
            .collect();
        let mut expected = 0;
        for frame in &batch {
            match decode_client(frame) {
                Err(_) | Ok(ClientMessage::Hello(_)) => expected += 1,
                Ok(_) => {}
            }
            if decode_client(frame).is_err() {
                tally.undecodable += 1;
            }
            client.send_text(frame).await;
        }
        sync += 1;
        let answers = client.sync(sync).await;
        let errors = answers
            .iter()
            .filter(|m| matches!(m, ServerMessage::Error(e) if e.code == ErrorCode::BadRequest && e.channel.is_none()))
            .count();
        assert_eq!(
            errors,
            expected,
            "seed {seed} connection {index}: {errors} BAD_REQUEST errors for {expected} bad frames in the batch ending at frame {}",
            sent + batch.len()
        );
        for m in &answers {
            assert!(
                !matches!(m, ServerMessage::Error(e) if e.code == ErrorCode::ServerError),
                "seed {seed}: a server error {m:?}"
            );
        }
        sent += batch.len();
        tally.text += batch.len();
    }

    // Binary frames: refused with an error, the connection stays open.
    for chunk in 0..BINARY_PER_CONNECTION / 50 {
        for _ in 0..50 {
            let len = 1 + rng.below(512);
            within(
                "a binary send",
                client.ws.send(Message::binary(rng.bytes(len))),
            )
            .await
            .expect("sent");
        }
        tally.binary += 50;
        let answers = client.sync(sync + 1 + chunk as u64).await;
        let errors = answers
            .iter()
            .filter(|m| matches!(m, ServerMessage::Error(e) if e.code == ErrorCode::BadRequest))
            .count();
        assert_eq!(
            errors, 50,
            "seed {seed}: binary frames answered {answers:?}"
        );
    }
    drop(client);

    // Frames that end the connection, each on a fresh one.
    for _ in 0..CLOSES_PER_CONNECTION {
        let (mut c, _) = server.client(&format!("attacker-{index}")).await;
        let mut invalid = br#"{"type":"ping","id":1,"x":""#.to_vec();
        invalid.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]);
        invalid.extend_from_slice(b"\"}");
        let frame = Frame::message(invalid, OpCode::Data(Data::Text), true);
        c.ws.send(Message::Frame(frame)).await.expect("sent");
        assert_eq!(
            c.until_close().await.0,
            Some(1007),
            "seed {seed}: invalid UTF-8"
        );
        tally.closes_1007 += 1;

        let (mut c, _) = server.client(&format!("attacker-{index}")).await;
        let big = if rng.below(2) == 0 {
            Message::text(format!(
                r#"{{"type":"publish","id":"big","channel":"camp","data":"{}"}}"#,
                "y".repeat(70_000)
            ))
        } else {
            {
                let len = 65_537 + rng.below(10_000);
                Message::binary(rng.bytes(len))
            }
        };
        // The server may close while the client is still writing; the close code is what counts.
        let _ = c.ws.send(big).await;
        assert_eq!(
            c.until_close().await.0,
            Some(1009),
            "seed {seed}: oversized"
        );
        tally.closes_1009 += 1;
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tens_of_thousands_of_hostile_frames_leave_the_server_serving() {
    let server = std::sync::Arc::new(
        TestServer::start_with(|c| {
            // The campaign measures input handling, not the rate limits.
            c.limits.upgrade.burst = 100_000;
            c.limits.upgrade.per_sec = 100_000.0;
            c.limits.publish.burst = 1_000_000;
            c.limits.publish.per_sec = 1_000_000.0;
            c.limits.auth_failures.threshold = 1_000_000;
            // Bad frames are the point here: the protocol-error cool-down is tested apart.
            c.limits.abuse_protocol_errors = 0;
            c.limits.abuse_rate_limited = 0;
        })
        .await,
    );
    let frames = std::env::var("TETHER_CAMPAIGN_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FRAMES_PER_CONNECTION);
    let seed = std::env::var("TETHER_CAMPAIGN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7e7e_0001_u64);
    let mut attackers = Vec::new();
    for index in 0..CONNECTIONS {
        let server = server.clone();
        attackers.push(tokio::spawn(async move {
            attack(&server, index, frames, seed).await
        }));
    }
    let mut total = Tally::default();
    for attacker in attackers {
        let t = tokio::time::timeout(std::time::Duration::from_secs(300), attacker)
            .await
            .expect("the campaign finishes")
            .expect("no attacker panicked");
        total.text += t.text;
        total.undecodable += t.undecodable;
        total.binary += t.binary;
        total.closes_1007 += t.closes_1007;
        total.closes_1009 += t.closes_1009;
    }
    eprintln!("hostile-input campaign (seed {seed}): {total:?}");
    assert_eq!(total.text, CONNECTIONS * frames);
    assert!(
        total.undecodable * 2 > total.text,
        "the campaign is mostly hostile: {total:?}"
    );

    // Still serving: a good client subscribes, publishes and receives its own message.
    let (mut good, _) = server.client("good").await;
    good.send_json(json!({"type":"subscribe","channel":"after"}))
        .await;
    assert!(matches!(good.recv().await, ServerMessage::Subscribed(_)));
    good.send_json(json!({"type":"publish","id":"ok","channel":"after","data":{"fine":true}}))
        .await;
    let mut acked = false;
    let mut delivered = false;
    while !(acked && delivered) {
        match good.recv().await {
            ServerMessage::Ack(a) => acked = a.offset == 1,
            ServerMessage::Message(m) => {
                delivered = m.offset == 1 && m.data == json!({"fine":true})
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let health = server.http("GET", "/health", &[], None).await;
    assert_eq!(health.status, 200);
}
