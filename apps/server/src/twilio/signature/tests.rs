//! Signature tests: Twilio's documented worked example, the twilio-python test vectors, and
//! vectors computed at test time by an independent implementation (Python's stdlib `hmac`,
//! and twilio-python's own `RequestValidator` when it is installed).

use std::process::Command;

use super::*;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn example_params() -> Vec<(String, String)> {
    params(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675310"),
        ("Digits", "1234"),
        ("From", "+14158675310"),
        ("To", "+18005551212"),
    ])
}

#[test]
fn twilio_documented_worked_example() {
    let url = "https://example.com/myapp.php?foo=1&bar=2";
    assert_eq!(
        compute(b"12345", url, &example_params()),
        "L/OH5YylLD5NRKLltdqwSvS0BnU="
    );
    let v = Validator::new(b"12345");
    assert!(v.webhook(url, &example_params(), "L/OH5YylLD5NRKLltdqwSvS0BnU="));
    // With the explicit default port, the same signature is accepted (Twilio drops it).
    assert!(v.webhook(
        "https://example.com:443/myapp.php?foo=1&bar=2",
        &example_params(),
        "L/OH5YylLD5NRKLltdqwSvS0BnU="
    ));
    assert!(!v.webhook(url, &example_params(), "L/OH5YylLD5NRKLltdqwSvS0BnV="));
    assert!(!v.webhook(url, &example_params(), ""));
    let mut tampered = example_params();
    tampered[2].1 = "1235".into();
    assert!(!v.webhook(url, &tampered, "L/OH5YylLD5NRKLltdqwSvS0BnU="));
    assert!(!Validator::new(b"12346").webhook(
        url,
        &example_params(),
        "L/OH5YylLD5NRKLltdqwSvS0BnU="
    ));
}

fn python_vector_params() -> Vec<(String, String)> {
    params(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ])
}

#[test]
fn twilio_python_vectors() {
    let v = Validator::new(b"12345");
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let p = python_vector_params();
    assert_eq!(compute(b"12345", url, &p), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    assert_eq!(
        compute(
            b"12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &p
        ),
        "kvajT1Ptam85bY51eRf/AJRuM3w="
    );
    // Port on/off in both directions.
    assert!(v.webhook(url, &p, "kvajT1Ptam85bY51eRf/AJRuM3w="));
    assert!(v.webhook(
        "https://mycompany.com:443/myapp.php?foo=1&bar=2",
        &p,
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    ));
    // Repeated values are de-duplicated and sorted, as twilio-python does.
    let mut multi = python_vector_params();
    multi.push(("Digits".into(), "1234".into()));
    assert_eq!(
        compute(b"12345", url, &multi),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
}

#[test]
fn json_body_with_body_sha256() {
    let body = br#"{"property": "value", "boolean": true}"#;
    let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    assert_eq!(body_hash(body), hash);
    assert_eq!(
        body_hash(br#"{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}"#),
        "5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9"
    );
    let url = format!("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={hash}");
    let v = Validator::new(b"12345");
    assert!(v.json(&url, body, "a9nBmqA0ju/hNViExpshrM61xv4="));
    // A different body fails even with the right signature over the URL.
    assert!(!v.json(
        &url,
        br#"{"property": "value", "boolean": false}"#,
        "a9nBmqA0ju/hNViExpshrM61xv4="
    ));
    // No bodySHA256 in the URL: refused.
    assert!(!v.json(
        "https://mycompany.com/myapp.php",
        body,
        "a9nBmqA0ju/hNViExpshrM61xv4="
    ));
}

#[test]
fn upgrade_variants_scheme_slash_and_port() {
    let v = Validator::new(b"tok");
    let emitted = "wss://gw.example.com/twilio/media";
    for signed in [
        "wss://gw.example.com/twilio/media",
        "wss://gw.example.com/twilio/media/",
        "https://gw.example.com/twilio/media",
        "https://gw.example.com/twilio/media/",
        "wss://gw.example.com:443/twilio/media",
        "https://gw.example.com:443/twilio/media/",
    ] {
        let sig = compute(b"tok", signed, &[]);
        assert!(v.upgrade(emitted, &sig), "{signed} must be accepted");
    }
    for signed in [
        "ws://gw.example.com/twilio/media",
        "wss://other.example.com/twilio/media",
        "wss://gw.example.com/twilio/medi",
        "wss://gw.example.com:8443/twilio/media",
    ] {
        let sig = compute(b"tok", signed, &[]);
        assert!(!v.upgrade(emitted, &sig), "{signed} must be refused");
    }
}

#[test]
fn port_variants_strip_credentials_and_handle_ipv6() {
    assert_eq!(
        port_variants("https://u:p@h:8443/x?q=1"),
        vec![
            "https://h:8443/x?q=1".to_owned(),
            "https://h/x?q=1".to_owned()
        ]
    );
    assert_eq!(
        port_variants("http://[::1]/x"),
        vec!["http://[::1]/x".to_owned(), "http://[::1]:80/x".to_owned()]
    );
    assert_eq!(port_variants("not a url"), vec!["not a url".to_owned()]);
}

/// Python 3 is required; the command is named when it is missing, so this cannot pass
/// vacuously.
fn python(script: &str) -> String {
    // A venv with `pip install twilio` (see docs/twilio.md) is preferred when present.
    let venv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/twilio-venv/bin/python"
    );
    let exe = std::env::var("TETHER_TEST_PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new(venv).exists() {
            venv.to_owned()
        } else {
            "python3".to_owned()
        }
    });
    let out = Command::new(&exe)
        .arg("-c")
        .arg(script)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs Python 3: `{exe} -c ...` failed to start: {e}")
        });
    assert!(
        out.status.success(),
        "`{exe}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python prints UTF-8")
}

/// (auth token, URL, form parameters).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const CASES: &[Case] = &[
    (
        "s3cr3t-token",
        "https://abc.ngrok-free.app/twilio/voice",
        &[
            ("CallSid", "CA0001"),
            ("AccountSid", "AC42"),
            ("From", "+15550001"),
            ("_x", "ü é"),
        ],
    ),
    (
        "another",
        "https://gw.example.org:8443/twilio/voice/after?x=%20y",
        &[
            ("CallSid", "CAzz"),
            ("Called", "+1"),
            ("CallStatus", "in-progress"),
            ("b", ""),
            ("B", "1"),
        ],
    ),
    ("t", "wss://gw.example.org/twilio/media", &[]),
];

#[test]
fn matches_python_stdlib_hmac() {
    let mut script = String::from(
        "import hmac, hashlib, base64\n\
         def sig(tok, url, params):\n\
         \x20   s = url + ''.join(k + v for k, v in sorted(params))\n\
         \x20   return base64.b64encode(hmac.new(tok.encode(), s.encode(), hashlib.sha1).digest()).decode()\n",
    );
    for (tok, url, ps) in CASES {
        script.push_str(&format!("print(sig({tok:?}, {url:?}, {ps:?}))\n"));
    }
    let out = python(&script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), CASES.len());
    for ((tok, url, ps), expected) in CASES.iter().zip(lines) {
        assert_eq!(compute(tok.as_bytes(), url, &params(ps)), expected, "{url}");
        assert!(Validator::new(tok.as_bytes()).webhook(url, &params(ps), expected));
    }
}

#[test]
fn matches_twilio_python_request_validator_when_installed() {
    let probe =
        python("import importlib.util; print(importlib.util.find_spec('twilio') is not None)");
    if probe.trim() != "True" {
        // The stdlib test above still checks against an independent implementation; this one
        // adds Twilio's own validator where it is installed (target/twilio-venv).
        eprintln!(
            "twilio-python not installed: python3 -m venv target/twilio-venv && target/twilio-venv/bin/pip install twilio"
        );
        return;
    }
    let mut script = String::from("from twilio.request_validator import RequestValidator\n");
    for (tok, url, ps) in CASES {
        let d: String = ps.iter().map(|(k, v)| format!("{k:?}: {v:?},")).collect();
        script.push_str(&format!(
            "print(RequestValidator({tok:?}).compute_signature({url:?}, {{{d}}}))\n"
        ));
    }
    let out = python(&script);
    for ((tok, url, ps), expected) in CASES.iter().zip(out.lines()) {
        assert_eq!(compute(tok.as_bytes(), url, &params(ps)), expected, "{url}");
    }
}
