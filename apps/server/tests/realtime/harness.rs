//! The test harness: the real server in-process on `127.0.0.1:0` with a real SQLite file in a
//! temp dir, real WebSocket clients (tokio-tungstenite), a tiny HTTP/1.1 client, and a capture
//! of the server's JSON log lines. Every wait is bounded by [`TIMEOUT`].
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{ClientMessage, ServerMessage, Subscribed, Welcome, decode_server, encode};
use server::auth::{Authenticator, IssueRequest};
use server::config::Config;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The bound on every wait.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Awaits `f`, failing the test after [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub auth: Authenticator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Generous admission limits so that many test clients from 127.0.0.1 are not refused.
pub fn relaxed(config: &mut Config) {
    config.limits.upgrade.burst = 100_000;
    config.limits.upgrade.per_sec = 100_000.0;
    config.limits.publish.burst = 100_000;
    config.limits.publish.per_sec = 100_000.0;
}

impl TestServer {
    /// Starts a server with relaxed admission limits.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` has changed the test config (applied after [`relaxed`]).
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        logs::install();
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = Config::for_tests(dir.path());
        config.drain = Duration::from_millis(500);
        relaxed(&mut config);
        adjust(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts a server with `config` whose store lives in `dir`.
    pub async fn start_in(dir: TempDir, config: Config) -> Self {
        let opened = server::store::open(&config.store)
            .await
            .expect("the store opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let auth = Authenticator::new(&config.auth);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, config, opened, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            dir,
            auth,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A token for `sub` with every channel right, valid for an hour.
    pub fn token(&self, sub: &str) -> String {
        self.token_with(sub, &["*"], &["*"], Duration::from_secs(3600))
    }

    /// A token with the given globs and lifetime.
    pub fn token_with(
        &self,
        sub: &str,
        subscribe: &[&str],
        publish: &[&str],
        ttl: Duration,
    ) -> String {
        let globs = |list: &[&str]| {
            list.iter()
                .map(|g| protocol::ChannelGlob::parse(g).expect("a valid glob"))
                .collect()
        };
        let request = IssueRequest {
            sub: sub.to_owned(),
            subscribe: globs(subscribe),
            publish: globs(publish),
            ttl,
            admin: false,
        };
        self.auth
            .issue(request, server::auth::unix_now())
            .expect("signing works")
            .0
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// An open WebSocket before `hello`.
    pub async fn connect(&self) -> Client {
        let (ws, _) = within(
            "the WebSocket upgrade",
            tokio_tungstenite::connect_async(self.ws_url()),
        )
        .await
        .expect("the upgrade succeeds");
        Client { ws }
    }

    /// A connection after `hello` → `welcome`, for `sub` with every right.
    pub async fn client(&self, sub: &str) -> (Client, Welcome) {
        let mut client = self.connect().await;
        let welcome = client.hello(&self.token(sub)).await;
        (client, welcome)
    }

    /// Resolves the shutdown future and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().expect("stopped once").send(());
        let task = self.task.take().expect("stopped once");
        within("the server to stop", task)
            .await
            .expect("the server task does not panic")
    }

    /// Stops the server and returns its data folder (to start another server on it).
    pub async fn stop_keep_dir(mut self) -> TempDir {
        let _ = self.stop.take().expect("stopped once").send(());
        let task = self.task.take().expect("stopped once");
        within("the server to stop", task)
            .await
            .expect("no panic")
            .expect("run returns Ok");
        let dir = tempfile::tempdir().expect("a temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// A plain HTTP request to this server.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpResponse {
        http(self.addr, method, path, headers, body).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a client reads next.
#[derive(Debug)]
pub enum Incoming {
    Msg(ServerMessage),
    Closed(Option<u16>),
}

/// A test WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, msg: &ClientMessage) {
        self.send_text(&encode(msg)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        within("a send", self.ws.send(Message::text(text)))
            .await
            .expect("the send succeeds");
    }

    pub async fn send_json(&mut self, value: serde_json::Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next protocol message or the close, skipping control frames.
    pub async fn next(&mut self) -> Incoming {
        within("a frame from the server", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let msg = decode_server(t.as_str())
                            .unwrap_or_else(|e| panic!("undecodable server frame {t}: {e}"));
                        return Incoming::Msg(msg);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Incoming::Closed(frame.map(|f| u16::from(f.code)));
                    }
                    Some(Ok(_)) => continue,
                    // A reset or EOF without a close frame (a killed server, a dropped socket).
                    Some(Err(_)) | None => return Incoming::Closed(None),
                }
            }
        })
        .await
    }

    /// The next protocol message; fails the test on a close.
    pub async fn recv(&mut self) -> ServerMessage {
        match self.next().await {
            Incoming::Msg(m) => m,
            Incoming::Closed(code) => panic!("closed with {code:?} while a message was expected"),
        }
    }

    /// Reads until the close and returns its code plus the messages before it.
    pub async fn until_close(&mut self) -> (Option<u16>, Vec<ServerMessage>) {
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Incoming::Msg(m) => before.push(m),
                Incoming::Closed(code) => return (code, before),
            }
        }
    }

    pub async fn hello(&mut self, token: &str) -> Welcome {
        self.send_json(serde_json::json!({"type":"hello","token":token,"client":"test/0"}))
            .await;
        match self.recv().await {
            ServerMessage::Welcome(w) => w,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, channel: &str, since: Option<u64>) -> Subscribed {
        let mut frame = serde_json::json!({"type":"subscribe","channel":channel});
        if let Some(since) = since {
            frame["since"] = since.into();
        }
        self.send_json(frame).await;
        match self.recv().await {
            ServerMessage::Subscribed(s) => s,
            other => panic!("expected subscribed, got {other:?}"),
        }
    }

    pub async fn publish(&mut self, id: &str, channel: &str, data: serde_json::Value) {
        self.send_json(serde_json::json!({"type":"publish","id":id,"channel":channel,"data":data}))
            .await;
    }

    /// Round trip of a protocol ping: everything queued before it has been read when this
    /// returns (the server answers in order). Returns the messages read before the pong.
    pub async fn sync(&mut self, id: u64) -> Vec<ServerMessage> {
        self.send_json(serde_json::json!({"type":"ping","id":id}))
            .await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                ServerMessage::Pong(p) if p.id == id => return before,
                other => before.push(other),
            }
        }
    }

    /// Reads `message` frames until `count` have arrived (other frames are returned apart).
    pub async fn messages(
        &mut self,
        count: usize,
    ) -> (Vec<protocol::Delivery>, Vec<ServerMessage>) {
        let mut got = Vec::with_capacity(count);
        let mut other = Vec::new();
        while got.len() < count {
            match self.recv().await {
                ServerMessage::Message(d) => got.push(d),
                m => other.push(m),
            }
        }
        (got, other)
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A minimal HTTP/1.1 client (`Connection: close`), enough for JSON endpoints.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    within("an HTTP answer", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: {addr}\r\n"));
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        if let Some(body) = body {
            stream.write_all(body.as_bytes()).await.expect("write body");
        }
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        parse_response(&raw)
    })
    .await
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The server's log lines, captured through the real JSON layer.
pub mod logs {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, filter::LevelFilter};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("log capture lock")
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    static CAPTURE: OnceLock<Capture> = OnceLock::new();

    /// Installs the capture once per test process.
    pub fn install() {
        CAPTURE.get_or_init(|| {
            let capture = Capture::default();
            let layer =
                server::logging::JsonLayer::new(capture.clone()).with_filter(LevelFilter::DEBUG);
            let _ = tracing_subscriber::registry().with(layer).try_init();
            capture
        });
    }

    /// Every line so far, raw.
    pub fn raw() -> String {
        let capture = CAPTURE.get().expect("installed by TestServer::start");
        String::from_utf8_lossy(&capture.0.lock().expect("log capture lock")).into_owned()
    }

    /// Every line so far, parsed.
    pub fn lines() -> Vec<serde_json::Value> {
        raw()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits until a line with `event` matching `pred` has been logged; returns it.
    pub async fn wait_for(
        event: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        within(&format!("log event {event}"), async {
            loop {
                if let Some(line) = lines().into_iter().find(|l| l["event"] == event && pred(l)) {
                    return line;
                }
                // Polling the capture: the log has no notification hook.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}
