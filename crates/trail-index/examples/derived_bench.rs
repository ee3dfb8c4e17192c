//! The derived-state benchmark (`scripts/bench-derived.sh` runs it in
//! release; docs/BENCHMARKS.md has the figures). In one process, on one log
//! of EVENTS synthetic audit events (10,000 actors, 100,000 resources, one
//! hot resource with 10,000 state changes):
//!
//! 1. the writer's peak: appends in batches of 1,000, fsync before ack;
//! 2. the indexer's throughput: each store catching up from nothing,
//!    alone (the query index, then the state store);
//! 3. lag under load: appenders at full speed for a while with both stores
//!    following, the largest lag seen, and how fast it drains after;
//! 4. selective queries on the whole log: one actor among 10,000 and a
//!    resource prefix, first 100 by LSN, records read from the log;
//! 5. GetState at the first and the last of the hot resource's changes;
//! 6. size on disk per event.
//!
//! `derived_bench EVENTS` (default 1,000,000).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use trail_index::{DerivedLog, DerivedOptions, Filter, PageRequest, TextMatch};
use trail_log::{Durability, EventInput, Log, LogName, LogOptions, Lsn, Store};
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{Event, Outcome, StateChange};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const BATCH: u64 = 1_000;
const HOT_CHANGES: u64 = 10_000;

fn event(id: u64, hot_every: u64) -> EventInput {
    let hot = hot_every > 0 && id.is_multiple_of(hot_every);
    let resource = if hot {
        "order/hot".to_owned()
    } else {
        format!("order/{}", id % 100_000)
    };
    let change = if hot {
        Some(StateChange {
            kind: Some(Kind::MergePatchJson(format!(
                r#"{{"status":"s{}","seq":{id},"by":"actor-{}"}}"#,
                id % 7,
                id % 10_000
            ))),
        })
    } else if id.is_multiple_of(4) {
        Some(StateChange {
            kind: Some(Kind::MergePatchJson(format!(
                r#"{{"status":"s{}"}}"#,
                id % 5
            ))),
        })
    } else {
        None
    };
    let event = Event {
        event_id: format!("bench-{id:012}"),
        actor: format!("actor-{}", id % 10_000),
        action: ["order.create", "order.update", "refund.create", "login"][(id % 4) as usize]
            .to_owned(),
        resource,
        trace_id: format!("{:032x}", id / 3),
        outcome: Outcome::Success as i32,
        occurred_at_unix_nanos: 1_700_000_000_000_000_000 + i64::try_from(id).unwrap_or(0),
        attributes: [(
            "region".to_owned(),
            ["eu", "us"][(id % 2) as usize].to_owned(),
        )]
        .into(),
        payload: vec![b'x'; 256],
        change,
        compensation: None,
    };
    EventInput::new(event.event_id.clone(), event.encode_to_vec())
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}

fn wait_caught_up(derived: &DerivedLog, head: u64) -> Duration {
    let started = Instant::now();
    while derived.query_progress().borrow().lsn() < head
        || derived.state_progress().borrow().lsn() < head
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

fn main() -> Result {
    let events: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |n| n.parse())?;
    let hot_every = (events / HOT_CHANGES).max(1);
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let options = LogOptions {
        durability: Durability::Sync,
        verify_in_background: false,
        ..LogOptions::default()
    };
    let store = Store::open(root, options)?;
    let name = LogName::new("bench")?;
    let log: Arc<Log> = store.get_or_create(&name)?;

    // 1. The writer's peak, no follower.
    let started = Instant::now();
    let mut next = 1;
    while next <= events {
        let batch: Vec<EventInput> = (next..(next + BATCH).min(events + 1))
            .map(|id| event(id, hot_every))
            .collect();
        next += batch.len() as u64;
        log.append_blocking(batch, false)?;
    }
    let append_secs = started.elapsed().as_secs_f64();
    println!("writer peak: {events} events in {append_secs:.2} s = {:.0} events/s (batches of {BATCH}, fsync before ack)", events as f64 / append_secs);
    let head = log.head().lsn.0;

    // 2. Each store catching up alone, from nothing.
    let derived = DerivedLog::open(root, Arc::clone(&log), DerivedOptions::default())?;
    let caught = wait_caught_up(&derived, head);
    println!(
        "catch-up, both stores following from nothing: {head} records in {:.2} s = {:.0} records/s",
        caught.as_secs_f64(),
        head as f64 / caught.as_secs_f64()
    );
    drop(derived);
    let query_bytes = dir_bytes(&root.join("bench/derived/query"));
    let state_bytes = dir_bytes(&root.join("bench/derived/state"));
    let log_bytes = dir_bytes(&root.join("bench/wal"));
    println!(
        "size per event: query index {:.1} B, state store {:.1} B (log itself {:.1} B)",
        query_bytes as f64 / head as f64,
        state_bytes as f64 / head as f64,
        log_bytes as f64 / head as f64
    );
    for (store_name, path) in [
        ("query index", "bench/derived/query"),
        ("state store", "bench/derived/state"),
    ] {
        std::fs::remove_dir_all(root.join("bench/derived"))?;
        // Snapshots too: this measures catching up from the log alone.
        let _ = std::fs::remove_dir_all(root.join("bench/snapshots"));
        let derived = DerivedLog::open(root, Arc::clone(&log), DerivedOptions::default())?;
        let started = Instant::now();
        loop {
            let lsn = if store_name == "query index" {
                derived.query_progress().borrow().lsn()
            } else {
                derived.state_progress().borrow().lsn()
            };
            if lsn >= head {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = started.elapsed().as_secs_f64();
        println!("  {store_name} (the other store catching up beside it): {:.0} records/s, {secs:.2} s per {head} ({path})", head as f64 / secs);
        wait_caught_up(&derived, head);
        drop(derived);
    }

    // 3. Lag under load: appenders at full speed, both stores following.
    let derived = Arc::new(DerivedLog::open(
        root,
        Arc::clone(&log),
        DerivedOptions::default(),
    )?);
    wait_caught_up(&derived, head);
    let stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(AtomicU64::new(events + 1));
    let appended = Arc::new(AtomicU64::new(0));
    let load_secs = 10;
    let appenders: Vec<_> = (0..4)
        .map(|_| {
            let (log, stop, ids, appended) = (
                Arc::clone(&log),
                Arc::clone(&stop),
                Arc::clone(&ids),
                Arc::clone(&appended),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let first = ids.fetch_add(100, Ordering::Relaxed);
                    let batch = (first..first + 100).map(|id| event(id, 0)).collect();
                    if log.append_blocking(batch, false).is_ok() {
                        appended.fetch_add(100, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut lag_max = (0u64, 0u64);
    while started.elapsed() < Duration::from_secs(load_secs) {
        std::thread::sleep(Duration::from_millis(50));
        let head = log.head().lsn.0;
        lag_max.0 = lag_max
            .0
            .max(head - derived.query_progress().borrow().lsn().min(head));
        lag_max.1 = lag_max
            .1
            .max(head - derived.state_progress().borrow().lsn().min(head));
    }
    stop.store(true, Ordering::Relaxed);
    for appender in appenders {
        let _ = appender.join();
    }
    let rate = appended.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let head = log.head().lsn.0;
    let drained = wait_caught_up(&derived, head);
    println!(
        "under load ({rate:.0} events/s appended by 4 threads, batches of 100, for {load_secs} s): largest lag query index {} records ({:.2} s of appends), state store {} records ({:.2} s); drained {:.2} s after the load stopped",
        lag_max.0, lag_max.0 as f64 / rate, lag_max.1, lag_max.1 as f64 / rate, drained.as_secs_f64()
    );

    // 4. Selective queries over the whole log.
    let query = |filter: &Filter| -> Result<Duration> {
        let started = Instant::now();
        let page = derived.search(
            filter,
            PageRequest {
                after: None,
                descending: false,
                limit: 100,
                through: head,
            },
        )?;
        for lsn in &page.lsns {
            let record = log
                .read(Lsn(*lsn), Lsn(*lsn))
                .next()
                .ok_or("missing record")??;
            std::hint::black_box(record);
        }
        Ok(started.elapsed())
    };
    for (label, make) in [
        (
            "one actor among 10,000",
            Box::new(|i: u64| Filter {
                actor: Some(TextMatch::Exact(format!("actor-{}", i % 10_000))),
                ..Filter::default()
            }) as Box<dyn Fn(u64) -> Filter>,
        ),
        (
            "actor AND action",
            Box::new(|i: u64| Filter {
                actor: Some(TextMatch::Exact(format!("actor-{}", i % 10_000))),
                action: Some(TextMatch::Exact("order.create".into())),
                ..Filter::default()
            }),
        ),
        (
            "resource prefix order/12*",
            Box::new(|i: u64| Filter {
                resource: Some(TextMatch::Prefix(format!("order/1{}", i % 10))),
                ..Filter::default()
            }),
        ),
    ] {
        let mut samples = Vec::new();
        for i in 0..300 {
            samples.push(query(&make(i * 37))?);
        }
        let (p50, p99) = percentiles(samples);
        println!("query {label}, first 100 by LSN with records read from the log: p50 {p50:?}, p99 {p99:?}");
    }

    // 5. GetState at the first and the last change of the hot resource.
    let history = derived
        .state()
        .history("order/hot", 1, u64::MAX, usize::MAX)?;
    let (first, last) = (
        history.first().ok_or("no history")?.lsn,
        history.last().ok_or("no history")?.lsn,
    );
    for (label, at) in [("first", first), ("last", last)] {
        let mut samples = Vec::new();
        for _ in 0..1_000 {
            let started = Instant::now();
            std::hint::black_box(derived.state().state("order/hot", Some(at))?);
            samples.push(started.elapsed());
        }
        let (p50, p99) = percentiles(samples);
        println!(
            "GetState at the {label} of {} changes (lsn {at}): p50 {p50:?}, p99 {p99:?}",
            history.len()
        );
    }
    drop(derived);
    store.close()?;
    Ok(())
}
