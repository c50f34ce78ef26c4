//! One WebSocket connection of the `tether.v1` protocol (CONTRACT §5): a sans-IO machine that
//! decides, and a thin tokio driver that moves bytes.
//!
//! - [`machine`]: [`Machine`] — hello and auth, heartbeat and dead link, token expiry and
//!   refresh, rate limits, and which frame goes out next; fed with `handle_frame`,
//!   `handle_store_reply`, `handle_live`, `handle_timeout`, drained with `poll_output`, woken
//!   at `poll_timeout`. It never reads a clock.
//! - [`timer`]: its one timer table, keyed by [`timer::Timer`].
//! - [`cursor`]: subscription cursors — replay page by page, then live via the hub; purges
//!   and retention trims met during a replay.
//! - [`publishing`]: publish checks, the rate limit and its strikes, ack/nack in order.
//! - [`driver`]: the tokio loop around one machine: socket, store, hub, outbound queue.
//!
//! The drive loop, in short (the real one is [`driver::Driver::run`]):
//!
//! ```text
//! loop {
//!     while let Some(output) = machine.poll_output() { carry it out (write, store, hub) }
//!     select! {
//!         frame = socket.recv(), if machine.wants_frames() => machine.handle_frame(now, frame),
//!         reply = store_reply                              => machine.handle_store_reply(reply),
//!         delivery = outbound.recv()                       => machine.handle_live(delivery),
//!         () = sleep_until(machine.poll_timeout())         => machine.handle_timeout(now),
//!     }
//! }
//! ```
use std::sync::Arc;

use futures_util::Future;

use crate::admission::ConnectionPermit;
use crate::app::App;
use axum::extract::ws::WebSocket;

pub mod cursor;
pub mod driver;
pub mod events;
pub mod machine;
pub mod policy;
pub mod publishing;
pub mod timer;

pub use cursor::replay_start;
pub use machine::{Frame, HubOp, Machine, Output, Policy, StoreOp, StoreReply};

/// Runs one connection to its end. `permit` counts it against the admission limits until the
/// task ends.
///
/// Not an `async fn`: the socket and the machine go to the heap at once, so the task's future
/// does not keep a second, moved-from copy of them for the connection's whole life (memory
/// per idle connection is what limits how many one process holds).
pub fn run(
    app: Arc<App>,
    socket: WebSocket,
    permit: ConnectionPermit,
) -> impl Future<Output = ()> + Send {
    let connection_id = new_connection_id();
    let span = crate::telemetry::connection_span(&connection_id);
    let driver = Box::new(driver::Driver::new(app, socket, permit.ip(), connection_id));
    tracing::Instrument::instrument(driver::drive(driver, permit), span)
}

/// A unique id across restarts and nodes: a UUIDv7 (time-ordered, random) with a prefix.
/// The one place connection ids are made.
#[must_use]
pub fn new_connection_id() -> String {
    format!("c_{}", uuid::Uuid::now_v7().simple())
}
