//! The Twilio call records (CONTRACT §10.4) on every backend: put/get round trip, a token
//! used once and only before it expires, state changes that keep what they are not given,
//! and the active list.

use protocol::Timestamp;
use serde_json::json;
use server::store::{CallRecord, CallState, Store};

fn record(sid: &str, started: i64) -> CallRecord {
    CallRecord {
        call_sid: sid.into(),
        account_sid: "AC0123".into(),
        stream_sid: None,
        state: CallState::Active,
        end_reason: None,
        resumes: 0,
        token_digest: Some(format!("digest-{sid}")),
        token_expires_at: Some(Timestamp::from_unix_millis(started + 60_000)),
        custom_parameters: json!({"caller": "+15550100", "note": "quote \" and ünïcode"}),
        started_at: Timestamp::from_unix_millis(started),
        updated_at: Timestamp::from_unix_millis(started),
    }
}

pub async fn call_records_round_trip(s: &dyn Store) {
    let t0 = 1_800_000_000_000;
    let a = record("CA_a", t0);
    s.call_put(&a).await.unwrap();
    assert_eq!(s.call_get("CA_a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.call_get("CA_missing").await.unwrap(), None);

    // Put again replaces the whole record.
    let mut a2 = a.clone();
    a2.resumes = 2;
    a2.token_digest = Some("digest-2".into());
    s.call_put(&a2).await.unwrap();
    assert_eq!(s.call_get("CA_a").await.unwrap().unwrap().resumes, 2);

    // The token: wrong digest, expired, then the right one once.
    let now = Timestamp::from_unix_millis(t0 + 1_000);
    let late = Timestamp::from_unix_millis(t0 + 60_001);
    assert!(
        !s.call_consume_token("CA_a", "digest-CA_a", now)
            .await
            .unwrap()
    );
    assert!(
        !s.call_consume_token("CA_a", "digest-2", late)
            .await
            .unwrap()
    );
    assert!(
        !s.call_consume_token("CA_missing", "digest-2", now)
            .await
            .unwrap()
    );
    assert!(s.call_consume_token("CA_a", "digest-2", now).await.unwrap());
    assert!(!s.call_consume_token("CA_a", "digest-2", now).await.unwrap());
    assert_eq!(
        s.call_get("CA_a").await.unwrap().unwrap().token_digest,
        None
    );

    // State changes keep what they are not given.
    s.call_put(&record("CA_b", t0 + 5)).await.unwrap();
    let t1 = Timestamp::from_unix_millis(t0 + 2_000);
    s.call_set_state("CA_a", CallState::Dropped, None, Some("MZ1"), t1)
        .await
        .unwrap();
    s.call_set_state("CA_a", CallState::Active, None, None, t1)
        .await
        .unwrap();
    let got = s.call_get("CA_a").await.unwrap().unwrap();
    assert_eq!(got.state, CallState::Active);
    assert_eq!(got.stream_sid.as_deref(), Some("MZ1"));
    assert_eq!(got.updated_at, t1);
    assert_eq!(got.resumes, 2, "set_state leaves the resume count alone");

    // Unknown calls are not created.
    s.call_set_state("CA_ghost", CallState::Ended, Some("stop"), None, t1)
        .await
        .unwrap();
    assert_eq!(s.call_get("CA_ghost").await.unwrap(), None);

    let active: Vec<String> = s
        .calls_active()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.call_sid)
        .collect();
    assert_eq!(active, ["CA_a", "CA_b"], "oldest first");

    s.call_set_state("CA_a", CallState::Ended, Some("stop"), None, t1)
        .await
        .unwrap();
    let ended = s.call_get("CA_a").await.unwrap().unwrap();
    assert_eq!(ended.end_reason.as_deref(), Some("stop"));
    let active = s.calls_active().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].call_sid, "CA_b");
}
