//! Golden JSON for every `tether.v1` message: each file decodes, re-encodes to the same JSON
//! value, and every message type has at least one file.
use std::collections::BTreeSet;
use std::path::Path;

use protocol::{ClientMessage, ServerMessage, decode_client, decode_server, encode};
use serde_json::Value;

fn golden_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/golden exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(&p).expect("golden file is UTF-8"),
            )
        })
        .collect();
    files.sort();
    files
}

fn same_json(a: &str, b: &str) -> bool {
    serde_json::from_str::<Value>(a).unwrap() == serde_json::from_str::<Value>(b).unwrap()
}

#[test]
fn every_golden_file_round_trips() {
    let mut client_kinds = BTreeSet::new();
    let mut server_kinds = BTreeSet::new();
    for (name, text) in golden_files() {
        if name.starts_with("client_") {
            let msg: ClientMessage = decode_client(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                same_json(&encode(&msg), &text),
                "{name} re-encodes differently: {}",
                encode(&msg)
            );
            client_kinds.insert(msg.kind());
        } else {
            let msg: ServerMessage = decode_server(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                same_json(&encode(&msg), &text),
                "{name} re-encodes differently: {}",
                encode(&msg)
            );
            server_kinds.insert(msg.kind());
        }
    }
    assert_eq!(
        client_kinds,
        protocol::message::CLIENT_TYPES.into_iter().collect()
    );
    assert_eq!(
        server_kinds,
        protocol::message::SERVER_TYPES.into_iter().collect()
    );
}

#[test]
fn contract_examples_decode() {
    // The literal examples of CONTRACT §5, as written there (some with ".." placeholders).
    let client = [
        r#"{"type":"hello","token":"<JWT>","client":"web/0.1.0"}"#,
        r#"{"type":"ping","id":7}"#,
        r#"{"type":"subscribe","channel":"room:1","since":12,"epoch":".."}"#,
        r#"{"type":"unsubscribe","channel":".."}"#,
        r#"{"type":"publish","id":"<client-chosen unique id>","channel":"room:1","data":{}}"#,
        r#"{"type":"refresh","token":"<new JWT>"}"#,
    ];
    for frame in client {
        decode_client(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
    }
    let server = [
        r#"{"type":"ack","id":"..","channel":"room:1","offset":13,"duplicate":false}"#,
        r#"{"type":"error","code":"BAD_REQUEST","message":".."}"#,
        r#"{"type":"unsubscribed","channel":".."}"#,
        r#"{"type":"reconnect","after_ms":1,"reason":"shutdown"}"#,
        r#"{"type":"subscribed","channel":"room:1","epoch":"..","offset":0,"recovered":true,"replayed":3}"#,
    ];
    for frame in server {
        decode_server(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
    }
}

#[test]
fn an_unknown_reconnect_reason_is_tolerated() {
    let msg = decode_server(r#"{"type":"reconnect","after_ms":5,"reason":"maintenance"}"#).unwrap();
    let ServerMessage::Reconnect(r) = msg else {
        panic!("decodes to Reconnect")
    };
    assert_eq!(r.reason, protocol::ReconnectReason::Other);
}

#[test]
fn the_contract_report_example_decodes_with_integer_numbers() {
    let text = r#"{"type":"report","rtt_ms":{"last":41,"p50":38,"p95":120},"reconnects":2,"failed_attempts":3,"downtime_ms":5400,"queue":0,"delivery_rate":1.0,"future_field":true}"#;
    let ClientMessage::Report(report) = decode_client(text).expect("the §5.8 example decodes")
    else {
        panic!("not a report");
    };
    let rtt = report.rtt_ms.expect("rtt_ms present");
    assert_eq!(
        (rtt.last, rtt.p50, rtt.p95),
        (Some(41.0), Some(38.0), Some(120.0))
    );
    assert_eq!(report.reconnects, Some(2));
    assert_eq!(report.failed_attempts, Some(3));
    assert_eq!(report.downtime_ms, Some(5400));
    assert_eq!(report.queue, Some(0));
    assert_eq!(report.delivery_rate, Some(1.0));
    assert!(decode_client(r#"{"type":"report","reconnects":"two"}"#).is_err());
}
