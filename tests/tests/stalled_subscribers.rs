//! The real `traild` with 200 `Subscribe` streams that read one record and
//! are then never read again (HTTP/2 flow control stalls the server's side
//! of each) while 20,000 events are appended. The server's threads must
//! stay under a bound that does not grow with the number of subscribers
//! (tokio's workers, the log's own threads and at most
//! `limits.disk_reads_in_flight_max` blocking disk readers), its peak RSS
//! (`VmHWM`) under 384 MiB, every append must succeed, and a fresh
//! subscriber must still receive all 20,000 records in LSN order.
//!
//! (The build before the bound, 85a4a50, ran one blocking read per woken
//! subscriber: about 211 threads and 1 GiB for 200 stalled subscribers.)

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use trail_e2e::{process_status, read_log, sample_process, Error, Traild};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{AppendRequest, Event, Outcome, Record, SubscribeRequest};

const LOG: &str = "stalled";
/// Stalled subscribers.
const SUBSCRIBERS: usize = 200;
/// Stalled streams per HTTP/2 connection (the server allows 256).
const SUBSCRIBERS_PER_CONNECTION: usize = 100;
/// Events appended in all (the first batch before the subscribers open).
const EVENTS: usize = 20_000;
/// Events per append request.
const BATCH: usize = 100;
/// Concurrent appenders.
const APPENDERS: usize = 4;
/// The server's threads may not reach this, whatever the subscriber count:
/// 2 tokio workers, the log's writer and segment-preparing threads, the
/// metrics listener, a handful of blocking-pool threads for opening logs
/// and at most 4 disk readers (the default `disk_reads_in_flight_max`).
const THREADS_MAX: u64 = 64;
/// The server's peak resident memory may not reach this. It was 256 MiB,
/// with peaks of 201-260 MiB seen for the same builds (abcf50a and after:
/// 214-235 MiB in three local runs of each, 260 MiB once in CI), so it
/// failed on noise; the regression it guards against reached 1 GiB.
const HWM_MAX_KIB: u64 = 384 << 10;
/// Bounds on the test's own waits.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

fn event(sequence: usize) -> Event {
    Event {
        event_id: format!("stalled-{sequence}"),
        actor: format!("appender-{}", sequence % APPENDERS),
        action: "write".to_owned(),
        resource: format!("doc/{}", sequence % 97),
        trace_id: String::new(),
        outcome: Outcome::Success as i32,
        occurred_at_unix_nanos: 1_700_000_000_000_000_000 + sequence as i64,
        attributes: BTreeMap::new(),
        // About 512 bytes an event, encoded.
        payload: vec![b'p'; 440],
        change: None,
        compensation: None,
    }
}

async fn connect(address: &str) -> Result<LogClient<Channel>, Error> {
    let channel = Endpoint::from_shared(address.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(LogClient::new(channel))
}

/// Appends events `first..first + count` in requests of [`BATCH`], checking
/// every receipt.
async fn append_range(
    client: &mut LogClient<Channel>,
    first: usize,
    count: usize,
) -> Result<(), Error> {
    let mut next = first;
    while next < first + count {
        let end = (next + BATCH).min(first + count);
        let events: Vec<Event> = (next..end).map(event).collect();
        let receipts = tokio::time::timeout(
            STEP_TIMEOUT,
            client.append(AppendRequest {
                log: LOG.to_owned(),
                events,
                atomic: false,
            }),
        )
        .await
        .map_err(|_| format!("append of events {next}..{end} took over 20 s"))??
        .into_inner()
        .receipts;
        assert_eq!(receipts.len(), end - next, "one receipt per event");
        for (receipt, sequence) in receipts.iter().zip(next..end) {
            assert_eq!(receipt.event_id, format!("stalled-{sequence}"));
            assert!(!receipt.duplicate, "event {sequence} was taken for a retry");
            assert!(receipt.lsn >= 1);
        }
        next = end;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_hold_no_threads_or_memory() -> Result<(), Error> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = Traild::start(&data, &[])?;
    let pid = server.pid();
    let at_start = process_status(pid)?;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_process(pid, Arc::clone(&stop));

    // The first batch creates the log, so every subscriber has a record to
    // read at once.
    let mut client = connect(&server.address).await?;
    append_range(&mut client, 0, BATCH).await?;

    // The stalled subscribers, on connections of their own: each reads its
    // first record and is never polled again.
    let mut connections = Vec::new();
    for _ in 0..SUBSCRIBERS.div_ceil(SUBSCRIBERS_PER_CONNECTION) {
        connections.push(connect(&server.address).await?);
    }
    let mut stalled = Vec::with_capacity(SUBSCRIBERS);
    for index in 0..SUBSCRIBERS {
        let mut subscriber = connections[index / SUBSCRIBERS_PER_CONNECTION].clone();
        let mut stream = tokio::time::timeout(
            STEP_TIMEOUT,
            subscriber.subscribe(SubscribeRequest {
                log: LOG.to_owned(),
                from_lsn: 1,
                filter: None,
            }),
        )
        .await
        .map_err(|_| format!("subscriber {index} did not open within 20 s"))??
        .into_inner();
        let first = tokio::time::timeout(STEP_TIMEOUT, stream.message())
            .await
            .map_err(|_| format!("subscriber {index} got no record within 20 s"))??
            .ok_or("a subscription ended at once")?;
        assert_eq!(first.lsn, 1);
        stalled.push(stream);
    }

    // The load, with every stalled stream open.
    let mut appenders = Vec::new();
    let per_appender = (EVENTS - BATCH) / APPENDERS;
    for appender in 0..APPENDERS {
        let mut client = connect(&server.address).await?;
        let first = BATCH + appender * per_appender;
        appenders.push(tokio::spawn(async move {
            append_range(&mut client, first, per_appender).await
        }));
    }
    for appender in appenders {
        appender.await??;
    }
    assert_eq!(BATCH + APPENDERS * per_appender, EVENTS);

    // A fresh subscriber still gets every record, in order, while the
    // stalled ones are still there.
    let mut fresh = connect(&server.address).await?;
    let mut stream = fresh
        .subscribe(SubscribeRequest {
            log: LOG.to_owned(),
            from_lsn: 1,
            filter: None,
        })
        .await?
        .into_inner();
    let mut seen = vec![false; EVENTS];
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut received = 0u64;
    while received < EVENTS as u64 {
        let left = deadline.saturating_duration_since(Instant::now());
        let record: Record = tokio::time::timeout(left, stream.message())
            .await
            .map_err(|_| {
                format!("the fresh subscriber got {received} of {EVENTS} records in 20 s")
            })??
            .ok_or("the fresh subscription ended early")?;
        received += 1;
        assert_eq!(record.lsn, received, "records arrive in dense LSN order");
        let id = record.event.ok_or("a record without its event")?.event_id;
        let sequence: usize = id
            .strip_prefix("stalled-")
            .and_then(|number| number.parse().ok())
            .ok_or_else(|| format!("unexpected event id {id:?}"))?;
        assert!(!seen[sequence], "event {id} delivered twice");
        seen[sequence] = true;
    }
    assert!(seen.iter().all(|seen| *seen), "every event was delivered");

    stop.store(true, Ordering::Relaxed);
    let peaks = sampler.join().map_err(|_| "the sampler panicked")??;
    let at_end = process_status(pid)?;
    let hwm_kib = peaks.hwm_kib.max(at_end.hwm_kib);
    let threads = peaks.threads.max(at_end.threads);
    eprintln!(
        "traild with {SUBSCRIBERS} stalled subscribers: threads {} at start, peak {threads}; \
         VmHWM {} MiB (VmRSS at start {} MiB, peak {} MiB); {} samples; {:.1}s",
        at_start.threads,
        hwm_kib >> 10,
        at_start.rss_kib >> 10,
        peaks.rss_kib.max(at_end.rss_kib) >> 10,
        peaks.samples,
        started.elapsed().as_secs_f64()
    );
    assert!(
        threads < THREADS_MAX,
        "traild reached {threads} threads with {SUBSCRIBERS} stalled subscribers \
         (bound {THREADS_MAX}); its log:\n{}",
        read_log(&server.log_file)
    );
    assert!(
        hwm_kib < HWM_MAX_KIB,
        "traild's peak RSS was {} MiB with {SUBSCRIBERS} stalled subscribers (bound {} MiB)",
        hwm_kib >> 10,
        HWM_MAX_KIB >> 10
    );
    drop(stalled);
    drop(connections);
    Ok(())
}
