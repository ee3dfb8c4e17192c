//! Durable appends per second from 1, 16 and 64 concurrent appenders (512-byte
//! events, fdatasync before ack), next to the disk's own serial fdatasync
//! rate measured in the same run: group commit is what lets the log beat it.
//! `scripts/bench-log.sh` runs this and prints the ratios.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trail_log::{EventInput, LogName, LogOptions, Store};

fn bench_dir() -> PathBuf {
    let directory = std::env::var_os("TRAIL_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&directory).expect("bench directory");
    directory
}

/// 512 bytes + fdatasync, one after another, on a preallocated file (the
/// same kind of write the log does).
fn serial_fdatasync(criterion: &mut Criterion) {
    let directory = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let path = directory.path().join("fdatasync.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("file");
    let capacity: u64 = 64 << 20;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(capacity >> 20) {
        file.write_all(&zeros).expect("zero fill");
    }
    file.sync_all().expect("sync");
    let block = vec![0x5au8; 512];
    let mut offset = 0u64;
    let mut group = criterion.benchmark_group("disk");
    group.throughput(Throughput::Elements(1));
    group.bench_function("serial_fdatasync_512B", |bencher| {
        bencher.iter(|| {
            file.write_all_at(&block, offset).expect("write");
            file.sync_data().expect("fdatasync");
            offset = (offset + 512) % capacity;
        });
    });
    group.finish();
}

fn durable_appends(criterion: &mut Criterion) {
    let directory = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let store = Store::open(directory.path(), LogOptions::default()).expect("store");
    let log = store
        .get_or_create(&LogName::new("bench").expect("name"))
        .expect("log");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let next_id = Arc::new(AtomicU64::new(0));
    let payload = vec![0x42u8; 512];
    let mut group = criterion.benchmark_group("durable_append_512B");
    group.throughput(Throughput::Elements(1));
    for appenders in [1usize, 16, 64] {
        let before = log.stats();
        group.bench_function(format!("{appenders}_appenders"), |bencher| {
            bencher.iter_custom(|iterations| {
                let per_appender = iterations.div_ceil(appenders as u64);
                let start = Instant::now();
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..appenders)
                        .map(|_| {
                            let log = Arc::clone(&log);
                            let next_id = Arc::clone(&next_id);
                            let payload = payload.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_appender {
                                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                                    let event =
                                        EventInput::new(format!("bench-{id}"), payload.clone());
                                    log.append(vec![event], false).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("appender");
                    }
                });
                let elapsed = start.elapsed();
                // Report time per event actually appended.
                elapsed.mul_f64(iterations as f64 / (per_appender * appenders as u64) as f64)
            });
        });
        let after = log.stats();
        let groups = after.groups - before.groups;
        let records = after.records - before.records;
        eprintln!(
            "{appenders} appenders: {records} records in {groups} groups ({:.1} records per group), {} syncs",
            records as f64 / groups.max(1) as f64,
            after.syncs - before.syncs
        );
    }
    group.finish();
    store.close().expect("close");
}

/// The engine's CPU ceiling: four appenders sending 100-event requests with
/// fsync off, so the writer thread's per-event work (id check, framing, CRC,
/// chain hash, index upkeep) is what limits the rate.
fn batched_appends_without_fsync(criterion: &mut Criterion) {
    const APPENDERS: u64 = 4;
    const BATCH: u64 = 100;
    let directory = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let options = LogOptions {
        durability: trail_log::Durability::None,
        ..LogOptions::default()
    };
    let store = Store::open(directory.path(), options).expect("store");
    let log = store
        .get_or_create(&LogName::new("batched").expect("name"))
        .expect("log");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let next_id = Arc::new(AtomicU64::new(0));
    let mut group = criterion.benchmark_group("engine_cpu_512B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("4_appenders_batch_100_no_fsync", |bencher| {
        bencher.iter_custom(|iterations| {
            let requests = iterations.div_ceil(APPENDERS * BATCH);
            let start = Instant::now();
            runtime.block_on(async {
                let tasks: Vec<_> = (0..APPENDERS)
                    .map(|_| {
                        let log = Arc::clone(&log);
                        let next_id = Arc::clone(&next_id);
                        tokio::spawn(async move {
                            let payload = vec![0x42u8; 512];
                            for _ in 0..requests {
                                let first = next_id.fetch_add(BATCH, Ordering::Relaxed);
                                let events = (first..first + BATCH)
                                    .map(|id| {
                                        EventInput::new(format!("batched-{id}"), payload.clone())
                                    })
                                    .collect();
                                log.append(events, false).await.expect("append");
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("appender");
                }
            });
            start
                .elapsed()
                .mul_f64(iterations as f64 / (requests * APPENDERS * BATCH) as f64)
        });
    });
    group.finish();
    store.close().expect("close");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(6)).warm_up_time(Duration::from_secs(1));
    targets = serial_fdatasync, durable_appends, batched_appends_without_fsync
}
criterion_main!(benches);
