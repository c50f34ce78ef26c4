//! The attack harness: the real server in-process with its store in a temp dir, raw HTTP/1.1
//! and WebSocket clients that can send any header, and a capture of the JSON log lines (the
//! real `JsonLayer`), so tests can assert both the answer and the log event — and that no token
//! ever reaches a log line.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{ServerMessage, Welcome, decode_server};
use server::auth::{Authenticator, IssueRequest};
use server::config::{Cidr, Config};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message, http};
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

/// `127.0.0.1/32` as the trusted proxy: lets a test speak for many client IPs through
/// `X-Forwarded-For`, as a real proxy would.
pub fn trust_loopback(config: &mut Config) {
    config.trusted_proxies = vec![Cidr::parse("127.0.0.1/32").expect("a valid CIDR")];
}

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub auth: Authenticator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A server with the **default** limits (the controls under test are the defaults).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server after `adjust` changed the test config.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        logs::install();
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = Config::for_tests(dir.path());
        config.drain = Duration::from_millis(200);
        adjust(&mut config);
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

    /// A token for `sub` with every right, valid for an hour.
    pub fn token(&self, sub: &str) -> String {
        self.token_ttl(sub, Duration::from_secs(3600))
    }

    /// A token for `sub` with every right and the given lifetime.
    pub fn token_ttl(&self, sub: &str, ttl: Duration) -> String {
        let all = protocol::ChannelGlob::parse("*").expect("a valid glob");
        let request = IssueRequest {
            sub: sub.to_owned(),
            subscribe: vec![all.clone()],
            publish: vec![all],
            ttl,
            admin: false,
        };
        self.auth
            .issue(request, server::auth::unix_now())
            .expect("signing works")
            .0
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Attempts an upgrade with extra headers: the client, or the HTTP refusal.
    pub async fn upgrade(
        &self,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, http::Response<Option<Vec<u8>>>> {
        let mut request = self.ws_url().into_client_request().expect("a valid URL");
        for (k, v) in headers {
            let value = http::HeaderValue::from_bytes(v.as_bytes()).expect("a header value");
            request.headers_mut().append(*k, value);
        }
        match within("an upgrade", tokio_tungstenite::connect_async(request)).await {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tungstenite::Error::Http(response)) => Err(*response),
            Err(e) => panic!("unexpected upgrade error {e}"),
        }
    }

    /// An open WebSocket before `hello`.
    pub async fn connect(&self) -> Client {
        match self.upgrade(&[]).await {
            Ok(c) => c,
            Err(r) => panic!("upgrade refused: {}", r.status()),
        }
    }

    /// A connection after `hello` → `welcome`.
    pub async fn client(&self, sub: &str) -> (Client, Welcome) {
        let mut client = self.connect().await;
        let welcome = client.hello(&self.token(sub)).await;
        (client, welcome)
    }

    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpResponse {
        let stream = within("connect", TcpStream::connect(self.addr))
            .await
            .expect("connect");
        http_over(stream, &self.addr.to_string(), method, path, headers, body).await
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().expect("stopped once").send(());
        let task = self.task.take().expect("stopped once");
        within("the server to stop", task)
            .await
            .expect("the server task does not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The JSON error code of a refused upgrade.
pub fn refusal_code(r: &http::Response<Option<Vec<u8>>>) -> String {
    let body: serde_json::Value =
        serde_json::from_slice(r.body().as_deref().unwrap_or_default()).expect("a JSON body");
    body["error"]["code"]
        .as_str()
        .expect("an error code")
        .to_owned()
}

/// `Retry-After` of a refused upgrade, which must be whole seconds.
pub fn retry_after(r: &http::Response<Option<Vec<u8>>>) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("Retry-After is whole seconds")
}

/// What a client reads next.
#[derive(Debug)]
pub enum Incoming {
    Msg(ServerMessage),
    Closed(Option<u16>),
}

/// A WebSocket client over any transport.
pub struct Client<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
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
                    Some(Err(_)) | None => return Incoming::Closed(None),
                }
            }
        })
        .await
    }

    pub async fn recv(&mut self) -> ServerMessage {
        match self.next().await {
            Incoming::Msg(m) => m,
            Incoming::Closed(code) => panic!("closed with {code:?} while a message was expected"),
        }
    }

    /// Reads until the close: its code and the messages before it.
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
        self.send_json(serde_json::json!({"type":"hello","token":token,"client":"attacker/0"}))
            .await;
        match self.recv().await {
            ServerMessage::Welcome(w) => w,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Sends a ping and returns what arrived before its pong (the server answers in order).
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

/// One HTTP/1.1 request (`Connection: close`) over `stream`. A `Host` header in `headers`
/// replaces the default `host`.
pub async fn http_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    within("an HTTP answer", async {
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: {host}\r\n"));
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
        if let Some(body) = body {
            request.push_str(body);
        }
        stream.write_all(request.as_bytes()).await.expect("write");
        stream.flush().await.expect("flush");
        let mut raw = Vec::new();
        // A TLS peer may end without close_notify; what arrived is still the answer.
        let _ = stream.read_to_end(&mut raw).await;
        parse_response(&raw)
    })
    .await
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an incomplete response: {text:?}"));
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
        if size == 0 || size > rest.len() {
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
    use tracing_subscriber::filter::FilterExt as _;
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

    /// Installs the capture once per test process, at `trace`: a secret must not show up at
    /// any level (CONTRACT §7).
    pub fn install() {
        CAPTURE.get_or_init(|| {
            let capture = Capture::default();
            // The server's own rule drops tungstenite's frame dumps; it also keeps the test
            // clients' frame dumps (same process) out of the capture.
            let layer = server::logging::JsonLayer::new(capture.clone()).with_filter(
                LevelFilter::TRACE.and(tracing_subscriber::filter::filter_fn(
                    server::logging::no_frame_dumps,
                )),
            );
            let _ = tracing_subscriber::registry().with(layer).try_init();
            capture
        });
    }

    pub fn raw() -> String {
        let capture = CAPTURE.get().expect("installed by TestServer::start");
        String::from_utf8_lossy(&capture.0.lock().expect("log capture lock")).into_owned()
    }

    pub fn lines() -> Vec<serde_json::Value> {
        raw()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
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

    /// Fails if `secret` appears anywhere in the captured output.
    pub fn assert_absent(secret: &str) {
        if let Some(line) = raw().lines().find(|l| l.contains(secret)) {
            panic!(
                "a secret leaked into the logs: {}",
                line.replace(secret, "<SECRET>")
            );
        }
    }
}
