//! The development web server: serves the built dashboard and passes the server's paths through.
//!
//! CONTRACT §9: `cargo xtask dev` serves the app and passes `/ws`, `/health*`, `/v1/*` and
//! `/dev/*` through to the server, so the browser sees one origin (no CORS, and the
//! dashboard's relative URLs work the same here and under `tether serve --web-dir`). The browser
//! test uses the same server.
//!
//! The pass-through is a plain HTTP/1.1 reverse proxy with one upstream connection per request,
//! and a WebSocket upgrade is forwarded as an HTTP upgrade: once the server answers `101`, the
//! two sockets are spliced byte for byte. Frames, close codes, the `tether.v1` subprotocol and
//! the `Origin` header therefore reach the server exactly as the browser sent them, and the
//! server's own origin check applies (its allowed origins must list this server's origin). No
//! `X-Forwarded-*` header is added: the server sees a loopback peer with a loopback `Host`,
//! which is what `/dev/token` requires in development.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// How long an upstream connect + response head may take before the browser gets a `504`.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// After the shutdown signal, how long open browser connections may keep the server alive.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Binds `listen_addr` and serves `dist_dir`, passing the server's paths to `upstream_addr`,
/// until `shutdown` completes.
pub async fn serve_web(
    dist_dir: PathBuf,
    listen_addr: SocketAddr,
    upstream_addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = TcpListener::bind(listen_addr)
        .await
        .with_context(|| format!("binding the web server to {listen_addr}"))?;
    serve_web_on(listener, dist_dir, upstream_addr, shutdown).await
}

/// Like [`serve_web`] on an already bound listener (bind `127.0.0.1:0` to get a free port).
pub async fn serve_web_on(
    listener: TcpListener,
    dist_dir: PathBuf,
    upstream_addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(dist_dir, upstream_addr);
    // Signals the grace timer below once the caller's shutdown future has completed.
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        notify.notify_one();
    });
    tokio::select! {
        served = serve => served.context("serving the web app"),
        () = async { stopping.notified().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => Ok(()),
    }
}

/// The routes: the server's paths go upstream, everything else is a file from `dist_dir`.
fn router(dist_dir: PathBuf, upstream: SocketAddr) -> Router {
    let files = ServeDir::new(dist_dir).append_index_html_on_directories(true);
    Router::new()
        .route("/ws", any(pass_through))
        .route("/health", any(pass_through))
        .route("/health/{*rest}", any(pass_through))
        .route("/v1/{*rest}", any(pass_through))
        .route("/dev/{*rest}", any(pass_through))
        .with_state(upstream)
        .fallback_service(files)
        // A rebuilt app must be picked up by a plain reload during development.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1); never forwarded, except
/// `Connection`/`Upgrade` on an upgrade, which is what asks for the hop to be switched.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Forwards one request to the server; on a `101` splices the two upgraded connections.
async fn pass_through(State(upstream): State<SocketAddr>, mut req: Request) -> Response {
    let is_upgrade = req.headers().contains_key(header::UPGRADE);
    // Taken before the body moves: resolves once our answer (a 101) has been sent to the browser.
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, is_upgrade);
    if let Ok(host) = HeaderValue::from_str(&upstream.to_string()) {
        parts.headers.insert(header::HOST, host);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return error_response(StatusCode::BAD_REQUEST, "BAD_REQUEST", "bad path"),
    };
    let upstream_req = Request::from_parts(parts, body);

    let sent = tokio::time::timeout(UPSTREAM_TIMEOUT, send_upstream(upstream, upstream_req)).await;
    let mut resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                "SERVER_ERROR",
                &format!("the Tether server at {upstream} is not reachable: {err:#}"),
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "SERVER_ERROR",
                &format!("the Tether server at {upstream} did not answer in time"),
            );
        }
    };

    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client_upgrade)) = (switched, client_upgrade) {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(server)) = tokio::join!(client_upgrade, upstream_upgrade) else {
                // One side went away during the switch; the other is dropped, which closes it.
                return;
            };
            let mut client = TokioIo::new(client);
            let mut server = TokioIo::new(server);
            // Ends when either side closes; errors are just the other side going away.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
    strip_hop_by_hop(resp.headers_mut(), switched);
    resp.map(Body::new)
}

/// One fresh HTTP/1.1 connection to the server per request (development traffic is light, and
/// an upgraded connection cannot go back to a pool anyway).
async fn send_upstream(
    upstream: SocketAddr,
    req: Request,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    let stream = TcpStream::connect(upstream).await.context("connecting")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        // The connection ends when either side closes it; nothing to report in dev.
        let _ = conn.with_upgrades().await;
    });
    sender
        .send_request(req)
        .await
        .context("sending the request")
}

/// The contract's JSON error shape, for failures of the pass-through itself.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// A plain HTTP/1.1 GET to `addr` (a `Bearer` token if given); returns the status and the body
/// as text. For the browser test and this module's tests; bounded to 10 s.
pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Result<(u16, String)> {
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends with the response; an error here is the server going away.
            let _ = conn.await;
        });
        let mut req = hyper::Request::get(path).header(hyper::header::HOST, addr.to_string());
        if let Some(token) = bearer {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let resp = sender
            .send_request(req.body(http_body_util::Empty::<hyper::body::Bytes>::new())?)
            .await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("GET {path} timed out"))?
}

#[cfg(test)]
mod tests;
