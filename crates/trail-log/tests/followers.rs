//! The engine's seams for derived components: followers (across segment
//! rolls, waits, restarts, damage and a fail-stopped log), the segment
//! catalog and its notifications, the retention gate, archived prefixes, and
//! the monotonic clock that drives the writer's timers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use trail_log::codec::record_hash;
use trail_log::fault::{FaultPlan, FaultyFileSystem};
use trail_log::fs::OsFileSystem;
use trail_log::{
    ArchivedPrefix, ErrorKind, LogError, LogOptions, Lsn, ManualClock, RecordHash, SegmentEvent,
    WAL_DIR_NAME,
};

fn fill(log: &trail_log::Log, from: usize, count: usize) -> Result<(), LogError> {
    for index in from..from + count {
        log.append_blocking(vec![event(&format!("event-{index}"), 200)], false)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_yields_every_record_across_rolls_and_waits() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (store, log) = open(directory.path(), small_segments())?;
    {
        let log = Arc::clone(&log);
        tokio::task::spawn_blocking(move || fill(&log, 0, 50)).await??;
    }
    let mut follower = log.follow(Lsn(1));
    let writer = {
        let log = Arc::clone(&log);
        tokio::task::spawn_blocking(move || fill(&log, 50, 750))
    };
    let mut previous = log.follow(Lsn(1)).prev_hash();
    assert_eq!(previous, None);
    for expected in 1..=800u64 {
        let stored = tokio::time::timeout(Duration::from_secs(20), follower.next()).await??;
        assert_eq!(stored.record.lsn, Lsn(expected));
        assert_eq!(
            stored.hash,
            record_hash(&stored.body),
            "the body is what the chain hashes"
        );
        assert_eq!(
            trail_log::codec::decode_body(&stored.body)?,
            trail_log::codec::Body::Record(stored.record.clone()),
            "the body decodes to the record"
        );
        if let Some(previous) = previous {
            assert_eq!(stored.record.prev_hash, previous);
        }
        previous = Some(stored.hash);
    }
    writer.await??;
    assert!(
        log.segments().len() >= 3,
        "the follower crossed segment rolls"
    );
    assert_eq!(follower.position(), Lsn(801));
    assert_eq!(follower.lag(), 0);
    drop(follower);
    drop(log);
    tokio::task::spawn_blocking(move || store.close()).await??;
    Ok(())
}

#[test]
fn a_follower_resumes_from_a_watermark_and_checks_the_first_link() -> TestResult {
    let directory = tempfile::tempdir()?;
    let watermark = {
        let (store, log) = open(directory.path(), small_segments())?;
        fill(&log, 0, 400)?;
        let mut follower = log.follow(Lsn(1));
        let mut last = None;
        for _ in 0..300 {
            last = Some(follower.next_blocking()?);
        }
        let last = last.expect("300 records");
        drop(follower);
        drop(log);
        store.close()?;
        (last.record.lsn, last.hash)
    };
    let (store, log) = open(directory.path(), small_segments())?;
    let mut resumed = log.follow_from(watermark.0.next(), watermark.1);
    let records = resumed.read_available(1_000, usize::MAX)?;
    assert_eq!(records.len(), 100);
    assert_eq!(records[0].record.lsn, Lsn(301));
    let mut wrong = log.follow_from(watermark.0.next(), RecordHash([9; 32]));
    match wrong.read_available(10, usize::MAX) {
        Err(LogError::Corruption { lsn, reason, .. }) => {
            assert_eq!(lsn, Lsn(301));
            assert!(reason.contains("chain"), "{reason}");
        }
        other => panic!("a watermark the log does not continue must fail, got {other:?}"),
    }
    drop((resumed, wrong, log));
    store.close()?;
    Ok(())
}

#[test]
fn a_parked_follower_far_behind_picks_up_where_it_was() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (_store, log) = open(directory.path(), small_segments())?;
    fill(&log, 0, 100)?;
    let mut follower = log.follow(Lsn(1));
    let first = follower.read_available(10, usize::MAX)?;
    assert_eq!(first.len(), 10);
    follower.park();
    fill(&log, 100, 900)?;
    assert_eq!(follower.lag(), 990, "records behind the durable head");
    let mut seen = 10u64;
    loop {
        let batch = follower.read_available(64, 16 * 1024)?;
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 64);
        assert_eq!(batch[0].record.lsn, Lsn(seen + 1));
        seen += batch.len() as u64;
        follower.park();
    }
    assert_eq!(seen, 1000);
    Ok(())
}

#[test]
fn a_follower_of_a_fail_stopped_log_reads_what_is_durable_then_says_why() -> TestResult {
    let directory = tempfile::tempdir()?;
    let plan = FaultPlan::default();
    let fs = Arc::new(FaultyFileSystem::new(OsFileSystem, plan.clone()));
    let (_store, log) = open_with(fs, directory.path(), small_segments_unprepared())?;
    fill(&log, 0, 20)?;
    plan.fail_sync_after(0);
    let failed = log.append_blocking(vec![event("lost", 100)], false);
    assert_eq!(
        failed.map_err(|error| error.kind()).err(),
        Some(ErrorKind::Unavailable)
    );
    let mut follower = log.follow(Lsn(1));
    for lsn in 1..=20 {
        assert_eq!(follower.next_blocking()?.record.lsn, Lsn(lsn));
    }
    match follower.next_blocking() {
        Err(LogError::FailStopped { .. }) => {}
        other => panic!("expected the fail-stop, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_waiting_follower_is_told_when_the_log_closes() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (store, log) = open(directory.path(), small_segments())?;
    {
        let log = Arc::clone(&log);
        tokio::task::spawn_blocking(move || fill(&log, 0, 3)).await??;
    }
    let mut follower = log.follow(Lsn(4));
    let closer = tokio::task::spawn_blocking(move || store.close());
    let outcome = tokio::time::timeout(Duration::from_secs(10), follower.wait()).await?;
    assert!(matches!(outcome, Err(LogError::Closed(_))), "{outcome:?}");
    closer.await??;
    Ok(())
}

/// A record altered in a sealed segment with its CRC recomputed passes the
/// frame check: only the next record's link to it shows the change. Reads
/// and followers check that link wherever they start and however they are
/// chunked.
#[test]
fn an_altered_record_with_a_valid_crc_is_caught_by_the_chain() -> TestResult {
    let directory = tempfile::tempdir()?;
    {
        let (store, log) = open(directory.path(), small_segments())?;
        fill(&log, 0, 600)?;
        drop(log);
        store.close()?;
    }
    let segment = segment_files(directory.path())[0].clone();
    let mut bytes = std::fs::read(&segment)?;
    // The 100th record, in the first (sealed) segment.
    let mut offset = 96usize;
    for _ in 1..100 {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into()?) as usize;
        offset += 8 + length;
    }
    let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into()?) as usize;
    let body = offset + 8..offset + 8 + length;
    // An event byte inside the body (the event sits after the id).
    let target = body.start + 40;
    bytes[target] ^= 0x01;
    let crc = crc32fast::hash(&bytes[body.clone()]);
    bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&segment, &bytes)?;

    let (_store, log) = open(
        directory.path(),
        LogOptions {
            verify_in_background: false,
            ..small_segments()
        },
    )?;
    let altered = log
        .read(Lsn(100), Lsn(100))
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(altered.len(), 1, "the altered record alone looks fine");
    let across: Result<Vec<_>, _> = log.read(Lsn(50), Lsn(150)).collect();
    match across {
        Err(LogError::Corruption { lsn, reason, .. }) => {
            assert_eq!(lsn, Lsn(101));
            assert!(reason.contains("chain"), "{reason}");
        }
        other => panic!("the link into lsn 101 must fail, got {other:?}"),
    }
    // A follower reading in chunks of 100 crosses the same link.
    let mut follower = log.follow(Lsn(1));
    let chunk = follower.read_available(100, usize::MAX)?;
    assert_eq!(chunk.len(), 100);
    follower.park();
    assert!(matches!(
        follower.read_available(100, usize::MAX),
        Err(LogError::Corruption { lsn: Lsn(101), .. })
    ));
    let report = log.verify(Lsn(1), Lsn(600), &mut |_| {})?;
    assert_eq!(report.failure.map(|failure| failure.lsn), Some(Lsn(101)));
    Ok(())
}

#[test]
fn the_catalog_announces_created_and_sealed_segments() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (_store, log) = open(directory.path(), small_segments())?;
    let mut events = log.segment_events();
    fill(&log, 0, 700)?;
    let segments = log.segments();
    assert!(segments.len() >= 3);
    let mut sealed = Vec::new();
    let mut created = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            SegmentEvent::Created(info) => created.push(info.first_lsn),
            SegmentEvent::Sealed(info) => {
                assert!(info.sealed);
                sealed.push(info);
            }
        }
    }
    assert_eq!(created.len(), segments.len(), "every segment was announced");
    assert_eq!(sealed.len(), segments.len() - 1);
    for (info, next) in segments.iter().zip(segments.iter().skip(1)) {
        assert!(info.sealed);
        assert_eq!(
            next.first_lsn,
            info.last_lsn.next(),
            "segments are contiguous"
        );
        assert_eq!(next.prev_hash, info.last_hash, "and chained");
        assert_eq!(info.file_bytes, std::fs::metadata(&info.path)?.len());
        assert!(sealed.contains(info));
    }
    let active = segments.last().expect("an active segment");
    assert!(!active.sealed);
    assert_eq!(active.last_lsn, log.head().lsn);
    assert_eq!(active.last_hash, log.head().hash);
    Ok(())
}

#[test]
fn the_retention_gate_releases_only_what_every_holder_released() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (_store, log) = open(directory.path(), small_segments())?;
    assert!(
        log.removable_segments().is_empty(),
        "nobody holds: nothing may go"
    );
    let archive = log.hold_segments("archive");
    let merkle = log.hold_segments("merkle");
    std::thread::scope(|scope| -> TestResult {
        let appender = scope.spawn(|| fill(&log, 0, 2_000));
        // Holders release while segments are being sealed.
        for step in 1..=40u64 {
            archive.release_through(Lsn(step * 50));
            if step % 2 == 0 {
                merkle.release_through(Lsn(step * 25));
            }
            let released = log
                .retention_holders()
                .iter()
                .map(|(_, lsn)| *lsn)
                .min()
                .unwrap_or(Lsn::ZERO);
            for segment in log.removable_segments() {
                assert!(segment.sealed);
                assert!(segment.last_lsn <= released, "{segment:?} past {released}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        appender.join().map_err(|_| "appender panicked")??;
        Ok(())
    })?;
    archive.release_through(Lsn(10)); // a release never goes back
    assert_eq!(
        log.retention_holders()
            .into_iter()
            .find(|(name, _)| name == "archive")
            .map(|(_, lsn)| lsn),
        Some(Lsn(2_000))
    );
    let merkle_released = Lsn(1_000);
    let removable = log.removable_segments();
    assert!(!removable.is_empty());
    assert!(removable
        .iter()
        .all(|segment| segment.last_lsn <= merkle_released));
    let sealed_past = log
        .segments()
        .into_iter()
        .filter(|segment| segment.sealed && segment.last_lsn <= merkle_released)
        .count();
    assert_eq!(removable.len(), sealed_past);
    drop(merkle);
    assert!(
        log.removable_segments().len() > removable.len(),
        "a dropped hold releases"
    );
    drop(archive);
    assert!(log.removable_segments().is_empty());
    Ok(())
}

/// Removes the first `count` segments of a closed log (as the archive
/// will, keeping their sidecars) and records the prefix.
fn archive_prefix(
    root: &std::path::Path,
    count: usize,
) -> Result<ArchivedPrefix, Box<dyn std::error::Error>> {
    let segments = segment_files(root);
    let kept = &segments[count];
    let header = trail_log::segment::SegmentHeader::decode(&std::fs::read(kept)?[..96])?;
    for removed in &segments[..count] {
        std::fs::remove_file(removed)?;
    }
    let prefix = ArchivedPrefix {
        first_lsn: header.first_lsn,
        prev_hash: header.prev_hash,
        prev_recorded_at_unix_nanos: 0,
        voucher: "test: segments removed by hand".into(),
    };
    prefix.write(
        &OsFileSystem,
        &root.join(log_name().as_str()).join(WAL_DIR_NAME),
    )?;
    Ok(prefix)
}

#[test]
fn a_log_with_an_archived_prefix_opens_reads_verifies_and_appends() -> TestResult {
    let directory = tempfile::tempdir()?;
    let head = {
        let (store, log) = open(directory.path(), small_segments())?;
        fill(&log, 0, 900)?;
        let head = log.head();
        drop(log);
        store.close()?;
        head
    };
    let prefix = archive_prefix(directory.path(), 2)?;
    assert!(prefix.first_lsn > Lsn(2));
    let (store, log) = open(directory.path(), small_segments())?;
    assert_eq!(log.head(), head);
    assert_eq!(log.first_local_lsn(), prefix.first_lsn);
    assert_eq!(log.archived_prefix(), Some(prefix.clone()));
    let local: Vec<_> = log
        .read(prefix.first_lsn, Lsn(900))
        .collect::<Result<_, _>>()?;
    assert_eq!(local.len() as u64, 900 - prefix.first_lsn.0 + 1);
    assert_eq!(local[0].record.prev_hash, prefix.prev_hash);
    let archived: Result<Vec<_>, _> = log.read(Lsn(1), Lsn(5)).collect();
    assert!(
        matches!(archived, Err(LogError::NotLocal { .. })),
        "{archived:?}"
    );
    let report = log.verify(Lsn(1), Lsn(900), &mut |_| {})?;
    assert_eq!(report.failure, None);
    assert_eq!(report.first, prefix.first_lsn);
    assert_eq!(report.verified, 900 - prefix.first_lsn.0 + 1);
    assert_eq!(report.archived_prefix, Some(prefix.clone()));
    // A retry of an event whose segment is archived (its sidecar kept) is
    // refused, not appended again: its content cannot be compared locally.
    let retry = log.append_blocking(vec![event("event-0", 200)], false);
    assert!(
        retry.is_err(),
        "an archived id must not be appended twice: {retry:?}"
    );
    assert_eq!(log.head(), head);
    fill(&log, 900, 10)?;
    assert_eq!(log.head().lsn, Lsn(910));
    drop(log);
    store.close()?;
    let offline = trail_log::offline::verify(directory.path(), &log_name(), &mut |_| {})?;
    assert_eq!(offline.failure, None);
    assert_eq!(offline.last, Lsn(910));
    Ok(())
}

#[test]
fn an_archived_prefix_with_a_gap_or_a_wrong_hash_is_refused() -> TestResult {
    for damage in ["gap", "hash"] {
        let directory = tempfile::tempdir()?;
        {
            let (store, log) = open(directory.path(), small_segments())?;
            fill(&log, 0, 900)?;
            drop(log);
            store.close()?;
        }
        let mut prefix = archive_prefix(directory.path(), 2)?;
        match damage {
            "gap" => prefix.first_lsn = Lsn(prefix.first_lsn.0 - 3),
            _ => prefix.prev_hash = RecordHash([1; 32]),
        }
        let wal = directory
            .path()
            .join(log_name().as_str())
            .join(WAL_DIR_NAME);
        prefix.write(&OsFileSystem, &wal)?;
        match open(directory.path(), small_segments()) {
            Err(LogError::Corruption { reason, .. }) => {
                assert!(reason.contains("archived prefix"), "{damage}: {reason}");
            }
            Err(other) => panic!("{damage}: expected corruption, got {other}"),
            Ok(_) => panic!("{damage}: a log with a bad prefix opened"),
        }
        let report = trail_log::offline::verify(directory.path(), &log_name(), &mut |_| {})?;
        assert!(
            report.failure.is_some(),
            "{damage}: offline verify refuses it too"
        );
    }
    Ok(())
}

#[test]
fn a_damaged_archived_prefix_record_refuses_to_open_and_touches_nothing() -> TestResult {
    let directory = tempfile::tempdir()?;
    {
        let (store, log) = open(directory.path(), small_segments())?;
        fill(&log, 0, 900)?;
        drop(log);
        store.close()?;
    }
    archive_prefix(directory.path(), 2)?;
    let record = directory
        .path()
        .join(log_name().as_str())
        .join(WAL_DIR_NAME)
        .join(trail_log::prefix::PREFIX_FILE_NAME);
    let mut bytes = std::fs::read(&record)?;
    bytes[15] ^= 0x01; // inside first_lsn
    std::fs::write(&record, &bytes)?;
    match open(directory.path(), small_segments()) {
        Err(LogError::Corruption { file, reason, .. }) => {
            assert_eq!(file, record);
            assert!(reason.contains("checksum"), "{reason}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a log with a damaged prefix record opened"),
    }
    assert_eq!(std::fs::read(&record)?, bytes, "nothing was repaired");
    Ok(())
}

#[test]
fn age_based_sealing_follows_the_monotonic_clock_without_sleeping() -> TestResult {
    let directory = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(1_800_000_000_000_000_000));
    let options = LogOptions {
        segment_age_max: Some(Duration::from_secs(3600)),
        clock: Arc::clone(&clock) as Arc<dyn trail_log::Clock>,
        ..small_segments()
    };
    let (_store, log) = open(directory.path(), options)?;
    let mut events = log.segment_events();
    fill(&log, 0, 5)?;
    log.run_timers();
    assert_eq!(log.segments().len(), 1, "not an hour old yet");
    clock.advance(Duration::from_secs(3601));
    log.run_timers();
    let sealed = loop {
        match events.blocking_recv()? {
            SegmentEvent::Sealed(info) => break info,
            SegmentEvent::Created(_) => {}
        }
    };
    assert_eq!((sealed.first_lsn, sealed.last_lsn), (Lsn(1), Lsn(5)));
    Ok(())
}
