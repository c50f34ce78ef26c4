//! Transport (CONTRACT §2, §4, issue 7 §1): `--tls-cert`/`--tls-key` serve HTTPS and WSS
//! directly (rustls, `ring`), checked with a real TLS client against a certificate made in the
//! test; a plain request to the TLS port never reaches the router; in production plain `/ws`
//! and `/v1/*` are refused (`403` + `insecure_transport_rejected`) unless a *trusted* proxy says
//! `X-Forwarded-Proto: https`, while `/health*` stays reachable; security headers (HSTS in
//! production) are on every answer.
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use server::config::{Environment, TlsPaths};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::harness::{Client, TestServer, http_over, logs, refusal_code, trust_loopback, within};

/// A self-signed certificate for `localhost`/`127.0.0.1` written into `dir`.
fn self_signed(dir: &std::path::Path) -> (TlsPaths, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen makes a certificate");
    let paths = TlsPaths {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&paths.cert, made.cert.pem()).expect("write cert");
    std::fs::write(&paths.key, made.signing_key.serialize_pem()).expect("write key");
    (paths, made.cert.der().clone())
}

fn connector(trusted: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted).expect("a valid root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS 1.2/1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_stream(server: &TestServer, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("a DNS name");
    within("the TLS handshake", connector.connect(name, tcp))
        .await
        .expect("the handshake succeeds with the trusted certificate")
}

async fn tls_server(production: bool) -> (TestServer, TlsConnector, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("a temp dir");
    let (paths, der) = self_signed(certs.path());
    let server = TestServer::start_with(|c| {
        c.tls = Some(paths);
        if production {
            c.environment = Environment::Production;
        }
    })
    .await;
    (server, connector(der), certs)
}

#[tokio::test]
async fn https_and_wss_are_served_directly_with_rustls() {
    for production in [false, true] {
        let (server, connector, _certs) = tls_server(production).await;
        let host = format!("localhost:{}", server.addr.port());
        let health = http_over(
            tls_stream(&server, &connector).await,
            &host,
            "GET",
            "/health",
            &[],
            None,
        )
        .await;
        assert_eq!(health.status, 200, "{}", health.body);
        assert_eq!(health.json()["status"], "healthy");
        assert!(
            health
                .header("strict-transport-security")
                .is_some_and(|v| v.contains("max-age=")),
            "{:?}",
            health.headers
        );

        let stream = tls_stream(&server, &connector).await;
        let url = format!("wss://localhost:{}/ws", server.addr.port());
        let (ws, _) = within(
            "the WSS upgrade",
            tokio_tungstenite::client_async(url, stream),
        )
        .await
        .expect("the upgrade over TLS succeeds, in production too");
        let mut client = Client { ws };
        let welcome = client.hello(&server.token("secure")).await;
        assert!(!welcome.connection_id.is_empty());
        assert!(client.sync(1).await.is_empty());
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let (server, connector, _certs) = tls_server(true).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    let _ = within(
        "the server to drop the plain connection",
        tcp.read_to_end(&mut raw),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&raw).contains("HTTP/1.1"),
        "a plain request was answered over the TLS port"
    );
    // A client that stalls mid-handshake does not hold up others.
    let _stalled = TcpStream::connect(server.addr).await.expect("connect");
    let host = format!("localhost:{}", server.addr.port());
    let answer = http_over(
        tls_stream(&server, &connector).await,
        &host,
        "GET",
        "/health/live",
        &[],
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_bad_certificate_or_key_stops_the_start() {
    logs::install();
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let mut config = server::config::Config::for_tests(dir.path());
    config.tls = Some(TlsPaths {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    });
    let opened = server::store::open(&config.store)
        .await
        .expect("the store opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = within(
        "run to refuse",
        server::run(listener, config, opened, std::future::pending()),
    )
    .await;
    let err = result.expect_err("a bad certificate is an error");
    assert!(format!("{err:#}").contains("TETHER_TLS_CERT"), "{err:#}");
}

/// `tether serve` with an unusable certificate or key: one line naming the setting, exit 2,
/// before anything listens.
#[test]
fn the_binary_refuses_a_bad_certificate_with_exit_2() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (good, _) = self_signed(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let other = tempfile::tempdir().expect("a temp dir");
    let (mismatch, _) = self_signed(other.path());
    for (cert, key) in [
        (&garbage, &good.key),
        (&good.cert, &garbage),
        (&good.cert, &mismatch.key),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("check-env")
            .env_clear()
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("t.db").display()),
            )
            .env("TETHER_JWT_SECRET", server::config::TEST_SECRET)
            .env("TETHER_TLS_CERT", cert)
            .env("TETHER_TLS_KEY", key)
            .output()
            .expect("the tether binary runs");
        assert!(!output.status.success(), "{cert:?} {key:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(all.contains("TETHER_TLS"), "{all}");
        let served = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("serve")
            .env_clear()
            .env("PORT", "0")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("t.db").display()),
            )
            .env("TETHER_JWT_SECRET", server::config::TEST_SECRET)
            .env("TETHER_TLS_CERT", cert)
            .env("TETHER_TLS_KEY", key)
            .output()
            .expect("the tether binary runs");
        assert_eq!(served.status.code(), Some(2), "{cert:?} {key:?}");
    }
}

#[tokio::test]
async fn production_refuses_plain_ws_and_v1_unless_a_trusted_proxy_says_https() {
    let server = TestServer::start_with(|c| {
        c.environment = Environment::Production;
        trust_loopback(c);
    })
    .await;
    let plain = server.upgrade(&[]).await.err().expect("plain /ws refused");
    assert_eq!(plain.status(), 403);
    assert_eq!(refusal_code(&plain), "FORBIDDEN");
    let line = logs::wait_for("insecure_transport_rejected", |_| true).await;
    assert_eq!(line["level"], "warn");
    // The proxy says http, or says https before saying http: still plain.
    for proto in ["http", "https, http", "HTTP", ""] {
        let r = server.upgrade(&[("X-Forwarded-Proto", proto)]).await;
        assert_eq!(r.err().map(|r| r.status().as_u16()), Some(403), "{proto:?}");
    }
    for path in ["/v1/channels/room/messages"] {
        assert_eq!(server.http("GET", path, &[], None).await.status, 403);
        assert_eq!(
            server
                .http("POST", path, &[], Some(r#"{"id":"a","data":1}"#))
                .await
                .status,
            403
        );
    }
    for path in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(
            server.http("GET", path, &[], None).await.status,
            200,
            "{path}"
        );
    }
    assert!(
        server
            .upgrade(&[("X-Forwarded-Proto", "https")])
            .await
            .is_ok()
    );
    assert!(
        server
            .upgrade(&[("X-Forwarded-Proto", "HTTPS")])
            .await
            .is_ok()
    );
    let bearer = format!("Bearer {}", server.token("backend"));
    let api = server
        .http(
            "GET",
            "/v1/channels/room/messages",
            &[("X-Forwarded-Proto", "https"), ("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(api.status, 200, "{}", api.body);
}

#[tokio::test]
async fn production_without_tls_or_trusted_proxies_believes_no_forwarding_header() {
    let server = TestServer::start_with(|c| c.environment = Environment::Production).await;
    for headers in [
        &[][..],
        &[("X-Forwarded-Proto", "https")][..],
        &[("Forwarded", "proto=https")][..],
    ] {
        let r = server.upgrade(headers).await.err().expect("refused");
        assert_eq!(r.status(), 403, "{headers:?}");
        let api = server
            .http("GET", "/v1/channels/room/messages", headers, None)
            .await;
        assert_eq!(api.status, 403, "{headers:?}");
    }
    assert_eq!(
        server.http("GET", "/health/ready", &[], None).await.status,
        200
    );
}

#[tokio::test]
async fn security_headers_are_on_every_answer_and_hsts_in_production() {
    let production = TestServer::start_with(|c| c.environment = Environment::Production).await;
    for (path, status) in [
        ("/health", 200),
        ("/nope", 404),
        ("/v1/channels/a/messages", 403),
    ] {
        let answer = production.http("GET", path, &[], None).await;
        assert_eq!(answer.status, status, "{path}");
        for (name, want) in [
            ("strict-transport-security", "max-age=31536000"),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("content-security-policy", "frame-ancestors 'none'"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert!(
                answer.header(name).is_some_and(|v| v.contains(want)),
                "{path}: {name} missing in {:?}",
                answer.headers
            );
        }
    }
    let development = TestServer::start().await;
    let answer = development.http("GET", "/health", &[], None).await;
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(answer.header("strict-transport-security"), None);
}

/// A tiny router on [`server::tls::serve_with`] with a short request-head timeout: `/x`
/// answers, `/echo` is a WebSocket echo.
async fn short_timeout_server(
    timeout: std::time::Duration,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    use axum::extract::ws::WebSocketUpgrade;
    use axum::routing::get;
    let router = axum::Router::new()
        .route("/x", get(|| async { "ok" }))
        .route(
            "/echo",
            get(|ws: WebSocketUpgrade| async {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if socket.send(msg).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(server::tls::serve_with(
        listener,
        router,
        None,
        stop.clone(),
        timeout,
    ));
    (addr, stop)
}

#[tokio::test]
async fn a_slowloris_request_head_is_cut_off_but_upgraded_websockets_are_not() {
    use futures_util::{SinkExt as _, StreamExt as _};
    let timeout = std::time::Duration::from_millis(300);
    let (addr, stop) = short_timeout_server(timeout).await;
    // A head that never ends: the server closes the connection after the timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: 1")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = within(
        "the slow connection to be closed",
        slow.read_to_end(&mut rest),
    )
    .await;
    assert!(started.elapsed() >= timeout / 2, "closed too early");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    // A prompt client is served.
    let ok = http_over(
        TcpStream::connect(addr).await.unwrap(),
        "a",
        "GET",
        "/x",
        &[],
        None,
    )
    .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));
    // An upgraded WebSocket outlives the head timeout: the timer only covers request heads.
    let (mut ws, _) = within(
        "the upgrade",
        tokio_tungstenite::connect_async(format!("ws://{addr}/echo")),
    )
    .await
    .expect("upgrade");
    // Time passing is the event under test here.
    tokio::time::sleep(timeout * 3).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text("still here"))
        .await
        .unwrap();
    let echo = within("the echo", ws.next())
        .await
        .expect("a frame")
        .expect("no error");
    assert_eq!(echo.into_text().unwrap().as_str(), "still here");
    stop.cancel();
}
