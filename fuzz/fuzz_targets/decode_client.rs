//! libFuzzer target: `protocol::decode_client` (WebSocket text frames).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_fuzz::decode_client(data));
