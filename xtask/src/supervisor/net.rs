//! A minimal HTTP client for probes and checks: one fresh HTTP/1.1 connection per request.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::ProbeFuture;

/// `GET http://{addr}{path}` over a fresh HTTP/1.1 connection; the status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        // Ends when the response is read and the connection closes.
        let _ = conn.await;
    });
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the body")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A probe that passes when `GET http://{addr}{path}` answers `200`.
pub fn http_probe(
    addr: SocketAddr,
    path: &'static str,
) -> Arc<dyn Fn() -> ProbeFuture + Send + Sync> {
    Arc::new(move || {
        Box::pin(async move {
            let (status, body) = http_get(addr, path).await?;
            if status == 200 {
                Ok(None)
            } else {
                bail!("GET {path} answered {status}: {}", body.trim())
            }
        })
    })
}
