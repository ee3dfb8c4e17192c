//! How a derived store follows its log under a trickle of appends: it
//! takes records in at its commit points, not once per group the writer
//! commits, a reader who waits for an LSN still gets it soon, and every
//! thread the stores run on has the configured (lower) priority.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trail_index::driver::{DerivedStore, Driver};
use trail_index::{DerivedLog, DerivedOptions, IndexError, Pace};
use trail_log::{Durability, EventInput, Head, Log, LogName, LogOptions, Store, StoredRecord};

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        verify_in_background: false,
        ..LogOptions::default()
    }
}

fn append_one(log: &Log, n: u64) {
    let id = format!("event-{n}");
    log.append_blocking(vec![EventInput::new(id, b"payload".to_vec())], false)
        .unwrap();
}

/// Counts what the driver hands it.
#[derive(Clone, Default)]
struct Counting {
    applies: Arc<AtomicUsize>,
    records: Arc<AtomicUsize>,
}

impl DerivedStore for Counting {
    const NAME: &'static str = "counting store";

    fn apply(&mut self, records: &[StoredRecord]) -> Result<(), IndexError> {
        self.applies.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records.len(), Ordering::Relaxed);
        Ok(())
    }

    fn commit(&mut self, _through: Head) -> Result<(), IndexError> {
        Ok(())
    }
}

fn wait_for(driver: &Driver<Counting>, lsn: u64) -> Duration {
    let started = Instant::now();
    while driver.progress().borrow().lsn() < lsn {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the store did not reach {lsn}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

#[test]
fn a_trickle_of_appends_is_taken_in_at_commit_points() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let log = store.get_or_create(&LogName::new("x").unwrap()).unwrap();
    let counting = Counting::default();
    let pace = Pace {
        commit_interval: Duration::from_millis(200),
        ..Pace::default()
    };
    let driver = Driver::start(Arc::clone(&log), counting.clone(), None, pace).unwrap();
    // 100 appends, one group each, over about 0.3 s: one apply per group
    // would be 100.
    for n in 0..100 {
        append_one(&log, n);
        std::thread::sleep(Duration::from_millis(3));
    }
    wait_for(&driver, 100);
    let applies = counting.applies.load(Ordering::Relaxed);
    assert_eq!(counting.records.load(Ordering::Relaxed), 100);
    assert!(
        applies <= 10,
        "100 single-record groups took {applies} applies; expected a few (one per commit point)"
    );

    // A reader who wants the next record gets it well before the 200 ms
    // commit interval ends.
    append_one(&log, 100);
    let started = Instant::now();
    driver.want(101);
    wait_for(&driver, 101);
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "a wanted record took {:?}",
        started.elapsed()
    );
}

/// The nice value of each of this process's threads, by thread name.
#[cfg(target_os = "linux")]
fn thread_nice_values() -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = entry.unwrap().path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // Fields after the command's closing parenthesis: state is field
        // 3, nice is field 19.
        let after = stat.rsplit_once(')').unwrap().1;
        let nice: i32 = after.split_whitespace().nth(16).unwrap().parse().unwrap();
        threads.push((name.trim().to_owned(), nice));
    }
    threads
}

#[cfg(target_os = "linux")]
#[test]
fn the_stores_threads_run_at_the_configured_priority() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let log = store.get_or_create(&LogName::new("nice").unwrap()).unwrap();
    let before: Vec<String> = thread_nice_values()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let derived = DerivedLog::open(
        dir.path(),
        Arc::clone(&log),
        DerivedOptions {
            nice: 7,
            ..DerivedOptions::default()
        },
    )
    .unwrap();
    append_one(&log, 0);
    let threads = thread_nice_values();
    let of = |prefix: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    for prefix in ["trail-query-", "trail-state-", "thrd-tantivy"] {
        let values = of(prefix);
        assert!(!values.is_empty(), "no thread named {prefix}*: {threads:?}");
        assert!(
            values.iter().all(|nice| *nice == 7),
            "{prefix}* threads run at nice {values:?}, not 7"
        );
    }
    // The caller's own thread keeps its priority.
    let this: Vec<i32> = threads
        .iter()
        .filter(|(name, _)| before.contains(name) && !name.starts_with("thrd-tantivy"))
        .map(|(_, nice)| *nice)
        .collect();
    assert!(
        this.iter().all(|nice| *nice == 0),
        "callers' threads changed: {this:?}"
    );
    drop(derived);
}
