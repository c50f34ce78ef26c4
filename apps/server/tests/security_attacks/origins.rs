//! Origins (CONTRACT §4, issue 7 §2): only the exact (scheme, host, port) of an allowed origin
//! passes; every look-alike gets `403` and a `cors_rejected` line naming it.
//!
//! Equivalence follows RFC 6454's serialisation, which is what a browser sends: scheme and
//! host are case-insensitive, a default port written out (`:443` on https) is the same port,
//! and an IDN host is compared in its punycode (ASCII) form. Anything else that differs —
//! scheme, port, a single label of the host, userinfo, a path, `null` — is refused.
use server::config::{AllowedOrigins, normalise_origin};

use crate::harness::{TestServer, logs, refusal_code};

fn allow(list: &[&str]) -> AllowedOrigins {
    AllowedOrigins::List(
        list.iter()
            .map(|o| normalise_origin(o).expect("a valid origin"))
            .collect(),
    )
}

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.allowed_origins = allow(&[
            "https://good.example",
            "http://localhost:3000",
            "https://xn--bcher-kva.example",
        ]);
        c.limits.upgrade.burst = 1_000;
    })
    .await
}

#[tokio::test]
async fn look_alike_origins_are_refused_403_and_logged() {
    let server = server().await;
    let attacks = [
        "null",
        "https://good.example.evil.com",
        "https://evilgood.example",
        "https://good.examplex",
        "https://xgood.example",
        "https://sub.good.example",
        "http://good.example",
        "wss://good.example",
        "https://good.example:8443",
        "https://good.example:80",
        "https://good.example.",
        "https://user@good.example",
        "https://good.example@evil.com",
        "https://good.example:443@evil.com",
        "https://evil.com#@good.example",
        "https://evil.com?good.example",
        "https://good.example/evil",
        "https://good.example evil.com",
        "https://good.example,https://evil.com",
        "http://localhost:3001",
        "http://localhost",
        "https://localhost:3000",
        "http://127.0.0.1:3000",
        "http://localhost.:3000",
        "https://xn--bcher-kva.example.evil.com",
        "https://xn--bcher-kvb.example",
        "https://bucher.example",
        "https://xn--gd-good-9ua.example",
        "https://g\u{00f6}od.example",
        "https://b\u{00fc}cher.example",
        "",
        "*",
        "file://",
        "https://",
    ];
    for origin in attacks {
        let refused = match server.upgrade(&[("Origin", origin)]).await {
            Ok(_) => panic!("origin {origin:?} was let in"),
            Err(r) => r,
        };
        assert_eq!(refused.status(), 403, "{origin:?}");
        assert_eq!(refusal_code(&refused), "FORBIDDEN", "{origin:?}");
    }
    // Refusals are logged as cors_rejected (warn) with the origin seen — the first few of a
    // window in full, then sampled (abuse.rs: a_flood_of_refusals_does_not_flood_the_logs).
    for origin in [
        "null",
        "https://good.example.evil.com",
        "https://evilgood.example",
        "https://good.examplex",
    ] {
        let line = logs::wait_for("cors_rejected", |l| l["data"]["origin"] == origin).await;
        assert_eq!(line["level"], "warn");
    }
}

#[tokio::test]
async fn the_exact_origin_and_its_rfc6454_equivalents_pass() {
    let server = server().await;
    for origin in [
        "https://good.example",
        // Browsers serialise lowercase; a host name is case-insensitive (same host).
        "HTTPS://GOOD.EXAMPLE",
        "https://Good.Example",
        // The default port written out is the same port.
        "https://good.example:443",
        "http://localhost:3000",
        "http://LOCALHOST:3000",
        // A browser sends the punycode form of an IDN host.
        "https://xn--bcher-kva.example",
    ] {
        assert!(
            server.upgrade(&[("Origin", origin)]).await.is_ok(),
            "{origin:?} should be allowed"
        );
    }
    // No Origin: a non-browser client (it still needs a token).
    assert!(server.upgrade(&[]).await.is_ok());
}

#[tokio::test]
async fn cors_answers_name_only_allowed_origins_and_never_star() {
    let server = server().await;
    let preflight = |origin: &'static str| {
        let server = &server;
        async move {
            server
                .http(
                    "OPTIONS",
                    "/v1/channels/room/messages",
                    &[
                        ("Origin", origin),
                        ("Access-Control-Request-Method", "POST"),
                        (
                            "Access-Control-Request-Headers",
                            "authorization,content-type",
                        ),
                    ],
                    None,
                )
                .await
        }
    };
    let good = preflight("https://good.example").await;
    assert_eq!(
        good.header("access-control-allow-origin"),
        Some("https://good.example")
    );
    for evil in [
        "https://good.example.evil.com",
        "null",
        "https://evilgood.example",
    ] {
        let answer = preflight(evil).await;
        assert_eq!(
            answer.header("access-control-allow-origin"),
            None,
            "{evil} got CORS rights"
        );
    }
    let plain = server
        .http(
            "GET",
            "/health",
            &[("Origin", "https://evil.example")],
            None,
        )
        .await;
    assert_ne!(plain.header("access-control-allow-origin"), Some("*"));
    assert_eq!(plain.header("access-control-allow-origin"), None);
}
