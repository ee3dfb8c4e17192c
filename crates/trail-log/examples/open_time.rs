//! Measures how long a large log takes to open (`scripts/bench-open.sh`
//! drives it; docs/BENCHMARKS.md has the figures).
//!
//! - `open_time write DIR GIB`: writes a log `big` of about GIB GiB of
//!   512-byte events (batches of 1,000, no fsync), then closes it cleanly.
//! - `open_time append DIR`: appends to `big` until killed (the script
//!   SIGKILLs it, so the next open is a crash recovery).
//! - `open_time open DIR [full]`: opens the store and the log and prints the
//!   time until `head` answers, until the first durable append is
//!   acknowledged, and (unless `full`) how long background verification
//!   then took; `full` opens with `verify_on_open = true` instead.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trail_log::{Durability, EventInput, LogName, LogOptions, Store};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const EVENT_BYTES: usize = 512;
const BATCH: usize = 1_000;

fn log_name() -> LogName {
    LogName::new("big").expect("a valid name")
}

fn batch(next_id: &AtomicU64) -> Vec<EventInput> {
    let payload = vec![0x5au8; EVENT_BYTES];
    let first = next_id.fetch_add(BATCH as u64, Ordering::Relaxed);
    (first..first + BATCH as u64)
        .map(|id| EventInput::new(format!("open-time-{id:012}"), payload.clone()))
        .collect()
}

fn write(root: &Path, gib: u64) -> Result {
    let options = LogOptions {
        durability: Durability::None,
        verify_in_background: false,
        ..LogOptions::default()
    };
    let store = Store::open(root, options)?;
    let log = store.get_or_create(&log_name())?;
    let target = gib << 30;
    let next_id = Arc::new(AtomicU64::new(log.head().lsn.0));
    let start = Instant::now();
    // Two appending threads keep the writer busy on two cores.
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let log = Arc::clone(&log);
            let next_id = Arc::clone(&next_id);
            scope.spawn(move || -> std::result::Result<(), trail_log::LogError> {
                while log.stats().bytes < target {
                    log.append_blocking(batch(&next_id), false)?;
                }
                Ok(())
            });
        }
    });
    let stats = log.stats();
    println!(
        "wrote {} records, {:.2} GiB, in {:.1?}",
        stats.records,
        stats.bytes as f64 / f64::from(1u32 << 30),
        start.elapsed()
    );
    drop(log);
    store.close()?;
    Ok(())
}

fn append_until_killed(root: &Path) -> Result {
    let options = LogOptions {
        verify_in_background: false,
        ..LogOptions::default()
    };
    let store = Store::open(root, options)?;
    let log = store.get_or_create(&log_name())?;
    let next_id = AtomicU64::new(log.head().lsn.0 + 1_000_000_000);
    // Said once appends are being acknowledged (after the writer read the
    // sealed segments' event ids), so the kill lands mid-load.
    log.append_blocking(batch(&next_id), false)?;
    println!("appending until killed");
    loop {
        log.append_blocking(batch(&next_id), false)?;
    }
}

fn open(root: &Path, full: bool) -> Result {
    let options = LogOptions {
        verify_on_open: full,
        ..LogOptions::default()
    };
    let start = Instant::now();
    let store = Store::open(root, options)?;
    let log = store.get_or_create(&log_name())?;
    let head = log.head();
    let opened = start.elapsed();
    let receipt = log.append_blocking(
        vec![EventInput::new(
            format!("open-time-probe-{}", head.lsn),
            vec![1; EVENT_BYTES],
        )],
        false,
    )?;
    let appended = start.elapsed();
    let bytes: u64 = log
        .segments()
        .iter()
        .map(|segment| segment.data_bytes)
        .sum();
    println!(
        "opened {:.2} GiB, {} segments, head {}: head answered after {opened:.3?}, first durable append (lsn {}) after {appended:.3?}",
        bytes as f64 / f64::from(1u32 << 30),
        log.segments().len(),
        head.lsn,
        receipt[0].lsn,
    );
    if !full {
        let status = loop {
            let status = log.background_verification();
            if !status.running {
                break status;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        println!(
            "background verification: {} of {} segments, {} records, in {:.1?} after open{}",
            status.segments_verified,
            status.segments_total,
            status.records_verified,
            start.elapsed(),
            status
                .failure
                .map_or(String::new(), |failure| format!(", damage: {failure:?}"))
        );
    }
    drop(log);
    store.close()?;
    Ok(())
}

fn main() -> Result {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["write", root, gib] => write(Path::new(root), gib.parse()?),
        ["append", root] => append_until_killed(Path::new(root)),
        ["open", root] => open(Path::new(root), false),
        ["open", root, "full"] => open(Path::new(root), true),
        _ => Err("usage: open_time (write DIR GIB | append DIR | open DIR [full])".into()),
    }
}
