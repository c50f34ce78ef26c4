//! The real server in-process on 127.0.0.1 (`server::run`), tokens signed with its secret, a
//! client factory with short test timings, and event waits with deadlines.
use std::net::SocketAddr;
use std::time::Duration;

use client::{Client, ClientConfig, ClientEvent, Credentials};
use protocol::{ChannelGlob, Token};
use server::auth::{Authenticator, IssueRequest};
use server::config::Config;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every wait in these tests ends within this (a failure, never a hang).
pub const WAIT: Duration = Duration::from_secs(15);

/// A running server and how to start it again on the same database and port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub config: Config,
    /// Holds the database; removed when the server is dropped.
    _dir: tempfile::TempDir,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A server with the test defaults adjusted by `adjust`.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = Config::for_tests(dir.path());
        config.heartbeat = Duration::from_millis(1_000);
        config.drain = Duration::from_millis(300);
        // Every test client connects from 127.0.0.1: no upgrade flood limit or cool-down.
        config.limits.upgrade.burst = 100_000;
        config.limits.upgrade.per_sec = 100_000.0;
        config.limits.auth_failures.threshold = 100_000;
        adjust(&mut config);
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            _dir: dir,
            stop: CancellationToken::new(),
            task: None,
        };
        server.boot().await;
        server
    }

    async fn boot(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the test server");
        self.addr = listener.local_addr().expect("a bound address");
        self.config.port = self.addr.port();
        let opened = server::store::open(&self.config.store)
            .await
            .expect("open the store");
        self.stop = CancellationToken::new();
        let shutdown = self.stop.clone().cancelled_owned();
        self.task = Some(tokio::spawn(server::run(
            listener,
            self.config.clone(),
            opened,
            shutdown,
        )));
    }

    /// Graceful shutdown (reconnect + 1012 to every client, drain), awaited.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the server drains in time")
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }

    /// Starts again on the same database and port.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        self.boot().await;
    }

    /// `ws://…/ws` of this server.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A token for `sub` with every right, valid for `ttl`.
    pub fn token_for(&self, sub: &str, ttl: Duration) -> Token {
        let all = ChannelGlob::parse("*").expect("`*` is a glob");
        let (jwt, _) = Authenticator::new(&self.config.auth)
            .issue(
                IssueRequest {
                    sub: sub.to_owned(),
                    subscribe: vec![all.clone()],
                    publish: vec![all],
                    ttl,
                    admin: false,
                },
                server::auth::unix_now(),
            )
            .expect("sign a test token");
        Token::new(jwt)
    }

    /// A one-hour token for `sub`.
    pub fn token(&self, sub: &str) -> Token {
        self.token_for(sub, Duration::from_secs(3600))
    }

    /// `GET /v1/channels/{channel}/messages?since=0&limit=1000` → the `(offset, id)` pairs.
    pub async fn history(&self, channel: &str) -> Vec<(u64, String)> {
        let token = self.token("history-reader");
        let path = format!("/v1/channels/{channel}/messages?since=0&limit=1000");
        let body = http_get(self.addr, &path, token.expose()).await;
        let page: protocol::http::HistoryResponse =
            serde_json::from_str(&body).expect("a history page");
        page.messages
            .into_iter()
            .map(|m| (m.message.offset, m.message.id))
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A plain HTTP/1.0 GET with a bearer token; returns the body of a 200.
async fn http_get(addr: SocketAddr, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8(raw).expect("utf-8")
    };
    let text = tokio::time::timeout(WAIT, fetch)
        .await
        .expect("GET in time");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}\n{body}"
    );
    body.to_owned()
}

/// A client config for `url` with test timings: short backoff, fixed seed.
pub fn fast_config(url: &str, seed: u64) -> ClientConfig {
    let mut config = ClientConfig::new(url).with_seed(seed);
    let r = &mut config.resilience;
    r.initial_retry_delay = Duration::from_millis(50);
    r.max_retry_delay = Duration::from_millis(400);
    r.connection_timeout = Duration::from_millis(2_000);
    r.max_retry_attempts = 1_000;
    r.breaker_threshold = 1_000;
    r.stable_after = Duration::from_millis(200);
    config
}

/// Starts a client.
pub fn connect(config: ClientConfig, credentials: impl Into<Credentials>) -> Client {
    Client::connect(config, credentials).expect("a valid client config")
}

/// Waits for the first event `pick` maps to `Some`, failing after [`WAIT`].
pub async fn wait_event<T>(
    events: &mut broadcast::Receiver<ClientEvent>,
    what: &str,
    mut pick: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    let found = async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("client closed waiting for {what}")
                }
            }
        }
    };
    tokio::time::timeout(WAIT, found)
        .await
        .unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}"))
}

/// Waits until the client's status satisfies `pred`.
pub async fn wait_status(
    client: &Client,
    what: &str,
    mut pred: impl FnMut(&client::Status) -> bool,
) {
    let mut watch = client.watch_status();
    tokio::time::timeout(WAIT, watch.wait_for(|s| pred(s)))
        .await
        .unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}; status {:?}", client.status()))
        .expect("the client is running");
}

/// Waits until connected.
pub async fn connected(client: &Client) {
    wait_status(client, "CONNECTED", |s| {
        s.state == protocol::ConnectionState::Connected
    })
    .await;
}
