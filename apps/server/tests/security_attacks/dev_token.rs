//! `/dev/token` (CONTRACT §3): a development convenience that hands out a token for every
//! channel, so it must be unreachable the moment a request could come from elsewhere — through
//! a proxy (any forwarding header), with a non-loopback `Host` (DNS rebinding), or in
//! production. Each refusal is a plain `404`, as if the endpoint did not exist.
use server::config::Environment;

use crate::harness::{TestServer, logs};

#[tokio::test]
async fn dev_token_is_refused_through_proxies_foreign_hosts_and_in_production() {
    let server = TestServer::start().await;
    let ok = server.http("GET", "/dev/token?sub=dev", &[], None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let token = ok.json()["token"].as_str().expect("a token").to_owned();
    logs::assert_absent(&token);

    let attacks: [&[(&str, &str)]; 14] = [
        &[("X-Forwarded-For", "127.0.0.1")],
        &[("X-Forwarded-For", "203.0.113.7")],
        &[("x-forwarded-for", "")],
        &[("X-Forwarded-Proto", "https")],
        &[("X-Forwarded-Host", "localhost")],
        &[("Forwarded", "for=127.0.0.1")],
        &[("X-Real-IP", "127.0.0.1")],
        &[("Host", "evil.example")],
        &[("Host", "localhost.evil.example")],
        &[("Host", "127.0.0.1.nip.io")],
        &[("Host", "evil.example:8081")],
        &[("Host", "10.0.0.1")],
        &[("Host", "localhost@evil.example")],
        &[("Host", "[::2]:8081")],
    ];
    for headers in attacks {
        let answer = server
            .http("GET", "/dev/token?sub=mallory", headers, None)
            .await;
        assert_eq!(answer.status, 404, "{headers:?}: {}", answer.body);
        assert!(!answer.body.contains("token\""), "{headers:?}");
    }
    // Loopback spellings of Host are fine.
    for host in ["localhost", "LOCALHOST:8081", "127.0.0.1:1", "[::1]:8081"] {
        let answer = server
            .http("GET", "/dev/token?sub=dev", &[("Host", host)], None)
            .await;
        assert_eq!(answer.status, 200, "{host}");
    }

    let production = TestServer::start_with(|c| {
        c.environment = Environment::Production;
        crate::harness::trust_loopback(c);
    })
    .await;
    for headers in [&[][..], &[("X-Forwarded-Proto", "https")][..]] {
        let answer = production
            .http("GET", "/dev/token?sub=mallory", headers, None)
            .await;
        assert_eq!(answer.status, 404, "{headers:?}");
    }
}
