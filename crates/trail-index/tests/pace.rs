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

/// A thread of this process: its name, nice value and scheduling policy.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct ThreadPriority {
    name: String,
    nice: i32,
    /// 0: SCHED_OTHER (normal), 5: SCHED_IDLE.
    policy: u32,
}

#[cfg(target_os = "linux")]
const SCHED_IDLE: u32 = 5;

/// Every thread of this process, read from /proc.
#[cfg(target_os = "linux")]
fn thread_priorities() -> Vec<ThreadPriority> {
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
        // 3, nice is field 19, policy field 41.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        threads.push(ThreadPriority {
            name: name.trim().to_owned(),
            nice: fields[16].parse().unwrap(),
            policy: fields[38].parse().unwrap(),
        });
    }
    threads
}

/// Opens a log's stores with `nice` and `idle`, and checks that every
/// thread they run on (drivers, tantivy's) has them and the caller's
/// threads kept theirs.
#[cfg(target_os = "linux")]
fn check_store_threads(nice: i32, idle: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let log = store.get_or_create(&LogName::new("nice").unwrap()).unwrap();
    let before: Vec<String> = thread_priorities()
        .into_iter()
        .map(|thread| thread.name)
        .collect();
    let derived = DerivedLog::open(
        dir.path(),
        Arc::clone(&log),
        DerivedOptions {
            nice,
            idle,
            ..DerivedOptions::default()
        },
    )
    .unwrap();
    append_one(&log, 0);
    let threads = thread_priorities();
    let policy = if idle { SCHED_IDLE } else { 0 };
    for prefix in ["trail-query-", "trail-state-", "thrd-tantivy"] {
        let of: Vec<&ThreadPriority> = threads
            .iter()
            .filter(|thread| thread.name.starts_with(prefix))
            .collect();
        assert!(!of.is_empty(), "no thread named {prefix}*: {threads:?}");
        assert!(
            of.iter()
                .all(|thread| thread.nice == nice && thread.policy == policy),
            "{prefix}* threads are {of:?}, not nice {nice} in policy {policy}"
        );
    }
    // The caller's own threads keep their priority. (sled's IO pool is
    // process-wide: started by the first store opened, at its priority.)
    let callers: Vec<&ThreadPriority> = threads
        .iter()
        .filter(|thread| {
            before.contains(&thread.name)
                && !thread.name.starts_with("thrd-tantivy")
                && !thread.name.starts_with("sled-io")
        })
        .collect();
    assert!(
        callers
            .iter()
            .all(|thread| thread.nice == 0 && thread.policy == 0),
        "callers' threads changed: {callers:?}"
    );
    drop(derived);
}

// One test for every setting: two stores opened at once by parallel tests
// would show each other's tantivy threads.
#[cfg(target_os = "linux")]
#[test]
fn the_stores_threads_run_at_the_configured_priority_and_class() {
    assert!(
        DerivedOptions::default().idle,
        "the idle class is the default"
    );
    check_store_threads(7, false);
    check_store_threads(7, true);
    check_store_threads(0, true);
}
