//! A derived store is trusted only when its watermark is a record of the
//! log it follows: stores copied from another log (same name, other
//! history), or from a longer one, are rebuilt and then answer for this
//! log; stores that match resume from their watermark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use trail_index::{DerivedLog, DerivedOptions, Filter, PageRequest, TextMatch};
use trail_log::{Durability, EventInput, Log, LogName, LogOptions, Store};
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{Event, StateChange};

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        verify_in_background: false,
        ..LogOptions::default()
    }
}

/// `count` events by `actor`, each setting `doc`'s state to its number.
fn append(log: &Log, actor: &str, count: u64) {
    let events = (0..count)
        .map(|n| {
            let event = Event {
                event_id: format!("{actor}-{n}"),
                actor: actor.to_owned(),
                action: "write".to_owned(),
                resource: "doc".to_owned(),
                change: Some(StateChange {
                    kind: Some(Kind::SetJson(format!("{{\"n\":{n},\"by\":\"{actor}\"}}"))),
                }),
                ..Event::default()
            };
            EventInput::new(event.event_id.clone(), event.encode_to_vec())
        })
        .collect();
    log.append_blocking(events, false).unwrap();
}

fn caught_up(derived: &DerivedLog, head: u64) {
    let started = Instant::now();
    while derived.query_progress().borrow().lsn() < head
        || derived.state_progress().borrow().lsn() < head
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "derived stores did not reach {head}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn by(derived: &DerivedLog, actor: &str, through: u64) -> Vec<u64> {
    let filter = Filter {
        actor: Some(TextMatch::Exact(actor.to_owned())),
        ..Filter::default()
    };
    derived
        .search(
            &filter,
            PageRequest {
                after: None,
                descending: false,
                limit: 1_000,
                through,
            },
        )
        .unwrap()
        .lsns
}

fn build(root: &Path, actor: &str, count: u64) {
    let store = Store::open(root, options()).unwrap();
    let log = store.get_or_create(&LogName::new("x").unwrap()).unwrap();
    append(&log, actor, count);
    let derived = DerivedLog::open(root, Arc::clone(&log), DerivedOptions::default()).unwrap();
    caught_up(&derived, count);
    drop(derived);
    assert!(log.retention_holders().is_empty(), "released when stopped");
    drop(log);
    store.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn stores_of_another_log_are_rebuilt_and_matching_ones_resume() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build(a.path(), "alice", 120);
    build(b.path(), "bob", 80);
    // Put alice's derived stores (watermark 120, alice's hashes) under
    // bob's log (80 records): past the head, and other hashes.
    for dir in ["derived", "snapshots"] {
        let _ = std::fs::remove_dir_all(b.path().join("x").join(dir));
        if a.path().join("x").join(dir).exists() {
            copy_dir(&a.path().join("x").join(dir), &b.path().join("x").join(dir));
        }
    }
    let store = Store::open(b.path(), options()).unwrap();
    let log = store.get(&LogName::new("x").unwrap()).unwrap().unwrap();
    let derived = DerivedLog::open(b.path(), Arc::clone(&log), DerivedOptions::default()).unwrap();
    caught_up(&derived, 80);
    assert_eq!(by(&derived, "alice", 80), Vec::<u64>::new());
    assert_eq!(by(&derived, "bob", 80), (1..=80).collect::<Vec<_>>());
    let state = derived.state().state("doc", None).unwrap();
    assert_eq!(state.state, Some(serde_json::json!({"n": 79, "by": "bob"})));
    assert_eq!(state.watermark.map(|w| w.lsn), Some(80));

    // The same stores, now bob's, resume where they were and take in more.
    drop(derived);
    append(&log, "carol", 5);
    let derived = DerivedLog::open(b.path(), Arc::clone(&log), DerivedOptions::default()).unwrap();
    assert!(
        derived.query_progress().borrow().lsn() >= 80,
        "resumed, not rebuilt"
    );
    caught_up(&derived, 85);
    assert_eq!(by(&derived, "carol", 85), (81..=85).collect::<Vec<_>>());
    assert_eq!(by(&derived, "bob", 85).len(), 80);
    // Both stores hold the log's segments until they took them in, so an
    // archive never removes what a store still has to read.
    let mut holders = log.retention_holders();
    holders.sort();
    assert_eq!(
        holders,
        vec![
            ("query index".to_owned(), trail_log::Lsn(85)),
            ("state store".to_owned(), trail_log::Lsn(85)),
        ]
    );
    drop(derived);
    assert!(log.retention_holders().is_empty(), "released when stopped");
    drop(log);
    store.close().unwrap();
}

/// A reader waiting for an LSN (`want_*`) gets it committed within a few
/// milliseconds, not at the end of a (here 30 s) commit interval; without a
/// waiter the store keeps to its interval.
#[test]
fn a_waiting_reader_gets_its_lsn_committed_soon() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let log = store.get_or_create(&LogName::new("x").unwrap()).unwrap();
    let pace = trail_index::Pace {
        commit_interval: Duration::from_secs(30),
        ..trail_index::Pace::default()
    };
    let derived = DerivedLog::open(
        dir.path(),
        Arc::clone(&log),
        DerivedOptions {
            pace,
            ..DerivedOptions::default()
        },
    )
    .unwrap();
    append(&log, "a", 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        derived.state_progress().borrow().lsn(),
        0,
        "nobody waits: the interval holds"
    );
    let started = Instant::now();
    derived.want_state(3);
    derived.want_query(3);
    caught_up(&derived, 3);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "committed for the waiter in {:?}",
        started.elapsed()
    );
    // Records that arrive after the want: committed as they are taken in.
    append(&log, "b", 2);
    derived.want_state(5);
    let started = Instant::now();
    while derived.state_progress().borrow().lsn() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "lsn 5 not committed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(derived);
}

/// A query index's writer lock held by another writer: opening waits for
/// it (about a second) and gets it once released; held all along, the
/// opening fails, naming the lock.
#[test]
fn a_busy_writer_lock_is_waited_for_then_reported() -> Result<(), Box<dyn std::error::Error>> {
    use trail_index::query_index::QueryIndexWriter;
    let directory = tempfile::tempdir()?;
    let path = directory.path().join("query");
    let (first, _) = QueryIndexWriter::open(&path)?;
    let error = QueryIndexWriter::open(&path)
        .err()
        .ok_or("a second writer opened beside the first")?;
    assert!(error.to_string().contains("opening its writer"), "{error}");
    assert!(error.to_string().contains("LockBusy"), "{error}");
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    let (second, _) = QueryIndexWriter::open(&path)?;
    releaser
        .join()
        .map_err(|_| "the releasing thread panicked")?;
    drop(second);
    Ok(())
}
