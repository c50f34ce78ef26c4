//! The cargo-fuzz targets' bodies (`fuzz/src/lib.rs`, included by path so the code is the same)
//! under proptest on stable, so `cargo xtask test` covers them without nightly: arbitrary
//! bytes, JSON-ish token soup and mutations of valid frames and bodies.
use proptest::prelude::*;

#[path = "../../../../fuzz/src/lib.rs"]
mod targets;

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
    "1",
    "-0",
    "1e400",
    "\"type\"",
    "\"hello\"",
    "\"ping\"",
    "\"publish\"",
    "\"subscribe\"",
    "\"refresh\"",
    "\"id\"",
    "\"data\"",
    "\"channel\"",
    "\"token\"",
    "\"since\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\u{e9}",
    " ",
];

const VALID: &[&str] = &[
    r#"{"type":"hello","token":"a.b.c","client":"web/0.1.0"}"#,
    r#"{"type":"ping","id":7}"#,
    r#"{"type":"subscribe","channel":"room:1","since":12,"epoch":"e1"}"#,
    r#"{"type":"unsubscribe","channel":"room:1"}"#,
    r#"{"type":"publish","id":"m1","channel":"room:1","data":{"a":[1,2.5,null,"x"]}}"#,
    r#"{"type":"refresh","token":"a.b.c"}"#,
    r#"{"id":"m1","data":{"nested":[[[1]]]}}"#,
];

fn soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(PIECES), 0..64)
        .prop_map(|parts| parts.concat().into_bytes())
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(VALID),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(seed, flips, cut)| {
            let mut bytes = seed.as_bytes().to_vec();
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let keep = cut.index(bytes.len() + 1);
            bytes.truncate(keep.max(bytes.len() / 2));
            bytes
        })
}

fn deep() -> impl Strategy<Value = Vec<u8>> {
    (1usize..200, prop::bool::ANY).prop_map(|(depth, publish)| {
        let nest = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        if publish {
            format!(r#"{{"type":"publish","id":"d","channel":"c","data":{nest}}}"#).into_bytes()
        } else {
            format!(r#"{{"id":"d","data":{nest}}}"#).into_bytes()
        }
    })
}

fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        soup(),
        mutated(),
        deep(),
        prop::sample::select(VALID).prop_map(|v| v.as_bytes().to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decode_client_never_panics_and_round_trips(data in hostile()) {
        targets::decode_client(&data);
    }

    #[test]
    fn the_publish_body_checks_never_panic(data in hostile()) {
        targets::publish_body(&data);
    }
}
