//! The bare peer of `cargo xtask bench --peers`: a tuned tokio-tungstenite server with no
//! authentication and no store, the floor Tether is measured against.
//!
//! It listens on `127.0.0.1:$PORT` (0: any free port), prints `listening <port>` on stdout,
//! and serves three paths:
//! - `/echo`: every text or binary frame is sent back (the ping round trip);
//! - `/sub`: joins the broadcast group (a subscriber; what it sends is ignored);
//! - `/pub`: every text frame is sent to every `/sub` connection (the fan-out).
//!
//! Each connection has a 4 KiB read buffer and no write buffer beyond the frame being sent;
//! a broadcast frame is one reference-counted buffer shared by every subscriber.
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Broadcast frames a slow subscriber may fall behind by before it skips ahead.
const BROADCAST_BACKLOG: usize = 4_096;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening {}", listener.local_addr()?.port());
    let (tx, _) = broadcast::channel::<Message>(BROADCAST_BACKLOG);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                eprintln!("bare-peer: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(tcp, tx).await {
                eprintln!("bare-peer: {e}");
            }
        });
    }
}

// tungstenite's handshake callback must return its own `Result<Response, ErrorResponse>`.
#[allow(clippy::result_large_err)]
async fn serve(
    tcp: TcpStream,
    tx: broadcast::Sender<Message>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut path = String::new();
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let callback = |req: &Request, resp: Response| {
        req.uri().path().clone_into(&mut path);
        Ok(resp)
    };
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config)).await?;
    match path.as_str() {
        "/echo" => {
            while let Some(msg) = ws.next().await {
                match msg? {
                    m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        }
        "/sub" => {
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Ok(m) => ws.send(m).await?,
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    msg = ws.next() => match msg {
                        None | Some(Ok(Message::Close(_))) => break,
                        Some(Err(e)) => return Err(e),
                        Some(Ok(_)) => {}
                    },
                }
            }
        }
        "/pub" => {
            while let Some(msg) = ws.next().await {
                match msg? {
                    m @ Message::Text(_) => {
                        // No subscriber yet is not an error.
                        let _ = tx.send(m);
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        }
        _ => ws.close(None).await?,
    }
    Ok(())
}
