//! The archive benchmark (docs/BENCHMARKS.md, "Tiered storage"; run by
//! `scripts/bench-archive.sh`), in one run against the tests' S3 server
//! (s3s + s3s-fs on 127.0.0.1, SigV4 checked) in this process:
//!
//! 1. archive throughput (`prepare_segment` + `upload_segment`: check,
//!    zstd, create-only puts, read back) beside raw `object_store` puts of
//!    the same segment files, uncompressed and compressed;
//! 2. the compression ratio on audit events shaped like real ones;
//! 3. a cold and a warm read of an archived range through `ArchiveReader`;
//! 4. restore time per GiB;
//! 5. appends (4 threads, 100 per batch, fsync before ack) with an archive
//!    upload running beside them against none, rounds interleaved A B A B.
//!
//! Usage: archive_bench [LOG_MIB] [APPEND_SECONDS]  (defaults 512, 10)
//!   ARCHIVE_NICE  the priority the upload beside the appends compresses at
//!                 (default: the archiver's, 10; 0: normal priority)

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prost::Message;
use trail_archive::{prepare_segment, upload_segment, ArchiveReader, Encoding};
use trail_log::{Durability, EventInput, LogName, LogOptions, Lsn, Store};
use trail_proto::v1::{Event, Outcome};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

fn arg(index: usize, default: u64) -> u64 {
    std::env::args()
        .nth(index)
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// An audit event like a service sends: ids, a trace, attributes and a
/// small JSON payload, varied the way real ones are.
fn event(n: u64) -> Event {
    Event {
        event_id: format!("evt-{n:012}-{:08x}", n.wrapping_mul(2_654_435_761) as u32),
        actor: format!("user-{}@example.com", n % 5_000),
        action: ["order.update", "refund.create", "login", "config.push"][(n % 4) as usize]
            .to_owned(),
        resource: format!("order/{}", n % 100_000),
        trace_id: format!("{:032x}", u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        outcome: Outcome::Success as i32,
        occurred_at_unix_nanos: 1_767_225_600_000_000_000 + (n as i64) * 1_000_000,
        attributes: [
            ("ip".to_owned(), format!("10.{}.{}.{}", n % 7, n % 251, n % 13)),
            ("region".to_owned(), ["eu-west-1", "us-east-1"][(n % 2) as usize].to_owned()),
        ]
        .into(),
        payload: format!(
            r#"{{"amount":{},"currency":"EUR","items":{},"note":"customer asked for a change of address {}"}}"#,
            n % 10_000,
            n % 9,
            n % 1_000
        )
        .into_bytes(),
        change: None,
        compensation: None,
    }
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
}

/// Appends for `seconds` from 4 threads, 100 events per batch; events/s.
fn append_rate(log: &Arc<trail_log::Log>, seconds: u64, start: u64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let log = Arc::clone(log);
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let mut n = start + thread * 1_000_000_000;
                while Instant::now() < deadline {
                    let batch = (0..100)
                        .map(|_| {
                            n += 1;
                            let event = event(n);
                            EventInput::new(event.event_id.clone(), event.encode_to_vec())
                        })
                        .collect();
                    if log.append_blocking(batch, false).is_ok() {
                        count.fetch_add(100, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    count.load(Ordering::Relaxed) as f64 / seconds as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result {
    let log_mib = arg(1, 512);
    let append_seconds = arg(2, 10);
    // The priority the simulated compactor compresses at (the archiver's).
    let nice = std::env::var("ARCHIVE_NICE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(trail_archive::ARCHIVE_NICE_DEFAULT);
    let bucket = tempfile::tempdir()?;
    let server = common::S3Server::start(bucket.path()).await?;
    let target = server.target("bench");
    let raw: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(format!("http://{}", server.address))
            .with_allow_http(true)
            .with_bucket_name(common::BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(common::ACCESS_KEY)
            .with_secret_access_key(common::SECRET_KEY)
            .with_virtual_hosted_style_request(false)
            .build()?,
    );
    let name = LogName::new("bench")?;

    // The log: 64 MiB segments (the default), LOG_MIB of events.
    let data = tempfile::tempdir()?;
    let options = LogOptions {
        durability: Durability::None,
        ..LogOptions::default()
    };
    let store = Store::open(data.path(), options.clone())?;
    let log = store.get_or_create(&name)?;
    let mut n = 0u64;
    let mut written = 0u64;
    while written < log_mib << 20 {
        let batch: Vec<EventInput> = (0..1_000)
            .map(|_| {
                n += 1;
                let event = event(n);
                let bytes = event.encode_to_vec();
                written += bytes.len() as u64;
                EventInput::new(event.event_id, bytes)
            })
            .collect();
        tokio::task::block_in_place(|| log.append_blocking(batch, false))?;
    }
    log.seal_active().await?;
    let sealed: Vec<_> = log
        .segments()
        .into_iter()
        .filter(|info| info.sealed)
        .collect();
    let segment_bytes: u64 = sealed.iter().map(|info| info.file_bytes).sum();
    println!(
        "log: {n} events, {} segments, {:.1} MiB of segments, {:.0} bytes per event",
        sealed.len(),
        segment_bytes as f64 / (1 << 20) as f64,
        segment_bytes as f64 / n as f64
    );
    let files: Vec<Vec<u8>> = sealed
        .iter()
        .map(|info| std::fs::read(&info.path))
        .collect::<std::io::Result<_>>()?;

    println!();
    println!("| step | segment MiB/s | stored MiB | ratio to raw |");
    println!("| --- | ---: | ---: | ---: |");
    // Raw puts of the same files, uncompressed, then compressed.
    let started = Instant::now();
    for (index, file) in files.iter().enumerate() {
        let key = object_store::path::Path::from(format!("raw/{index}.seg"));
        raw.put(&key, PutPayload::from(file.clone())).await?;
    }
    let raw_plain = started.elapsed();
    let compressed: Vec<Vec<u8>> = files
        .iter()
        .map(|file| trail_archive::compress::encode(file, Encoding::default()))
        .collect::<std::io::Result<_>>()?;
    let stored: u64 = compressed.iter().map(|bytes| bytes.len() as u64).sum();
    let started = Instant::now();
    for (index, bytes) in compressed.iter().enumerate() {
        let key = object_store::path::Path::from(format!("raw/{index}.seg.zst"));
        raw.put(&key, PutPayload::from(bytes.clone())).await?;
    }
    let raw_zstd = started.elapsed();
    // The archive: check, compress, create-only puts, read back.
    let started = Instant::now();
    let mut previous = None;
    for info in &sealed {
        let prepared = tokio::task::block_in_place(|| {
            prepare_segment(&name, info, previous.as_ref(), Encoding::default(), 0)
        })?;
        previous = Some(upload_segment(&target, &name, prepared).await?);
    }
    let archived = started.elapsed();
    let raw_rate = mib_per_s(segment_bytes, raw_plain);
    println!(
        "| raw put, uncompressed | {raw_rate:.1} | {:.1} | 1.00 |",
        segment_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "| raw put of the zstd bytes (compression not timed) | {:.1} | {:.1} | {:.2} |",
        mib_per_s(segment_bytes, raw_zstd),
        stored as f64 / (1 << 20) as f64,
        mib_per_s(segment_bytes, raw_zstd) / raw_rate
    );
    println!(
        "| archive (check + zstd + create-only put + read back) | {:.1} | {:.1} | {:.2} |",
        mib_per_s(segment_bytes, archived),
        stored as f64 / (1 << 20) as f64,
        mib_per_s(segment_bytes, archived) / raw_rate
    );
    println!(
        "compression: {:.2}x ({} -> {} bytes, zstd level {})",
        segment_bytes as f64 / stored as f64,
        segment_bytes,
        stored,
        Encoding::default().zstd_level
    );

    // Cold and warm reads of 1,000 records in the middle of the archive.
    let reader = ArchiveReader::new(target.clone(), name.clone(), 256 << 20);
    let from = Lsn(n / 2);
    let to = Lsn(n / 2 + 999);
    let started = Instant::now();
    let cold = reader.read_counted(from, to).await?;
    let cold_time = started.elapsed();
    let started = Instant::now();
    let warm = reader.read_counted(from, to).await?;
    let warm_time = started.elapsed();
    println!(
        "read of lsn {from}..={to} ({} records): cold {:.1} ms ({} segment downloads), warm {:.2} ms ({} cache hits)",
        cold.records.len(),
        cold_time.as_secs_f64() * 1e3,
        cold.misses,
        warm_time.as_secs_f64() * 1e3,
        warm.hits
    );

    // Restore, per GiB of segments.
    let fresh = tempfile::tempdir()?;
    let started = Instant::now();
    let report = trail_archive::restore_log(&target, &name, fresh.path(), &mut |_| {}).await?;
    let restore_time = started.elapsed();
    println!(
        "restore: {} segments, {} records in {:.2} s: {:.1} s per GiB of segments",
        report.segments,
        report.records,
        restore_time.as_secs_f64(),
        restore_time.as_secs_f64() / (segment_bytes as f64 / (1u64 << 30) as f64)
    );
    drop(log);
    tokio::task::block_in_place(|| store.close())?;

    // Appends with fsync, with an archive upload running beside them (B) or
    // not (A); rounds A B A B on a fresh log each.
    println!();
    println!("| round | archiving beside | appends/s (4 x 100, fsync) |");
    println!("| --- | --- | ---: |");
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..4u64 {
        let busy = round % 2 == 1;
        let dir = tempfile::tempdir()?;
        let store = Store::open(
            dir.path(),
            LogOptions {
                durability: Durability::Sync,
                ..LogOptions::default()
            },
        )?;
        let log = store.get_or_create(&LogName::new("load")?)?;
        let stop = Arc::new(AtomicBool::new(false));
        let uploader = busy.then(|| {
            let stop = Arc::clone(&stop);
            let raw = Arc::clone(&raw);
            let compressed = compressed.clone();
            let files = Arc::new(files.clone());
            tokio::spawn(async move {
                // What the compactor does per segment: compress, put, read back.
                let mut index = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // On a thread at the archiver's priority, as the
                    // compactor compresses (ARCHIVE_NICE, default the
                    // archiver's default; 0 for normal priority).
                    let (shared, which) = (Arc::clone(&files), index % files.len());
                    let encoded = std::thread::spawn(move || {
                        let _ = trail_log::priority::lower_current_thread(nice);
                        trail_archive::compress::encode(&shared[which], Encoding::default())
                    })
                    .join();
                    let Ok(Ok(encoded)) = encoded else { break };
                    let key = object_store::path::Path::from(format!("busy/{round}-{index}"));
                    if raw.put(&key, PutPayload::from(encoded)).await.is_err() {
                        break;
                    }
                    let _ = raw.get(&key).await;
                    index += 1;
                }
                drop(compressed);
                index
            })
        });
        let rate = tokio::task::block_in_place(|| append_rate(&log, append_seconds, round << 40));
        stop.store(true, Ordering::Relaxed);
        let uploads = match uploader {
            Some(task) => task.await.unwrap_or(0),
            None => 0,
        };
        println!(
            "| {} | {} | {rate:.0} |",
            round + 1,
            if busy {
                format!("yes ({uploads} segments)")
            } else {
                "no".to_owned()
            }
        );
        rates[usize::from(busy)].push(rate);
        drop(log);
        tokio::task::block_in_place(|| store.close())?;
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    println!(
        "busy / idle: {:.2}",
        mean(&rates[1]) / mean(&rates[0]).max(1.0)
    );
    Ok(())
}
