//! Boundary tests of the realtime server: the real server in-process on `127.0.0.1:0`, a real
//! SQLite file in a temp dir, real WebSocket clients; the `tether` binary where a process must
//! die (SIGKILL, SIGTERM). Every wait is bounded; nothing sleeps to synchronise.

mod harness;

mod admission;
mod auth;
mod binary;
mod delivery;
mod http_api;
mod limits;
mod messages;
mod nodes;
#[path = "../pg/mod.rs"]
mod pg;
mod twilio;
mod twilio_hostile;
