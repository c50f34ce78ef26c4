//! Unit tests of JWT verification: every refusal has its reason.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000;
const KEY: &str = "0123456789abcdef0123456789abcdef-test";

fn auth() -> Authenticator {
    Authenticator::new(&AuthConfig::with_secret(KEY))
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A token with any header and claims, signed HS256 with `key`.
fn hs256(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
    use hmac_sign::sign;
    let input = format!("{}.{}", b64(&header), b64(&claims));
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(sign(key, input.as_bytes()))
    )
}

/// HMAC-SHA256 by hand (RFC 2104), so the tests forge tokens independently of jsonwebtoken.
mod hmac_sign {
    use sha2::{Digest as _, Sha256};

    pub fn sign(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .to_vec()
    }
}

fn claims(exp: i64) -> serde_json::Value {
    json!({"sub": "alice", "exp": exp, "iat": NOW, "channels": {"subscribe": ["room:*"], "publish": ["room:1"]}})
}

fn header() -> serde_json::Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

#[test]
fn valid_token_verifies_with_rights() {
    let t = hs256(header(), claims(NOW + 60), KEY.as_bytes());
    let c = auth().verify_at(&t, NOW).unwrap();
    assert_eq!(c.sub, "alice");
    assert!(c.can_subscribe("room:7"));
    assert!(c.can_publish("room:1"));
    assert!(!c.can_publish("room:2"));
}

#[test]
fn sign_then_verify_round_trip() {
    let a = auth();
    let (token, claims) = a
        .issue(
            IssueRequest {
                sub: "svc".into(),
                subscribe: vec![ChannelGlob::parse("a:*").unwrap()],
                publish: vec![],
                ttl: Duration::from_secs(600),
                admin: true,
            },
            NOW,
        )
        .unwrap();
    assert_eq!((claims.iat, claims.exp), (Some(NOW), NOW + 600));
    let back = a.verify_at(&token, NOW + 1).unwrap();
    assert_eq!(back, claims);
    assert!(back.admin);
    // The header is exactly HS256.
    let head = token.split('.').next().unwrap();
    let head: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
    assert_eq!(head["alg"], "HS256");
}

#[test]
fn expired_and_leeway_boundary() {
    let a = auth();
    let t = hs256(header(), claims(NOW), KEY.as_bytes());
    assert!(a.verify_at(&t, NOW).is_ok());
    assert!(a.verify_at(&t, NOW + 5).is_ok(), "5 s leeway");
    assert_eq!(a.verify_at(&t, NOW + 6), Err(AuthError::Expired));
    // A configured leeway above 5 s is capped.
    let lax = Authenticator::new(&AuthConfig {
        leeway: Duration::from_secs(60),
        ..AuthConfig::with_secret(KEY)
    });
    assert_eq!(lax.verify_at(&t, NOW + 6), Err(AuthError::Expired));
}

#[test]
fn forged_signature_is_refused() {
    let t = hs256(header(), claims(NOW + 60), KEY.as_bytes());
    // Change the claims, keep the signature.
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    let mut forged = claims(NOW + 60);
    forged["channels"]["publish"] = json!(["*"]);
    parts[1] = b64(&forged);
    assert_eq!(
        auth().verify_at(&parts.join("."), NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn hs256_with_another_key_is_refused() {
    let t = hs256(
        header(),
        claims(NOW + 60),
        b"another-key-another-key-another-key!!",
    );
    assert_eq!(auth().verify_at(&t, NOW), Err(AuthError::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    let t = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(NOW + 60))
    );
    assert_eq!(
        auth().verify_at(&t, NOW),
        Err(AuthError::WrongAlgorithm("none".into()))
    );
    let t2 = format!(
        "{}.{}",
        b64(&json!({"alg": "none"})),
        b64(&claims(NOW + 60))
    );
    assert!(auth().verify_at(&t2, NOW).is_err());
}

#[test]
fn other_algorithms_are_refused() {
    for alg in ["HS384", "HS512", "RS256", "ES256"] {
        let t = hs256(json!({"alg": alg}), claims(NOW + 60), KEY.as_bytes());
        assert_eq!(
            auth().verify_at(&t, NOW),
            Err(AuthError::WrongAlgorithm(alg.into())),
            "{alg}"
        );
    }
}

#[test]
fn missing_exp_or_sub_is_refused() {
    let t = hs256(header(), json!({"sub": "alice"}), KEY.as_bytes());
    assert_eq!(
        auth().verify_at(&t, NOW),
        Err(AuthError::MissingClaim("exp"))
    );
    let t = hs256(header(), json!({"exp": NOW + 60}), KEY.as_bytes());
    assert_eq!(
        auth().verify_at(&t, NOW),
        Err(AuthError::MissingClaim("sub"))
    );
    let t = hs256(
        header(),
        json!({"sub": "a", "exp": "tomorrow"}),
        KEY.as_bytes(),
    );
    assert!(matches!(
        auth().verify_at(&t, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn nbf_in_the_future_is_refused() {
    let mut c = claims(NOW + 600);
    c["nbf"] = json!(NOW + 60);
    let t = hs256(header(), c, KEY.as_bytes());
    assert_eq!(auth().verify_at(&t, NOW), Err(AuthError::NotYetValid));
    assert!(
        auth().verify_at(&t, NOW + 55).is_ok(),
        "leeway applies to nbf too"
    );
    assert!(auth().verify_at(&t, NOW + 60).is_ok());
}

#[test]
fn malformed_tokens() {
    for t in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.x", "e30.!!!.x"] {
        let r = auth().verify_at(t, NOW);
        assert!(matches!(r, Err(AuthError::Malformed(_))), "{t:?}: {r:?}");
    }
    // A bad glob in the claims.
    let mut c = claims(NOW + 60);
    c["channels"]["subscribe"] = json!(["a b"]);
    let t = hs256(header(), c, KEY.as_bytes());
    assert!(matches!(
        auth().verify_at(&t, NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn issuer_and_audience_when_configured() {
    let strict = Authenticator::new(&AuthConfig {
        issuer: Some("tether".into()),
        audience: Some("chat".into()),
        ..AuthConfig::with_secret(KEY)
    });
    let t = hs256(header(), claims(NOW + 60), KEY.as_bytes());
    assert_eq!(strict.verify_at(&t, NOW), Err(AuthError::WrongIssuer));
    let mut c = claims(NOW + 60);
    c["iss"] = json!("tether");
    c["aud"] = json!(["other", "chat"]);
    assert!(
        strict
            .verify_at(&hs256(header(), c.clone(), KEY.as_bytes()), NOW)
            .is_ok()
    );
    c["aud"] = json!("other");
    assert_eq!(
        strict.verify_at(&hs256(header(), c, KEY.as_bytes()), NOW),
        Err(AuthError::WrongAudience)
    );
    // Without configured checks, iss/aud are accepted as they come.
    let mut c = claims(NOW + 60);
    c["aud"] = json!("anything");
    assert!(
        auth()
            .verify_at(&hs256(header(), c, KEY.as_bytes()), NOW)
            .is_ok()
    );
    // Issued tokens carry the configured iss/aud and pass the strict check.
    let (tok, _) = strict
        .issue(
            IssueRequest {
                sub: "s".into(),
                subscribe: vec![],
                publish: vec![],
                ttl: Duration::from_secs(60),
                admin: false,
            },
            NOW,
        )
        .unwrap();
    assert!(strict.verify_at(&tok, NOW).is_ok());
}

#[test]
fn errors_and_fingerprints_never_show_the_token() {
    let t = hs256(header(), claims(NOW - 100), KEY.as_bytes());
    let err = auth().verify_at(&t, NOW).unwrap_err();
    assert!(!err.to_string().contains(&t));
    assert_eq!(err.reason(), "expired");
    let fp = fingerprint(&t);
    assert_eq!(fp.len(), 12);
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(fp, fingerprint("other"));
    assert!(!format!("{:?}", AuthConfig::with_secret(KEY)).contains(KEY));
}

#[test]
fn verify_uses_the_clock() {
    let a = auth();
    let (t, _) = a
        .issue(
            IssueRequest {
                sub: "now".into(),
                subscribe: vec![],
                publish: vec![],
                ttl: Duration::from_secs(60),
                admin: false,
            },
            unix_now(),
        )
        .unwrap();
    assert!(a.verify(&t).is_ok());
}

#[test]
fn tokens_living_longer_than_the_maximum_are_refused() {
    let a = auth();
    let day = 86_400;
    let at_limit = hs256(header(), claims(NOW + day), KEY.as_bytes());
    assert!(
        a.verify_at(&at_limit, NOW).is_ok(),
        "exactly one day is allowed"
    );
    let beyond = hs256(header(), claims(NOW + day + 1), KEY.as_bytes());
    let err = a
        .verify_at(&beyond, NOW)
        .expect_err("a day and a second is too long");
    assert_eq!(err, AuthError::TooLong(86_400));
    assert_eq!(err.reason(), "ttl_too_long");
    // The same token is fine once less than the maximum remains.
    assert!(a.verify_at(&beyond, NOW + 1).is_ok());
    let short = Authenticator::new(&AuthConfig {
        max_ttl: Duration::from_secs(60),
        ..AuthConfig::with_secret(KEY)
    });
    let hour = hs256(header(), claims(NOW + 3_600), KEY.as_bytes());
    assert_eq!(short.verify_at(&hour, NOW), Err(AuthError::TooLong(60)));
}

#[test]
fn expiry_instant_is_where_verification_starts_refusing() {
    let a = auth();
    let t = hs256(header(), claims(NOW), KEY.as_bytes());
    let claims = a.verify_at(&t, NOW).expect("valid now");
    let expiry = a.expiry_millis(&claims);
    assert_eq!(
        expiry,
        (NOW + 5 + 1) * 1_000,
        "exp + 5 s leeway, then refused"
    );
    let last_ok = (expiry - 1) / 1_000;
    assert!(a.verify_at(&t, last_ok).is_ok());
    assert!(!a.expired_at(&claims, last_ok));
    assert_eq!(a.verify_at(&t, expiry / 1_000), Err(AuthError::Expired));
    assert!(a.expired_at(&claims, expiry / 1_000));
}

#[test]
fn fingerprint_is_twelve_hex_digits_of_sha256() {
    let print = fingerprint("a.b.c");
    assert_eq!(print.len(), 12);
    assert!(print.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(Fingerprint::of("a.b.c").to_string(), print);
    assert_ne!(fingerprint("a.b.d"), print);
}
