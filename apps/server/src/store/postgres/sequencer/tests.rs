//! The sequencer's decisions: what each hint means for a tracked or untracked channel, and how
//! a database read is applied (epoch change, repeats, pages).

use super::*;
use protocol::Timestamp;

fn msg(channel: &str, offset: u64) -> StoredMessage {
    StoredMessage {
        channel: Arc::from(channel),
        offset,
        id: format!("i{offset}"),
        sub: "u".into(),
        data: serde_json::json!(offset),
        published_at: Timestamp::from_unix_millis(0),
    }
}

fn local(channel: &str, epoch: &str, offsets: std::ops::RangeInclusive<u64>) -> Hint {
    Hint::Local {
        epoch: epoch.into(),
        messages: offsets.map(|o| msg(channel, o)).collect(),
    }
}

fn offsets(step: &Step) -> Vec<u64> {
    match step {
        Step::Emit(m) => m.iter().map(|m| m.offset).collect(),
        other => panic!("expected Emit, got {other:?}"),
    }
}

fn notice(channel: &str, epoch: &str, last: u64) -> Hint {
    Hint::Notice {
        channel: Arc::from(channel),
        epoch: epoch.into(),
        last,
    }
}

#[test]
fn local_commits_that_continue_are_announced_directly() {
    let mut t = Tracks::default();
    assert_eq!(offsets(&t.hint(local("c", "E", 1..=3))), vec![1, 2, 3]);
    assert_eq!(offsets(&t.hint(local("c", "E", 4..=4))), vec![4]);
    // A repeat announces nothing.
    assert_eq!(t.hint(local("c", "E", 3..=4)), Step::Nothing);
    // Our own notice comes back: nothing new.
    assert_eq!(t.hint(notice("c", "E", 4)), Step::Nothing);
    assert_eq!(t.last("c"), Some(4));
}

#[test]
fn a_gap_or_another_epoch_means_read_the_database() {
    let mut t = Tracks::default();
    t.hint(local("c", "E", 1..=2));
    // Another node committed 3..4; our 5 arrived first.
    assert_eq!(t.hint(local("c", "E", 5..=5)), Step::Sync(Arc::from("c")));
    assert_eq!(t.last("c"), Some(2), "nothing announced past the gap");
    assert_eq!(t.hint(local("c", "F", 1..=1)), Step::Sync(Arc::from("c")));
    assert_eq!(t.hint(notice("c", "E", 3)), Step::Sync(Arc::from("c")));
    assert_eq!(t.hint(notice("c", "F", 1)), Step::Sync(Arc::from("c")));
}

#[test]
fn notices_for_untracked_channels_are_ignored_until_someone_watches() {
    let mut t = Tracks::default();
    assert_eq!(t.hint(notice("c", "E", 7)), Step::Nothing);
    assert_eq!(t.last("c"), None);
    let watch = Hint::Watch {
        channel: Arc::from("c"),
        epoch: "E".into(),
        latest: 7,
    };
    // Tracking starts at what was read, with a sync for what a missed notice announced.
    assert_eq!(t.hint(watch), Step::Sync(Arc::from("c")));
    assert_eq!(t.last("c"), Some(7));
    let again = Hint::Watch {
        channel: Arc::from("c"),
        epoch: "E".into(),
        latest: 7,
    };
    assert_eq!(t.hint(again), Step::Nothing);
}

#[test]
fn reads_announce_only_what_is_new_and_resets_start_over() {
    let mut t = Tracks::default();
    let c: Arc<str> = Arc::from("c");
    t.hint(local("c", "E", 1..=2));
    let (ev, again) = t.apply_read(&c, "E", (1..=5).map(|o| msg("c", o)).collect());
    assert!(!again);
    match &ev[..] {
        [StoreEvent::Committed(b)] => {
            assert_eq!(
                b.iter().map(|m| m.offset).collect::<Vec<_>>(),
                vec![3, 4, 5]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.last("c"), Some(5));
    let (ev, again) = t.apply_read(&c, "E", Vec::new());
    assert!(ev.is_empty() && !again);
    // The epoch changed (purged elsewhere): announce it, then read from 0.
    let (ev, again) = t.apply_read(&c, "F", (6..=7).map(|o| msg("c", o)).collect());
    assert!(again);
    match &ev[..] {
        [StoreEvent::Purged(info)] => {
            assert_eq!((info.epoch.as_str(), info.latest_offset), ("F", 0))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.last("c"), Some(0));
    let (_, again) = t.apply_read(&c, "F", (1..=PAGE as u64).map(|o| msg("c", o)).collect());
    assert!(again, "a full page is followed by another read");
}

#[test]
fn a_local_purge_reads_the_new_epoch_back() {
    let mut t = Tracks::default();
    t.hint(local("c", "E", 1..=3));
    assert_eq!(
        t.hint(Hint::Purged(Arc::from("c"))),
        Step::Sync(Arc::from("c"))
    );
    // Untracked purges start tracking with an unknown epoch, so the read announces the reset.
    assert_eq!(
        t.hint(Hint::Purged(Arc::from("d"))),
        Step::Sync(Arc::from("d"))
    );
    let (ev, _) = t.apply_read(&Arc::from("d"), "G", Vec::new());
    assert!(matches!(&ev[..], [StoreEvent::Purged(_)]));
}
