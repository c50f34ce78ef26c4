//! The Twilio voice gateway (CONTRACT §10): Tether as the stable end of Twilio's media stream
//! and a resilient proxy to the user's own agent.
//!
//! | file | what |
//! |---|---|
//! | `twilio/signature.rs` | `X-Twilio-Signature`: compute and validate, with Twilio's URL variants |
//! | `twilio/twiml.rs` | the TwiML answers, built from `PUBLIC_URL` |
//! | `twilio/token.rs` | call tokens: random, 60 s, single use (digest in the store) |
//! | `twilio/frames.rs` | Media Streams frames: lenient reading, the frames Tether writes |
//! | `twilio/session.rs` | [`session::CallSession`]: the sans-IO machine of one call |
//! | `twilio/call.rs` | the driver of one call: Twilio stream(s), agent link, timers |
//! | `twilio/echo.rs` | `builtin:echo`, the agent inside Tether |
//! | `twilio/gateway.rs` | [`Gateway`]: the registry of live calls, the shared agent breaker |
//! | `twilio/http.rs` | the four endpoints |
//! | `twilio/events.rs` | call events as channel messages and log lines |
//! | `twilio/player.rs` | Twilio played against a running Tether: `simulate-call` and the tests |

pub mod call;
pub mod echo;
pub mod events;
pub mod frames;
pub mod gateway;
pub mod http;
pub mod player;
pub mod session;
pub mod signature;
pub mod token;
pub mod twiml;

pub use gateway::Gateway;
pub use http::router;
