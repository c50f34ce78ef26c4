//! Hostile input: decoding returns a typed error for garbage of every shape, and never panics.
use proptest::prelude::*;
use protocol::{DecodeError, decode_client, decode_server};

#[test]
fn truncated_frames_are_syntax_errors() {
    let frame = r#"{"type":"publish","id":"m1","channel":"room:1","data":{"a":[1,2,3]}}"#;
    for cut in 0..frame.len() {
        let err = decode_client(&frame[..cut]).expect_err("a truncated frame never decodes");
        assert!(
            matches!(err, DecodeError::Syntax(_)),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn wrong_types_are_invalid() {
    for frame in [
        r#"{"type":"ping","id":-1}"#,
        r#"{"type":"ping","id":1.5}"#,
        r#"{"type":"ping","id":"7"}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"subscribe","channel":5}"#,
        r#"{"type":"subscribe","channel":"a","since":"12"}"#,
        r#"{"type":"hello","token":null}"#,
        r#"{"type":"publish","id":7,"channel":"a","data":1}"#,
    ] {
        assert!(
            matches!(decode_client(frame), Err(DecodeError::Invalid { .. })),
            "{frame}: {:?}",
            decode_client(frame)
        );
    }
}

#[test]
fn megabyte_strings_decode_or_fail_cleanly() {
    let big = "x".repeat(1 << 20);
    let frame = format!(r#"{{"type":"publish","id":"a","channel":"c","data":"{big}"}}"#);
    assert!(
        decode_client(&frame).is_ok(),
        "size is the transport's limit, not the codec's"
    );
    let frame = format!(r#"{{"type":"hello","token":"{big}"}}"#);
    assert!(matches!(
        decode_client(&frame),
        Err(DecodeError::FieldTooLong { field: "token", .. })
    ));
    let frame = format!(r#"{{"type":"{big}"}}"#);
    assert!(matches!(
        decode_client(&frame),
        Err(DecodeError::UnknownType(_))
    ));
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let frame = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(decode_client(&frame), Err(DecodeError::TooDeep));
    let frame = format!(
        r#"{{"type":"ping","id":1,"x":{}}}"#,
        "{\"a\":".repeat(70) + "1" + &"}".repeat(70)
    );
    assert_eq!(decode_client(&frame), Err(DecodeError::TooDeep));
}

#[test]
fn unknown_and_cross_direction_types_are_refused() {
    assert!(matches!(
        decode_client(r#"{"type":"ack","id":"a"}"#),
        Err(DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        decode_server(r#"{"type":"hello","token":"t"}"#),
        Err(DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        decode_client(r#"{"type":"PING","id":1}"#),
        Err(DecodeError::UnknownType(_))
    ));
}

#[test]
fn duplicate_keys_are_refused() {
    assert!(decode_client(r#"{"type":"ping","id":1,"id":2}"#).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = decode_client(&s);
        let _ = decode_server(&s);
    }

    #[test]
    fn json_shaped_noise_never_panics(s in r#"[\[\]{}",:0-9a-z\\ ]{0,200}"#) {
        let _ = decode_client(&s);
        let _ = decode_server(&s);
    }

    #[test]
    fn mutated_valid_frames_never_panic(pos in 0usize..80, byte in any::<u8>()) {
        let mut frame = br#"{"type":"publish","id":"m1","channel":"room:1","data":{"a":[1,2,3]}}"#.to_vec();
        let at = pos % frame.len();
        frame[at] = byte;
        if let Ok(text) = std::str::from_utf8(&frame) {
            let _ = decode_client(text);
        }
    }
}
