//! [`QueueProcessor`]: the span processor between the server and the OTLP exporter — a
//! bounded queue that never blocks the thread ending a span, and counts what it drops.
//!
//! Hand-written rather than the SDK's `BatchSpanProcessor` for one reason: that processor
//! drops spans at a full queue too but keeps the count private (it only logs it at shutdown),
//! and the contract wants the drops counted (`tether_trace_spans_dropped_total`). The design is
//! the same: one worker thread owns the exporter, collects up to [`MAX_BATCH`] spans or
//! [`BATCH_DELAY`], and exports with the exporter's own timeout; `on_end` is a `try_send`.
//! The HTTP exporter (a blocking client) runs its exports on a plain executor; the gRPC one
//! (tonic) needs a tokio reactor, so its worker owns a current-thread runtime
//! ([`QueueProcessor::new_tokio`]).
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// Spans waiting for export, at most (the SDK's default queue size).
pub const MAX_QUEUE: usize = 2_048;
/// Spans per export request, at most.
pub const MAX_BATCH: usize = 512;
/// Longest a finished span waits before its batch goes out.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);

enum Msg {
    Span(Box<SpanData>),
    Resource(Resource),
    Flush(mpsc::Sender<OTelSdkResult>),
    Shutdown(mpsc::Sender<OTelSdkResult>),
}

/// See the module docs.
#[derive(Debug)]
pub struct QueueProcessor {
    tx: SyncSender<Msg>,
    worker: Mutex<Option<JoinHandle<()>>>,
    on_drop: fn(),
}

impl QueueProcessor {
    /// Starts the worker thread that owns `exporter`. `on_drop` is called for every span
    /// dropped at a full queue.
    pub fn new<E: SpanExporter + 'static>(exporter: E, queue: usize, on_drop: fn()) -> Self {
        let (tx, rx) = mpsc::sync_channel(queue);
        let worker = std::thread::Builder::new()
            .name("tether-otlp".into())
            .spawn(move || work(exporter, &rx, &Plain))
            .expect("spawning the OTLP export thread");
        Self {
            tx,
            worker: Mutex::new(Some(worker)),
            on_drop,
        }
    }

    /// Like [`Self::new`], for an exporter that needs a tokio runtime: `build` makes it on the
    /// worker thread, inside that thread's own runtime. Fails when the runtime or the exporter
    /// cannot be built.
    pub fn new_tokio<E, B>(build: B, queue: usize, on_drop: fn()) -> Result<Self, String>
    where
        E: SpanExporter + 'static,
        B: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(queue);
        let (ready, started) = mpsc::channel::<Result<(), String>>();
        let worker = std::thread::Builder::new()
            .name("tether-otlp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let exporter = {
                    let _inside = rt.enter();
                    build()
                };
                match exporter {
                    Ok(exporter) => {
                        let _ = ready.send(Ok(()));
                        work(exporter, &rx, &rt);
                    }
                    Err(e) => drop(ready.send(Err(e))),
                }
            })
            .map_err(|e| e.to_string())?;
        started
            .recv()
            .map_err(|_| "the OTLP export thread ended at start".to_owned())??;
        Ok(Self {
            tx,
            worker: Mutex::new(Some(worker)),
            on_drop,
        })
    }

    fn ask(
        &self,
        make: impl FnOnce(mpsc::Sender<OTelSdkResult>) -> Msg,
        wait: Duration,
    ) -> OTelSdkResult {
        let (reply, answer) = mpsc::channel();
        // A control message waits for room (briefly): it must not be dropped like a span.
        let deadline = Instant::now() + wait;
        let mut msg = make(reply);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(OTelSdkError::AlreadyShutdown),
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return Err(OTelSdkError::Timeout(wait)),
            }
        }
        answer
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(Err(OTelSdkError::Timeout(wait)))
    }
}

/// Runs an export to completion on the worker thread.
trait Runner {
    fn run<F: std::future::Future>(&self, f: F) -> F::Output;
}

/// No reactor needed (the blocking HTTP client).
struct Plain;

impl Runner for Plain {
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        futures_executor::block_on(f)
    }
}

impl Runner for tokio::runtime::Runtime {
    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.block_on(f)
    }
}

fn work<E: SpanExporter, R: Runner>(mut exporter: E, rx: &Receiver<Msg>, runner: &R) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut due: Option<Instant> = None;
    let export = |exporter: &E, batch: &mut Vec<SpanData>| -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        runner.run(exporter.export(std::mem::take(batch)))
    };
    loop {
        let next = match due {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(Msg::Span(span)) => {
                batch.push(*span);
                due.get_or_insert_with(|| Instant::now() + BATCH_DELAY);
                if batch.len() >= MAX_BATCH {
                    // A failed export is the exporter's to report; the spans are gone.
                    let _ = export(&exporter, &mut batch);
                    due = None;
                }
            }
            Ok(Msg::Resource(resource)) => exporter.set_resource(&resource),
            Ok(Msg::Flush(reply)) => {
                let r = export(&exporter, &mut batch);
                due = None;
                let _ = reply.send(r);
            }
            Ok(Msg::Shutdown(reply)) => {
                let r = export(&exporter, &mut batch).and(exporter.shutdown());
                let _ = reply.send(r);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = export(&exporter, &mut batch);
                due = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = export(&exporter, &mut batch);
                let _ = exporter.shutdown();
                return;
            }
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => (self.on_drop)(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Msg::Flush, Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let r = self.ask(Msg::Shutdown, timeout);
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if r.is_ok()
            && let Some(w) = worker
        {
            let _ = w.join();
        }
        r
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.tx.try_send(Msg::Resource(resource.clone()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// An exporter that holds every export until `gate` opens, counting spans.
    #[derive(Debug, Clone)]
    struct Slow {
        exported: Arc<AtomicUsize>,
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }

    impl SpanExporter for Slow {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let (lock, cv) = &*self.gate;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.exported.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }

    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking_and_shutdown_flushes() {
        let slow = Slow {
            exported: Arc::default(),
            gate: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
        };
        let processor = QueueProcessor::new(slow.clone(), 8, || {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        });
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let started = Instant::now();
        for _ in 0..MAX_BATCH + 100 {
            tracer.in_span("s", |_| {});
        }
        // The exporter is stuck, yet ending spans never waited for it.
        assert!(started.elapsed() < Duration::from_secs(5));
        let dropped = DROPPED.load(Ordering::SeqCst);
        assert!(
            dropped >= MAX_BATCH + 100 - 8 - MAX_BATCH,
            "dropped {dropped}"
        );
        // Open the gate: shutdown exports what was queued.
        *slow.gate.0.lock().unwrap() = true;
        slow.gate.1.notify_all();
        provider.shutdown().unwrap();
        let exported = slow.exported.load(Ordering::SeqCst);
        assert_eq!(
            exported + dropped,
            MAX_BATCH + 100,
            "every span exported or counted"
        );
    }
}
