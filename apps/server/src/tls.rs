//! Direct HTTPS/WSS (`--tls-cert`/`--tls-key`, CONTRACT §2): rustls with the `ring` provider
//! (not aws-lc, whose C build is slow), TLS 1.2 and 1.3, HTTP/1.1 over ALPN (the WebSocket
//! upgrade needs HTTP/1.1).
//!
//! - [`load`] reads the PEM certificate chain and private key into a rustls server config; a
//!   missing, empty or mismatched file is an error naming the file.
//! - [`serve`] serves the router on the bound listener until `stop` is cancelled: plain HTTP
//!   without TLS, else through [`TlsListener`], which performs each handshake in its own task
//!   (bounded in number and time) so a client that stalls mid-handshake holds up nobody else.
//!   Either way each connection is served by hyper's HTTP/1 with WebSocket upgrades and a
//!   [`HEADER_READ_TIMEOUT`]: a client that dribbles its request head (slowloris) is cut off
//!   instead of holding a connection forever. On `stop`, accepting ends and open HTTP
//!   connections finish their current request (upgraded WebSockets belong to their sessions).
//!
//! A plain-HTTP request to a TLS port never reaches the router: its handshake fails and the
//! TCP connection is dropped.
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::{Listener, ListenerExt as _};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TlsPaths;

/// A client has this long to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's accept queue, so
/// a flood of half-finished handshakes costs bounded memory.
pub const MAX_PENDING_HANDSHAKES: usize = 1_024;
/// A client has this long to send a complete request head, on plain and TLS connections alike.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Finished handshakes waiting for the HTTP server to pick them up.
const READY_QUEUE: usize = 256;

/// What [`serve`] returns: the HTTP server, running until `stop` and its in-flight requests end.
pub type ServeFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// Reads `paths` into a rustls server config using the `ring` provider.
pub fn load(paths: &TlsPaths) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = read_certs(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| {
        anyhow::anyhow!(
            "TETHER_TLS_KEY: no PEM private key in {}: {e}",
            paths.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the ring provider supports TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "TETHER_TLS_CERT/TETHER_TLS_KEY: {} and {} do not form a usable certificate and key",
                paths.cert.display(),
                paths.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| {
            anyhow::anyhow!(
                "TETHER_TLS_CERT: cannot read PEM certificates from {}: {e}",
                path.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "TETHER_TLS_CERT: no certificate in {}",
        path.display()
    );
    Ok(certs)
}

/// Serves `router` on `listener` — over TLS when `tls` is given — until `stop` is cancelled.
/// Handlers see the TCP peer as `ConnectInfo<SocketAddr>` either way.
pub fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) -> ServeFuture {
    serve_with(listener, router, tls, stop, HEADER_READ_TIMEOUT)
}

/// [`serve`] with another request-head timeout (tests use a short one).
pub fn serve_with(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
    header_timeout: Duration,
) -> ServeFuture {
    match tls {
        // Small frames (pings, 20 ms call audio) must not wait behind Nagle for the peer's
        // delayed ACK; the TLS path sets the same on each accepted socket.
        None => Box::pin(serve_loop(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            router,
            stop,
            header_timeout,
        )),
        Some(config) => Box::pin(serve_loop(
            TlsListener::new(listener, config),
            router,
            stop,
            header_timeout,
        )),
    }
}

async fn serve_loop<L>(
    mut listener: L,
    router: Router,
    stop: CancellationToken,
    header_timeout: Duration,
) -> io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    // The HTTP connections, so that the stop waits for their current requests.
    let connections = TaskTracker::new();
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = stop.cancelled() => break,
        };
        let service =
            TowerToHyperService::new(router.clone().layer(axum::Extension(ConnectInfo(peer))));
        let stop = stop.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                // A connection error (reset, timeout, bad request) concerns only this client.
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A listener yielding finished TLS connections. The accept loop runs in its own task, which
/// ends when the listener is dropped.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    #[must_use]
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Self {
            ready,
            local,
            accept_loop,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when the listener is dropped; never hand out anything.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Bounds the handshakes in progress (see MAX_PENDING_HANDSHAKES).
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning, as
                // axum's own accept loop does.
                tracing::debug!(component = "server", event = "accept_failed", error = %e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // A send error means the server is shutting down; the connection drops.
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(component = "server", event = "tls_handshake_failed", client_ip = %peer.ip(), error = %e);
                }
                Err(_) => {
                    tracing::debug!(component = "server", event = "tls_handshake_failed", client_ip = %peer.ip(), error = "timed out");
                }
            }
        });
    }
}
