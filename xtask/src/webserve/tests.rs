//! The dev web server against a stand-in upstream: files, pass-through, WebSocket splice.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{http_get, serve_web_on};

const WAIT: Duration = Duration::from_secs(10);

/// A stand-in for `tether`: `/health`, `/dev/token` echoing what it saw, and `/ws` echoing
/// one text frame then closing with 4401 (a code a browser must see unchanged).
async fn upstream() -> SocketAddr {
    async fn seen(headers: HeaderMap) -> String {
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let forwarded = headers.contains_key("x-forwarded-for");
        format!("host={host} forwarded={forwarded}")
    }
    async fn ws(upgrade: WebSocketUpgrade, headers: HeaderMap) -> impl IntoResponse {
        let origin = headers
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        upgrade
            .protocols(["tether.v1"])
            .on_upgrade(move |socket| echo_once(socket, origin))
    }
    async fn echo_once(mut socket: WebSocket, origin: String) {
        if let Some(Ok(Message::Text(text))) = socket.recv().await {
            let reply = format!("{text} from {origin}");
            // The test fails on its side if these frames do not arrive.
            let _ = socket.send(Message::Text(reply.into())).await;
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: 4401,
                    reason: "token expired".into(),
                })))
                .await;
        }
    }
    let app = Router::new()
        .route("/health", get(|| async { "up" }))
        .route("/dev/token", get(seen))
        .route("/ws", get(ws));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Serves a temp `dist/` with an index page in front of `upstream`; returns its address.
async fn web(upstream: SocketAddr) -> (SocketAddr, tempfile::TempDir) {
    let dist = tempfile::tempdir().unwrap();
    std::fs::write(dist.path().join("index.html"), "<p>dashboard</p>").unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = dist.path().to_owned();
    tokio::spawn(serve_web_on(
        listener,
        dir,
        upstream,
        std::future::pending(),
    ));
    (addr, dist)
}

#[tokio::test]
async fn serves_files_and_passes_the_server_paths_through() {
    let up = upstream().await;
    let (addr, _dist) = web(up).await;

    let (status, body) = http_get(addr, "/", None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "<p>dashboard</p>"));

    let (status, body) = http_get(addr, "/health", None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "up"));

    // /dev/token needs a loopback Host and no forwarding headers at the server.
    let (status, body) = http_get(addr, "/dev/token?sub=a", None).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, format!("host={up} forwarded=false"));

    let (status, _) = http_get(addr, "/nothing-here", None).await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn splices_websockets_with_origin_subprotocol_and_close_code() {
    let up = upstream().await;
    let (addr, _dist) = web(up).await;

    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let origin = format!("http://{addr}");
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "tether.v1".parse().unwrap());
    let (mut socket, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "tether.v1"
    );

    socket
        .send(tungstenite::Message::Text("hello".into()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        reply.into_text().unwrap().as_str(),
        format!("hello from {origin}")
    );
    let close = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let tungstenite::Message::Close(Some(frame)) = close else {
        panic!("expected a close frame, got {close:?}");
    };
    assert_eq!(u16::from(frame.code), 4401);
}

#[tokio::test]
async fn an_unreachable_server_is_a_json_502() {
    // A port that was free a moment ago: nothing listens there.
    let gone = {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        probe.local_addr().unwrap()
    };
    let (addr, _dist) = web(gone).await;
    let (status, body) = http_get(addr, "/health", None).await.unwrap();
    assert_eq!(status, 502);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "SERVER_ERROR");
}
