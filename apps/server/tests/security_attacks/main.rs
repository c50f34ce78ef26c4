//! Attack tests (issue 7): each security control of CONTRACT §2–§5 against the real server
//! in-process on `127.0.0.1:0`, driven the way someone who tries would drive it — origin
//! look-alikes, forged and confused tokens, spoofed forwarding headers, floods, plain HTTP in
//! production, TLS, and a campaign of hostile frames. Every wait is bounded; nothing sleeps to
//! synchronise except where a token's expiry *is* the event under test.

mod harness;

mod abuse;
mod campaign;
mod dev_token;
mod fuzz_targets;
mod limits;
mod origins;
mod rights;
mod tls;
mod tokens;
