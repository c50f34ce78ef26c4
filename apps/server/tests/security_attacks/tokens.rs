//! Tokens (CONTRACT §5.1, §5.5, issue 7 §4): forged, tampered, expired, not yet valid,
//! algorithm-confused and wrong-issuer tokens are refused with `AUTH_FAILURE` + 4401 and an
//! `auth_failure` line carrying the reason and a fingerprint — never the token; every
//! connection is validated, resumed ones included; a token that expires on an open connection
//! ends it; a refresh can neither change `sub` nor weaken the token in force.
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use protocol::{ChannelGlob, ChannelRights, Claims, ErrorCode, ServerMessage};
use serde_json::{Value, json};
use server::auth::{AuthConfig, Authenticator, fingerprint, unix_now};
use server::config::TEST_SECRET;
use sha2::{Digest as _, Sha256};

use crate::harness::{TestServer, logs};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn all_rights() -> Option<ChannelRights> {
    let all = ChannelGlob::parse("*").expect("a valid glob");
    Some(ChannelRights {
        subscribe: vec![all.clone()],
        publish: vec![all],
    })
}

fn claims(sub: &str, exp: i64) -> Claims {
    Claims {
        sub: sub.into(),
        exp,
        iat: Some(unix_now()),
        nbf: None,
        iss: None,
        aud: None,
        channels: all_rights(),
        admin: false,
    }
}

/// HMAC-SHA256, written out so a test can sign any header it likes.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// A token with an arbitrary header, HMAC-signed with `key` (the server's secret, for the
/// attacks that know it, such as HS/RS confusion where the "secret" is a public key).
fn with_header(header: Value, claims: &Value, key: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = b64(&hmac_sha256(key, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

fn raw_claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": unix_now() + 3600, "iat": unix_now(),
           "channels": {"subscribe": ["*"], "publish": ["*"]}})
}

/// Presents `token` in `hello` and expects `error AUTH_FAILURE` then 4401, and one
/// `auth_failure` warn line with a reason in `reasons`, the token's fingerprint, and no token.
async fn refused(server: &TestServer, token: &str, reasons: &[&str]) {
    let mut c = server.connect().await;
    c.send_json(json!({"type":"hello","token":token})).await;
    let (code, before) = c.until_close().await;
    assert_eq!(code, Some(4401), "{reasons:?}");
    assert!(
        matches!(before.as_slice(), [ServerMessage::Error(e)] if e.code == ErrorCode::AuthFailure),
        "{reasons:?}: {before:?}"
    );
    let print = fingerprint(token);
    let line = logs::wait_for("auth_failure", |l| {
        l["data"]["token_fingerprint"] == print.as_str()
    })
    .await;
    assert_eq!(line["level"], "warn");
    let reason = line["data"]["reason"].as_str().unwrap_or_default();
    assert!(reasons.contains(&reason), "{reason} not in {reasons:?}");
    logs::assert_absent(token);
}

#[tokio::test]
async fn forged_tampered_and_algorithm_confused_tokens_close_4401() {
    let server = TestServer::start_with(|c| c.limits.auth_failures.threshold = 1_000).await;
    let secret = TEST_SECRET.as_bytes();
    let now = unix_now();

    // Signed with another key.
    let other = Authenticator::new(&AuthConfig::with_secret(
        "attacker-secret-0123456789abcdef0123456789abcdef",
    ));
    let forged = other.sign(&claims("mallory", now + 3600)).unwrap();
    refused(&server, &forged, &["bad_signature"]).await;

    // A genuine token whose claims were swapped for more rights / another sub.
    let genuine = server.token("alice");
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(raw_claims("admin").to_string().as_bytes()),
        parts[2]
    );
    refused(&server, &tampered, &["bad_signature"]).await;

    // The signature stripped.
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    refused(&server, &stripped, &["bad_signature", "malformed"]).await;

    // `alg: none` in its spellings, unsigned.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        let body = b64(raw_claims("mallory").to_string().as_bytes());
        refused(&server, &format!("{header}.{body}."), &["wrong_algorithm"]).await;
    }
    // Other HMAC strengths with the right key: the algorithm is pinned, not negotiated.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = jsonwebtoken::encode(
            &Header::new(alg),
            &raw_claims("mallory"),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        refused(&server, &token, &["wrong_algorithm"]).await;
    }
    // HS/RS confusion: an asymmetric `alg`, HMAC-signed (here even with the real secret).
    for alg in ["RS256", "ES256", "EdDSA", "PS256"] {
        let token = with_header(
            json!({"alg": alg, "typ": "JWT"}),
            &raw_claims("mallory"),
            secret,
        );
        refused(&server, &token, &["wrong_algorithm"]).await;
    }
    // A header without `alg`, and a duplicated segment count.
    let token = with_header(json!({"typ": "JWT"}), &raw_claims("mallory"), secret);
    refused(&server, &token, &["malformed", "wrong_algorithm"]).await;
    refused(&server, &format!("{genuine}.{}", parts[2]), &["malformed"]).await;
    refused(&server, "not-a-jwt", &["malformed"]).await;

    // Correctly signed, but without the required claims.
    for missing in ["exp", "sub"] {
        let mut body = raw_claims("nobody");
        body.as_object_mut().unwrap().remove(missing);
        let token = with_header(json!({"alg":"HS256","typ":"JWT"}), &body, secret);
        refused(&server, &token, &["missing_claim"]).await;
    }
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_within_a_5_s_leeway() {
    let server = TestServer::start_with(|c| c.limits.auth_failures.threshold = 1_000).await;
    let now = unix_now();
    let sign = |c: &Claims| server.auth.sign(c).unwrap();
    refused(&server, &sign(&claims("late", now - 3600)), &["expired"]).await;
    // Past the leeway by a little.
    refused(&server, &sign(&claims("late", now - 30)), &["expired"]).await;
    let mut early = claims("early", now + 3600);
    early.nbf = Some(now + 120);
    refused(&server, &sign(&early), &["not_yet_valid"]).await;
    // Inside the leeway: a small clock skew is tolerated.
    let mut skewed = claims("skewed", now + 3600);
    skewed.nbf = Some(now + 2);
    let mut c = server.connect().await;
    c.hello(&sign(&skewed)).await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let server = TestServer::start_with(|c| {
        c.auth.issuer = Some("https://issuer.example".into());
        c.auth.audience = Some("tether".into());
        c.limits.auth_failures.threshold = 1_000;
    })
    .await;
    // The server's own tokens carry both.
    let (_ok, _) = server.client("alice").await;
    let with = |issuer: Option<&str>, audience: Option<&str>| {
        let auth = Authenticator::new(&AuthConfig {
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
            ..AuthConfig::with_secret(TEST_SECRET)
        });
        auth.sign(&Claims {
            iss: issuer.map(Into::into),
            aud: audience.map(|a| protocol::Audience::One(a.into())),
            ..claims("mallory", unix_now() + 3600)
        })
        .unwrap()
    };
    refused(
        &server,
        &with(None, None),
        &["wrong_issuer", "wrong_audience"],
    )
    .await;
    refused(
        &server,
        &with(Some("https://evil.example"), Some("tether")),
        &["wrong_issuer"],
    )
    .await;
    refused(
        &server,
        &with(Some("https://issuer.example"), Some("other")),
        &["wrong_audience"],
    )
    .await;
    refused(
        &server,
        &with(Some("https://issuer.example"), None),
        &["wrong_audience"],
    )
    .await;
}

#[tokio::test]
async fn a_refresh_cannot_change_sub_and_a_bad_one_leaves_the_token_in_force() {
    let server = TestServer::start_with(|c| c.limits.auth_failures.threshold = 1_000).await;
    let (mut c, welcome) = server.client("alice").await;
    let now = unix_now();
    let attempts = [
        ("another sub", server.token("mallory")),
        (
            "expired",
            server.auth.sign(&claims("alice", now - 3600)).unwrap(),
        ),
        (
            "forged",
            Authenticator::new(&AuthConfig::with_secret(
                "attacker-secret-0123456789abcdef0123456789abcdef",
            ))
            .sign(&claims("alice", now + 7200))
            .unwrap(),
        ),
        ("garbage", "garbage".to_owned()),
    ];
    for (i, (what, token)) in attempts.iter().enumerate() {
        c.send_json(json!({"type":"refresh","token":token})).await;
        let before = c.sync(i as u64).await;
        assert!(
            matches!(before.as_slice(), [ServerMessage::Error(e)] if e.code == ErrorCode::AuthFailure),
            "{what}: {before:?}"
        );
        logs::assert_absent(token);
    }
    let line = logs::wait_for("auth_failure", |l| {
        l["connectionId"] == welcome.connection_id.as_str() && l["data"]["phase"] == "refresh"
    })
    .await;
    assert_eq!(line["level"], "warn");
    // Still alice, still connected, still able to act on her rights.
    c.send_json(json!({"type":"subscribe","channel":"alice-room"}))
        .await;
    assert!(matches!(c.recv().await, ServerMessage::Subscribed(_)));
    // A proper refresh still works afterwards.
    c.send_json(json!({"type":"refresh","token":server.token("alice")}))
        .await;
    assert!(matches!(c.recv().await, ServerMessage::Refreshed(_)));
}

#[tokio::test]
async fn a_resumed_connection_is_validated_again() {
    let server = TestServer::start_with(|c| c.limits.auth_failures.threshold = 1_000).await;
    let (mut c, _) = server.client("alice").await;
    c.send_json(json!({"type":"subscribe","channel":"room"}))
        .await;
    assert!(matches!(c.recv().await, ServerMessage::Subscribed(_)));
    drop(c);
    // The same client comes back with its (now) expired token: refused before anything.
    let expired = server.auth.sign(&claims("alice", unix_now() - 60)).unwrap();
    refused(&server, &expired, &["expired"]).await;
    // Or tries to resume without a hello at all.
    let mut c = server.connect().await;
    c.send_json(json!({"type":"subscribe","channel":"room","since":0}))
        .await;
    let (code, before) = c.until_close().await;
    assert_eq!(code, Some(4401));
    assert!(
        matches!(before.as_slice(), [ServerMessage::Error(e)] if e.code == ErrorCode::AuthFailure)
    );
}

#[tokio::test]
async fn a_token_expiring_on_an_open_connection_ends_it_with_4401() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    let token = server.token_ttl("brief", Duration::from_secs(2));
    c.hello(&token).await;
    let (code, before) = c.until_close().await;
    assert_eq!(code, Some(4401));
    assert!(
        matches!(before.first(), Some(ServerMessage::TokenExpiring(_))),
        "{before:?}"
    );
    assert!(
        matches!(before.last(), Some(ServerMessage::Error(e)) if e.code == ErrorCode::AuthFailure),
        "{before:?}"
    );
    logs::assert_absent(&token);
}

#[tokio::test]
async fn http_bearer_tokens_get_the_same_checks_and_never_reach_the_logs() {
    let server = TestServer::start_with(|c| c.limits.auth_failures.threshold = 1_000).await;
    let secret = TEST_SECRET.as_bytes();
    let bad = [
        with_header(json!({"alg":"none"}), &raw_claims("m"), b""),
        with_header(json!({"alg":"RS256"}), &raw_claims("m"), secret),
        server.auth.sign(&claims("m", unix_now() - 3600)).unwrap(),
        Authenticator::new(&AuthConfig::with_secret(
            "attacker-secret-0123456789abcdef0123456789abcdef",
        ))
        .sign(&claims("m", unix_now() + 3600))
        .unwrap(),
    ];
    for token in &bad {
        let bearer = format!("Bearer {token}");
        let answer = server
            .http(
                "POST",
                "/v1/channels/room/messages",
                &[("Authorization", &bearer)],
                Some(r#"{"id":"x","data":1}"#),
            )
            .await;
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(answer.json()["error"]["code"], "AUTH_FAILURE");
        let print = fingerprint(token);
        logs::wait_for("auth_failure", |l| {
            l["data"]["token_fingerprint"] == print.as_str()
        })
        .await;
        logs::assert_absent(token);
    }
    // The good token works, and is not logged either.
    let good = server.token("backend");
    let bearer = format!("Bearer {good}");
    let answer = server
        .http(
            "POST",
            "/v1/channels/room/messages",
            &[("Authorization", &bearer)],
            Some(r#"{"id":"x","data":1}"#),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    logs::assert_absent(&good);
}

/// The real binary at `RUST_LOG=trace`, every token-bearing path exercised: no token appears
/// on stdout, neither as text nor as the hex of a frame dump.
#[tokio::test]
async fn the_binary_at_rust_log_trace_never_logs_a_token() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("TETHER_HOST", "127.0.0.1")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("t.db").display()),
        )
        .env("TETHER_JWT_SECRET", TEST_SECRET)
        .env("TETHER_LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the tether binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let port = loop {
        let line = rx
            .recv_timeout(crate::harness::TIMEOUT)
            .expect("server_started within the timeout");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        seen.push(line);
        if v["event"] == "server_started" {
            break v["data"]["port"].as_u64().expect("the port is logged");
        }
    };
    let auth = Authenticator::new(&AuthConfig::with_secret(TEST_SECRET));
    let good = auth.sign(&claims("traced", unix_now() + 3600)).unwrap();
    let refreshed = auth.sign(&claims("traced", unix_now() + 7200)).unwrap();
    let expired = auth.sign(&claims("traced", unix_now() - 3600)).unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws");

    let (ws, _) = crate::harness::within("connect", tokio_tungstenite::connect_async(&url))
        .await
        .expect("upgrade");
    let mut c = crate::harness::Client { ws };
    c.hello(&good).await;
    c.send_json(json!({"type":"refresh","token":refreshed}))
        .await;
    assert!(matches!(c.recv().await, ServerMessage::Refreshed(_)));
    c.send_json(json!({"type":"refresh","token":expired})).await;
    assert!(matches!(c.recv().await, ServerMessage::Error(_)));
    let (ws, _) = crate::harness::within("connect", tokio_tungstenite::connect_async(&url))
        .await
        .expect("upgrade");
    let mut bad = crate::harness::Client { ws };
    bad.send_json(json!({"type":"hello","token":expired})).await;
    assert_eq!(bad.until_close().await.0, Some(4401));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .unwrap();
    let bearer = format!("Bearer {good}");
    let answer = crate::harness::http_over(
        stream,
        &format!("127.0.0.1:{port}"),
        "POST",
        "/v1/channels/traced/messages",
        &[("Authorization", &bearer)],
        Some(r#"{"id":"t","data":1}"#),
    )
    .await;
    assert_eq!(answer.status, 201);
    drop(c);
    // The auth_failure of the bad hello is the last thing logged about tokens; wait for it.
    let print = fingerprint(&expired);
    loop {
        let line = rx
            .recv_timeout(crate::harness::TIMEOUT)
            .expect("the auth_failure line within the timeout");
        let done = line.contains("auth_failure") && line.contains(&print) && line.contains("hello");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen.extend(rx.try_iter());
    let all = seen.join("\n");
    assert!(
        all.contains("\"level\":\"trace\"") || all.contains("\"level\":\"debug\""),
        "RUST_LOG=trace took effect"
    );
    for token in [&good, &refreshed, &expired] {
        let hex: String = token.bytes().map(|b| format!("{b:x}")).collect();
        let payload = token.split('.').nth(1).expect("a payload segment");
        for (form, needle) in [
            ("text", token.as_str()),
            ("hex", hex.as_str()),
            ("payload", payload),
        ] {
            if let Some(line) = seen.iter().find(|l| l.contains(needle)) {
                panic!(
                    "a token ({form}) is in the logs: {}",
                    line.replace(needle, "<SECRET>")
                );
            }
        }
    }
}

const RSA_PRIVATE: &str = include_str!("keys/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa-public.pem");
const OTHER_RSA_PRIVATE: &str = include_str!("keys/other-rsa-private.pem");
const ED_PRIVATE: &str = include_str!("keys/ed25519-private.pem");
const ED_PUBLIC: &str = include_str!("keys/ed25519-public.pem");

fn asymmetric(alg: Algorithm, private_pem: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
    }
    .expect("a test private key");
    jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("signing works")
}

/// With a public key configured the algorithm is pinned to it: genuine RS256/EdDSA tokens pass;
/// the HS/RS confusion (HS256 signed with the public key as the HMAC secret), the server's own
/// HS256 tokens, `none`, and tokens of another key are refused.
#[tokio::test]
async fn public_key_algorithms_are_pinned_against_confusion() {
    use server::auth::JwtAlgorithm;
    for (algorithm, alg, private, public) in [
        (
            JwtAlgorithm::Rs256,
            Algorithm::RS256,
            RSA_PRIVATE,
            RSA_PUBLIC,
        ),
        (JwtAlgorithm::EdDsa, Algorithm::EdDSA, ED_PRIVATE, ED_PUBLIC),
    ] {
        let server = TestServer::start_with(|c| {
            c.auth.algorithm = algorithm;
            c.auth.public_key = Some(public.as_bytes().to_vec());
            c.limits.auth_failures.threshold = 1_000;
        })
        .await;
        let genuine = asymmetric(alg, private, &raw_claims("alice"));
        let mut c = server.connect().await;
        c.hello(&genuine).await;
        // HS/RS confusion: the attacker knows the public key and uses it as an HMAC secret.
        for key in [public.as_bytes(), public.trim().as_bytes()] {
            let confused = with_header(
                json!({"alg":"HS256","typ":"JWT"}),
                &raw_claims("mallory"),
                key,
            );
            refused(&server, &confused, &["wrong_algorithm"]).await;
        }
        // The server's own HS256 tokens are not accepted either.
        refused(&server, &server.token("mallory"), &["wrong_algorithm"]).await;
        let header = b64(json!({"alg":"none"}).to_string().as_bytes());
        let body = b64(raw_claims("mallory").to_string().as_bytes());
        refused(&server, &format!("{header}.{body}."), &["wrong_algorithm"]).await;
        if alg == Algorithm::RS256 {
            let other = asymmetric(alg, OTHER_RSA_PRIVATE, &raw_claims("mallory"));
            refused(&server, &other, &["bad_signature"]).await;
            // RS384/PS256 with the right key are other algorithms.
            for alt in [Algorithm::RS384, Algorithm::PS256] {
                refused(
                    &server,
                    &asymmetric(alt, private, &raw_claims("mallory")),
                    &["wrong_algorithm"],
                )
                .await;
            }
        }
        // Expiry rules are the same for every algorithm.
        let mut late = raw_claims("alice");
        late["exp"] = json!(unix_now() - 3600);
        refused(&server, &asymmetric(alg, private, &late), &["expired"]).await;
    }
}

/// An unusable algorithm setting stops the start with exit 2, naming the setting.
#[test]
fn a_bad_algorithm_or_public_key_setting_stops_the_start() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let rsa = dir.path().join("rsa.pem");
    std::fs::write(&rsa, RSA_PUBLIC).unwrap();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("TETHER_JWT_ALGORITHM", "none")], "TETHER_JWT_ALGORITHM"),
        (
            &[("TETHER_JWT_ALGORITHM", "RS256")],
            "TETHER_JWT_PUBLIC_KEY_FILE",
        ),
        (
            &[
                ("TETHER_JWT_ALGORITHM", "RS256"),
                ("TETHER_JWT_PUBLIC_KEY_FILE", garbage.to_str().unwrap()),
            ],
            "TETHER_JWT_PUBLIC_KEY_FILE",
        ),
        (
            &[
                ("TETHER_JWT_ALGORITHM", "EdDSA"),
                ("TETHER_JWT_PUBLIC_KEY_FILE", rsa.to_str().unwrap()),
            ],
            "TETHER_JWT_PUBLIC_KEY_FILE",
        ),
        (
            &[("TETHER_JWT_PUBLIC_KEY_FILE", rsa.to_str().unwrap())],
            "TETHER_JWT_PUBLIC_KEY_FILE",
        ),
    ];
    for (env, setting) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("serve")
            .env_clear()
            .env("PORT", "0")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("t.db").display()),
            )
            .env("TETHER_JWT_SECRET", TEST_SECRET)
            .envs(env.iter().copied())
            .output()
            .expect("the tether binary runs");
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(setting), "{env:?}: {stderr}");
    }
}
