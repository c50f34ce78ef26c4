//! Unit tests of the fleet summary on a local [`Fleet`] (the process-wide one is shared with
//! the other tests).
use std::time::{Duration, Instant};

use protocol::{Report, RttSummary};

use super::*;

fn rep(p95: Option<f64>, reconnects: Option<u64>, downtime: Option<u64>) -> Report {
    Report {
        rtt_ms: p95.map(|p| RttSummary {
            last: Some(p / 2.0),
            p50: Some(p / 3.0),
            p95: Some(p),
        }),
        reconnects,
        failed_attempts: None,
        downtime_ms: downtime,
        queue: Some(0),
        delivery_rate: Some(1.0),
    }
}

fn totals() -> Totals {
    Totals {
        connections: 3,
        publishes: PublishTotals {
            stored: 1,
            duplicate: 0,
            refused: 0,
        },
        deliveries: 2,
        slow_consumers: 0,
        auth_failures: 0,
        rate_limited: 0,
    }
}

#[test]
fn worst_lists_rank_by_their_own_figure() {
    let mut f = Fleet::default();
    let now = Instant::now();
    f.fold(
        now,
        "a",
        "c_a",
        Some("web/0.1.0"),
        &rep(Some(40.0), Some(1), Some(0)),
    )
    .unwrap();
    f.fold(
        now,
        "b",
        "c_b",
        None,
        &rep(Some(400.0), Some(0), Some(9_000)),
    )
    .unwrap();
    f.fold(now, "c", "c_c", None, &rep(Some(90.0), Some(7), Some(100)))
        .unwrap();
    let s = summarize(&f.entries(now), totals(), 2);
    let subs = |v: &[ClientEntry]| v.iter().map(|e| e.sub.clone()).collect::<Vec<_>>();
    assert_eq!(subs(&s.worst_rtt), ["b", "c"]);
    assert_eq!(subs(&s.worst_reconnects), ["c", "a"]);
    assert_eq!(subs(&s.worst_downtime), ["b", "c"]);
    assert_eq!(s.clients, 3);
    // p95 over three clients by nearest rank: the highest.
    assert_eq!(s.client_rtt_p95_ms, Some(400.0));
    assert_eq!(s.worst_rtt[0].client, None);
    assert_eq!(s.connections, 3);
}

#[test]
fn reconnects_count_increments_and_resets() {
    let mut f = Fleet::default();
    let now = Instant::now();
    let r = |n| rep(None, Some(n), None);
    assert_eq!(
        f.fold(now, "a", "c1", None, &r(2)).unwrap().new_reconnects,
        2
    );
    assert_eq!(
        f.fold(now, "a", "c2", None, &r(5)).unwrap().new_reconnects,
        3
    );
    assert_eq!(
        f.fold(now, "a", "c2", None, &r(5)).unwrap().new_reconnects,
        0
    );
    // A restarted client starts from zero again.
    assert_eq!(
        f.fold(now, "a", "c3", None, &r(1)).unwrap().new_reconnects,
        1
    );
    let e = &f.entries(now)[0];
    assert_eq!((e.reports, e.connection_id.as_str()), (4, "c3"));
}

#[test]
fn an_empty_report_keeps_what_was_known() {
    let mut f = Fleet::default();
    let now = Instant::now();
    f.fold(now, "a", "c1", None, &rep(Some(50.0), Some(1), Some(10)))
        .unwrap();
    let folded = f.fold(now, "a", "c1", None, &Report::default()).unwrap();
    assert_eq!(folded.rtt_seconds, None);
    let e = &f.entries(now)[0];
    assert_eq!(
        (e.rtt_p95_ms, e.reconnects, e.downtime_ms),
        (Some(50.0), 1, 10)
    );
}

#[test]
fn impossible_figures_are_refused_and_change_nothing() {
    let mut f = Fleet::default();
    let now = Instant::now();
    let bad = [
        (rep(Some(-1.0), None, None), "rtt_ms.last"),
        (rep(Some(f64::INFINITY), None, None), "rtt_ms.last"),
        (rep(Some(1e12), None, None), "rtt_ms.last"),
        (rep(None, None, Some(u64::MAX)), "downtime_ms"),
        (
            Report {
                delivery_rate: Some(1.5),
                ..Report::default()
            },
            "delivery_rate",
        ),
    ];
    for (r, field) in bad {
        let err = f.fold(now, "a", "c1", None, &r).unwrap_err();
        assert_eq!(err.field, field, "{r:?}");
    }
    assert!(f.entries(now).is_empty());
}

#[test]
fn the_summary_is_bounded_and_forgets_the_longest_silent() {
    let mut f = Fleet::default();
    let t0 = Instant::now();
    for i in 0..MAX_SUBS {
        let at = t0 + Duration::from_millis(u64::try_from(i).unwrap());
        f.fold(at, &format!("s{i}"), "c", None, &Report::default())
            .unwrap();
    }
    let later = t0 + Duration::from_secs(3_600);
    f.fold(
        later,
        "new",
        "c",
        Some(&"x".repeat(500)),
        &Report::default(),
    )
    .unwrap();
    let entries = f.entries(later);
    assert_eq!(entries.len(), MAX_SUBS);
    assert!(!entries.iter().any(|e| e.sub == "s0"), "the oldest went");
    let new = entries.iter().find(|e| e.sub == "new").unwrap();
    assert_eq!(new.client.as_ref().unwrap().len(), MAX_CLIENT_NAME);
    assert!(entries.iter().find(|e| e.sub == "s1").unwrap().age_s > 3_599.0);
}
