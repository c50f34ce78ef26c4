//! The fuzz targets' bodies, shared by the libFuzzer binaries in `fuzz_targets/` (nightly,
//! `cargo xtask fuzz`) and the stable proptest harness of the server's attack tests, which
//! includes this file by path — so both exercise exactly the same code.
//!
//! Each function feeds arbitrary bytes to a boundary that faces the network and checks the
//! invariants a hostile input must never break: no panic, and what is accepted re-encodes and
//! decodes to the same value.

/// `protocol::decode_client` on any text (WebSocket text frames are UTF-8 by the time they reach
/// it; other bytes are closed with 1007 before). An accepted message survives a round trip.
pub fn decode_client(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = protocol::decode_client(text) {
        let again = protocol::encode(&msg);
        let back = protocol::decode_client(&again)
            .unwrap_or_else(|e| panic!("an accepted message does not decode again: {e}: {again}"));
        assert_eq!(back, msg, "round trip changed the message");
    }
}

/// The server's `POST /v1/channels/{channel}/messages` body checks, in the handler's order:
/// the size limit, the depth scan, then `PublishBody` and its id length.
pub fn publish_body(data: &[u8]) {
    if data.len() > protocol::defaults::MAX_MESSAGE_BYTES {
        return;
    }
    let deep = protocol::codec::json_depth_exceeds(data, protocol::defaults::MAX_JSON_DEPTH);
    if deep {
        return;
    }
    if let Ok(body) = serde_json::from_slice::<protocol::http::PublishBody>(data) {
        let _valid_id = !body.id.is_empty() && body.id.len() <= protocol::defaults::MAX_ID_BYTES;
        // What was accepted is within the depth limit, so it serialises and parses again.
        let again = serde_json::to_vec(&body).expect("a parsed body serialises");
        let back: protocol::http::PublishBody =
            serde_json::from_slice(&again).expect("a serialised body parses");
        assert_eq!(back.id, body.id);
    }
}
