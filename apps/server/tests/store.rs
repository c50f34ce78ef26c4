//! The store suite, written once over `&dyn Store` so every backend runs the same checks.
//!
//! A backend adds itself with one `store_suite!` line naming an async constructor
//! `fn(&Path) -> Opened`: SQLite, and PostgreSQL (one fresh database per test on the cluster
//! of `TETHER_TEST_POSTGRES_URL`, or on a private cluster this process starts, see `pg/mod.rs`).

#[path = "store/calls.rs"]
mod calls;
mod pg;

use std::sync::Arc;
use std::time::Duration;

use protocol::Timestamp;
use serde_json::json;
use server::store::{
    self, Opened, PublishOutcome, PublishRequest, Store, StoreConfig, StoreEvent, StoredMessage,
};

const T0: i64 = 1_800_000_000_000;

fn req(channel: &str, sub: &str, id: &str, data: serde_json::Value, at: i64) -> PublishRequest {
    PublishRequest {
        channel: channel.into(),
        sub: sub.into(),
        id: id.into(),
        data,
        published_at: Timestamp::from_unix_millis(at),
    }
}

async fn stored(store: &dyn Store, r: PublishRequest) -> u64 {
    match store.publish(r).await.expect("publish") {
        PublishOutcome::Stored { offset } => offset,
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn offsets(msgs: &[StoredMessage]) -> Vec<u64> {
    msgs.iter().map(|m| m.offset).collect()
}

/// Bounded wait: no test may hang.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("store operation took more than 20 s")
}

// ---- the suite -------------------------------------------------------------------------

async fn offsets_start_at_one_without_gaps(s: &dyn Store) {
    let info = s.channel("room:1").await.unwrap();
    assert_eq!(info.latest_offset, 0);
    assert_eq!(info.oldest_retained, None);
    for i in 1..=3u64 {
        let o = stored(
            s,
            req("room:1", "u", &format!("m{i}"), json!({ "n": i }), T0),
        )
        .await;
        assert_eq!(o, i);
    }
    // Another channel counts on its own.
    assert_eq!(stored(s, req("room:2", "u", "m1", json!(1), T0)).await, 1);
    let info = s.channel_info("room:1").await.unwrap().unwrap();
    assert_eq!(info.latest_offset, 3);
    assert_eq!(info.oldest_retained, Some(1));
    assert_eq!(s.channel_info("nope").await.unwrap(), None);
}

async fn duplicate_returns_first_offset(s: &dyn Store) {
    let first = stored(s, req("c", "alice", "id-1", json!({"a":1,"b":[1,2]}), T0)).await;
    stored(s, req("c", "alice", "id-2", json!(2), T0)).await;
    // Same data with keys in another order is the same data.
    let again = s
        .publish(req("c", "alice", "id-1", json!({"b":[1,2],"a":1}), T0 + 5))
        .await
        .unwrap();
    assert_eq!(again, PublishOutcome::Duplicate { offset: first });
    // Another publisher may use the same id.
    assert_eq!(stored(s, req("c", "bob", "id-1", json!(9), T0)).await, 3);
    assert_eq!(s.channel_info("c").await.unwrap().unwrap().latest_offset, 3);
    assert_eq!(s.read("c", 0, 100).await.unwrap().len(), 3);
}

async fn conflict_on_same_id_other_data(s: &dyn Store) {
    let first = stored(s, req("c", "alice", "x", json!({"v":1}), T0)).await;
    let r = s
        .publish(req("c", "alice", "x", json!({"v":2}), T0))
        .await
        .unwrap();
    assert_eq!(r, PublishOutcome::Conflict { offset: first });
    assert_eq!(s.channel_info("c").await.unwrap().unwrap().latest_offset, 1);
}

async fn racing_retries_store_once(s: Arc<dyn Store>) {
    // Many ids, each published from two tasks at once: every id gets exactly one offset.
    let mut tasks = Vec::new();
    for task in 0..2 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..50 {
                let r = s
                    .publish(req("race", "u", &format!("id{i}"), json!(i), T0))
                    .await
                    .unwrap();
                out.push((i, task, r));
            }
            out
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    for i in 0..50 {
        let pair: Vec<PublishOutcome> = results
            .iter()
            .filter(|(id, _, _)| *id == i)
            .map(|(_, _, r)| *r)
            .collect();
        assert_eq!(pair.len(), 2);
        let stored_count = pair
            .iter()
            .filter(|r| matches!(r, PublishOutcome::Stored { .. }))
            .count();
        assert_eq!(stored_count, 1, "id{i}: {pair:?}");
        let offs: Vec<u64> = pair
            .iter()
            .map(|r| match r {
                PublishOutcome::Stored { offset } | PublishOutcome::Duplicate { offset } => *offset,
                PublishOutcome::Conflict { .. } => panic!("no conflict expected"),
            })
            .collect();
        assert_eq!(offs[0], offs[1], "id{i}");
    }
    let all = s.read("race", 0, 1000).await.unwrap();
    assert_eq!(offsets(&all), (1..=50).collect::<Vec<_>>());
}

async fn calls_are_stored_in_call_order(s: &dyn Store) {
    // Futures created in order and awaited in reverse: stored in call order.
    let futs: Vec<_> = (0..20)
        .map(|i| s.publish(req("ord", "u", &format!("o{i}"), json!(i), T0)))
        .collect();
    let mut outs = Vec::new();
    for f in futs.into_iter().rev() {
        outs.push(f.await.unwrap());
    }
    outs.reverse();
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            *o,
            PublishOutcome::Stored {
                offset: i as u64 + 1
            }
        );
    }
    let msgs = s.read("ord", 0, 100).await.unwrap();
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.data, json!(i));
    }
}

async fn read_ranges_and_limits(s: &dyn Store) {
    for i in 1..=10 {
        stored(s, req("r", "u", &format!("{i}"), json!({"i": i}), T0 + i)).await;
    }
    assert_eq!(
        offsets(&s.read("r", 0, 100).await.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(offsets(&s.read("r", 4, 3).await.unwrap()), vec![5, 6, 7]);
    assert_eq!(offsets(&s.read("r", 9, 100).await.unwrap()), vec![10]);
    assert!(s.read("r", 10, 100).await.unwrap().is_empty());
    assert!(s.read("r", 0, 0).await.unwrap().is_empty());
    assert!(s.read("unknown", 0, 10).await.unwrap().is_empty());
    let m = &s.read("r", 2, 1).await.unwrap()[0];
    assert_eq!(&*m.channel, "r");
    assert_eq!(m.id, "3");
    assert_eq!(m.sub, "u");
    assert_eq!(m.data, json!({"i": 3}));
    assert_eq!(m.published_at, Timestamp::from_unix_millis(T0 + 3));
}

async fn retention_trims_oldest_and_dedup_survives(s: &dyn Store) {
    // The suite's config keeps 5 messages and 1 h; dedup window 2 h.
    for i in 1..=8 {
        stored(s, req("ret", "u", &format!("k{i}"), json!(i), T0)).await;
    }
    let report = s
        .maintain(Timestamp::from_unix_millis(T0 + 1_000))
        .await
        .unwrap();
    assert_eq!(report.messages_trimmed, 3);
    let info = s.channel_info("ret").await.unwrap().unwrap();
    assert_eq!(info.latest_offset, 8);
    assert_eq!(info.oldest_retained, Some(4));
    assert_eq!(
        offsets(&s.read("ret", 0, 100).await.unwrap()),
        vec![4, 5, 6, 7, 8]
    );
    // A trimmed message's id is still remembered: a retry is a duplicate, not a new message.
    let r = s
        .publish(req("ret", "u", "k1", json!(1), T0 + 2_000))
        .await
        .unwrap();
    assert_eq!(r, PublishOutcome::Duplicate { offset: 1 });

    // Age: 1 h later everything is older than the retention age; ids still remembered.
    let later = T0 + 3_600_000 + 10_000;
    let report = s
        .maintain(Timestamp::from_unix_millis(later))
        .await
        .unwrap();
    assert_eq!(report.messages_trimmed, 5);
    assert_eq!(report.dedup_expired, 0);
    let info = s.channel_info("ret").await.unwrap().unwrap();
    assert_eq!((info.latest_offset, info.oldest_retained), (8, None));
    let r = s
        .publish(req("ret", "u", "k8", json!(8), later))
        .await
        .unwrap();
    assert_eq!(r, PublishOutcome::Duplicate { offset: 8 });

    // Past the dedup window the records expire and an old id is new again.
    let much_later = T0 + 3 * 3_600_000;
    let report = s
        .maintain(Timestamp::from_unix_millis(much_later))
        .await
        .unwrap();
    assert_eq!(report.dedup_expired, 8);
    assert_eq!(
        stored(s, req("ret", "u", "k1", json!(1), much_later)).await,
        9
    );
}

async fn dedup_window_is_checked_at_publish(s: &dyn Store) {
    stored(s, req("w", "u", "a", json!(1), T0)).await;
    // Outside the 2 h window, before any maintenance: a new message.
    let late = T0 + 2 * 3_600_000 + 1;
    assert_eq!(stored(s, req("w", "u", "a", json!(1), late)).await, 2);
    let r = s
        .publish(req("w", "u", "a", json!(1), late + 1))
        .await
        .unwrap();
    assert_eq!(r, PublishOutcome::Duplicate { offset: 2 });
}

async fn purge_changes_epoch_and_resets(s: &dyn Store) {
    stored(s, req("p", "u", "a", json!(1), T0)).await;
    stored(s, req("p", "u", "b", json!(2), T0)).await;
    let before = s.channel("p").await.unwrap();
    let after = s.purge("p").await.unwrap();
    assert_ne!(before.epoch, after.epoch);
    assert_eq!((after.latest_offset, after.oldest_retained), (0, None));
    assert!(s.read("p", 0, 100).await.unwrap().is_empty());
    let info = s.channel("p").await.unwrap();
    assert_eq!(info.epoch, after.epoch);
    assert_eq!(stored(s, req("p", "u", "a", json!(1), T0)).await, 1);
    // Epochs differ between channels.
    assert_ne!(s.channel("q").await.unwrap().epoch, info.epoch);
}

async fn events_announce_commits_in_order(
    s: &dyn Store,
    events: &mut tokio::sync::mpsc::Receiver<StoreEvent>,
) {
    let futs: Vec<_> = (0..30)
        .map(|i| {
            s.publish(req(
                if i % 2 == 0 { "e1" } else { "e2" },
                "u",
                &format!("{i}"),
                json!(i),
                T0,
            ))
        })
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    // A duplicate is not announced.
    s.publish(req("e1", "u", "0", json!(0), T0)).await.unwrap();
    s.purge("e2").await.unwrap();
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut purged = false;
    while !purged {
        match bounded(events.recv()).await.expect("events channel open") {
            StoreEvent::Committed(batch) => {
                seen.extend(batch.iter().map(|m| (m.channel.to_string(), m.offset)));
            }
            StoreEvent::Purged(info) => {
                assert_eq!(info.name, "e2");
                purged = true;
            }
        }
    }
    let e1: Vec<u64> = seen
        .iter()
        .filter(|(c, _)| c == "e1")
        .map(|(_, o)| *o)
        .collect();
    let e2: Vec<u64> = seen
        .iter()
        .filter(|(c, _)| c == "e2")
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(e1, (1..=15).collect::<Vec<_>>());
    assert_eq!(e2, (1..=15).collect::<Vec<_>>());
}

async fn ping_and_close(s: &dyn Store) {
    let rtt = s.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(5));
    s.close().await;
    assert!(s.ping().await.is_err());
    assert!(matches!(
        s.publish(req("x", "u", "1", json!(1), T0)).await,
        Err(server::store::StoreError::Closed)
    ));
}

/// Any sequence of publishes agrees with a simple model: per (sub, id) the first publish is
/// stored at the next offset, a repeat with the same data is a duplicate of it, a repeat with
/// other data a conflict; offsets have no gap; what is read back is what the model stored.
async fn agrees_with_model(s: &dyn Store, ops: &[(u8, u8, u8)]) {
    use std::collections::HashMap;
    let mut first: HashMap<(u8, u8), (u8, u64)> = HashMap::new();
    let mut next = 1u64;
    // Issue all calls first (as a busy connection would), then check every answer.
    let futs: Vec<_> = ops
        .iter()
        .map(|&(sub, id, data)| {
            s.publish(req(
                "model",
                &format!("s{sub}"),
                &format!("i{id}"),
                json!({ "d": data }),
                T0,
            ))
        })
        .collect();
    let mut expected_stored = Vec::new();
    for (&(sub, id, data), fut) in ops.iter().zip(futs) {
        let got = fut.await.unwrap();
        let want = match first.get(&(sub, id)) {
            None => {
                first.insert((sub, id), (data, next));
                expected_stored.push((next, sub, id, data));
                next += 1;
                PublishOutcome::Stored { offset: next - 1 }
            }
            Some(&(d, offset)) if d == data => PublishOutcome::Duplicate { offset },
            Some(&(_, offset)) => PublishOutcome::Conflict { offset },
        };
        assert_eq!(got, want, "op ({sub},{id},{data})");
    }
    let read = s.read("model", 0, 10_000).await.unwrap();
    let got: Vec<(u64, String, String, serde_json::Value)> = read
        .into_iter()
        .map(|m| (m.offset, m.sub, m.id, m.data))
        .collect();
    let want: Vec<(u64, String, String, serde_json::Value)> = expected_stored
        .into_iter()
        .map(|(o, sub, id, d)| (o, format!("s{sub}"), format!("i{id}"), json!({ "d": d })))
        .collect();
    assert_eq!(got, want);
}

// ---- backends --------------------------------------------------------------------------

fn suite_config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::sqlite(dir.join("db").join("tether.db"));
    c.retention_messages = 5;
    c.retention_max_age = Duration::from_secs(3_600);
    c.dedup_window = Duration::from_secs(2 * 3_600);
    c
}

async fn open_sqlite(dir: &std::path::Path) -> Opened {
    store::open(&suite_config(dir)).await.expect("open sqlite")
}

async fn open_pg(dir: &std::path::Path) -> Opened {
    let url = pg::database_for(dir).await;
    let mut c = suite_config(dir);
    c.postgres = Some(server::store::PostgresConfig::new(url, "n_suite"));
    store::open(&c).await.expect("open postgres")
}

macro_rules! store_suite {
    ($backend:ident, $open:ident) => {
        mod $backend {
            use super::*;

            async fn with_store<F, Fut>(f: F)
            where
                F: FnOnce(Arc<dyn Store>, tokio::sync::mpsc::Receiver<StoreEvent>) -> Fut,
                Fut: std::future::Future<Output = ()>,
            {
                let dir = tempfile::tempdir().unwrap();
                let opened = $open(dir.path()).await;
                let store = opened.store.clone();
                bounded(f(opened.store, opened.events)).await;
                store.close().await;
            }

            #[tokio::test]
            async fn offsets_gapless() {
                with_store(|s, _| async move { offsets_start_at_one_without_gaps(&*s).await })
                    .await;
            }
            #[tokio::test]
            async fn duplicates() {
                with_store(|s, _| async move { duplicate_returns_first_offset(&*s).await }).await;
            }
            #[tokio::test]
            async fn conflicts() {
                with_store(|s, _| async move { conflict_on_same_id_other_data(&*s).await }).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_retries() {
                with_store(|s, _| racing_retries_store_once(s)).await;
            }
            #[tokio::test]
            async fn call_order() {
                with_store(|s, _| async move { calls_are_stored_in_call_order(&*s).await }).await;
            }
            #[tokio::test]
            async fn reads() {
                with_store(|s, _| async move { read_ranges_and_limits(&*s).await }).await;
            }
            #[tokio::test]
            async fn retention() {
                with_store(
                    |s, _| async move { retention_trims_oldest_and_dedup_survives(&*s).await },
                )
                .await;
            }
            #[tokio::test]
            async fn dedup_window() {
                with_store(|s, _| async move { dedup_window_is_checked_at_publish(&*s).await })
                    .await;
            }
            #[tokio::test]
            async fn purge() {
                with_store(|s, _| async move { purge_changes_epoch_and_resets(&*s).await }).await;
            }
            #[tokio::test]
            async fn events() {
                with_store(|s, mut ev| async move {
                    events_announce_commits_in_order(&*s, &mut ev).await
                })
                .await;
            }
            #[tokio::test]
            async fn call_records() {
                with_store(|s, _| async move { calls::call_records_round_trip(&*s).await }).await;
            }
            #[tokio::test]
            async fn ping_close() {
                with_store(|s, _| async move { ping_and_close(&*s).await }).await;
            }
            #[test]
            fn model() {
                use proptest::prelude::*;
                let config = ProptestConfig {
                    cases: 16,
                    ..ProptestConfig::default()
                };
                proptest!(config, |(ops in proptest::collection::vec((0u8..2, 0u8..6, 0u8..2), 0..40))| {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(with_store(|s, _| async move { agrees_with_model(&*s, &ops).await }));
                });
            }
            #[tokio::test]
            async fn reopen_keeps_data() {
                let dir = tempfile::tempdir().unwrap();
                let epoch = {
                    let opened = $open(dir.path()).await;
                    drop(opened.events);
                    let s = opened.store;
                    for i in 1..=3 {
                        stored(&*s, req("keep", "u", &format!("{i}"), json!(i), T0)).await;
                    }
                    let epoch = s.channel("keep").await.unwrap().epoch;
                    s.close().await;
                    epoch
                };
                let opened = $open(dir.path()).await;
                let s = opened.store;
                let info = s.channel_info("keep").await.unwrap().unwrap();
                assert_eq!(
                    (info.epoch.as_str(), info.latest_offset),
                    (epoch.as_str(), 3)
                );
                assert_eq!(
                    offsets(&s.read("keep", 0, 10).await.unwrap()),
                    vec![1, 2, 3]
                );
                // Offsets continue, and dedup records survived the restart.
                assert_eq!(stored(&*s, req("keep", "u", "4", json!(4), T0)).await, 4);
                let r = s
                    .publish(req("keep", "u", "1", json!(1), T0))
                    .await
                    .unwrap();
                assert_eq!(r, PublishOutcome::Duplicate { offset: 1 });
                s.close().await;
            }
        }
    };
}

store_suite!(sqlite, open_sqlite);
store_suite!(postgres, open_pg);

/// SQLite specifics: the file and folder are created, WAL is on, and many concurrent
/// publishes are group-committed (not one transaction each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_creates_file_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = suite_config(dir.path());
    let opened = open_sqlite(dir.path()).await;
    assert!(config.path.exists());
    assert!(
        dir.path().join("db").join("tether.db-wal").exists(),
        "WAL mode"
    );
    let mut events = opened.events;
    let s = opened.store;
    let n = 2_000u64;
    let futs: Vec<_> = (0..n)
        .map(|i| s.publish(req("bulk", "u", &format!("{i}"), json!({"i": i}), T0)))
        .collect();
    let results = bounded(async {
        let mut out = Vec::new();
        for f in futs {
            out.push(f.await.unwrap());
        }
        out
    })
    .await;
    assert_eq!(results.last(), Some(&PublishOutcome::Stored { offset: n }));
    let mut batches = 0;
    let mut count = 0;
    while count < n {
        match bounded(events.recv()).await.unwrap() {
            StoreEvent::Committed(b) => {
                batches += 1;
                count += b.len() as u64;
            }
            StoreEvent::Purged(_) => {}
        }
    }
    assert_eq!(count, n);
    assert!(
        batches < n / 4,
        "{batches} transactions for {n} publishes: no group commit"
    );
    s.close().await;
}
