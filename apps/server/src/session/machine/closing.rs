//! The closes decided from outside a connection's own frames: a drain (`reconnect`, then
//! 1012), an operator's shed, and the slow-consumer cut (1013).

use protocol::{CloseCode, Reconnect, ReconnectReason, ServerMessage};

use super::{Machine, State};

impl Machine {
    /// The server drains: `reconnect` spread over the drain window, then 1012.
    pub fn handle_drain(&mut self, after_ms: u64) {
        self.advise(after_ms, ReconnectReason::Shutdown);
    }

    /// An operator shed this connection (`POST /v1/admin/shed`).
    pub fn handle_shed(&mut self, after_ms: u64) {
        self.advise(after_ms, ReconnectReason::Shed);
    }

    fn advise(&mut self, after_ms: u64, reason: ReconnectReason) {
        if self.state == State::Closed {
            return;
        }
        crate::metrics::reconnect_advice(reason);
        let advice = ServerMessage::Reconnect(Reconnect { after_ms, reason });
        self.close(CloseCode::SERVICE_RESTART, "service restart", Some(advice));
    }

    /// The outbound queue overflowed: a slow consumer, closed with 1013.
    pub fn handle_cut(&mut self, queue_capacity: usize) {
        if self.state == State::Closed {
            return;
        }
        crate::metrics::slow_consumer();
        tracing::warn!(
            component = "websocket",
            event = "slow_consumer_disconnected",
            connection_id = %self.connection_id,
            queue_capacity,
        );
        self.close(CloseCode::TRY_AGAIN_LATER, "slow consumer", None);
    }
}
