//! Crash recovery: torn tails are cut, damage is refused with its location
//! and the files are left untouched; a property test checks that whatever a
//! crash leaves, the recovered log is exactly a prefix of what was written.

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use trail_log::LogOptions;
use trail_log::{ErrorKind, LogError, Lsn};

fn write_log(root: &Path, count: usize) -> Result<Vec<(String, trail_log::Receipt)>, LogError> {
    let (store, log) = open(root, small_segments())?;
    let mut receipts = Vec::new();
    for index in 0..count {
        let id = format!("event-{index}");
        receipts.push((id.clone(), append_one(&log, &id)?));
    }
    store.close()?;
    Ok(receipts)
}

fn snapshot(root: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(wal_dir(root))
        .expect("wal dir")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Makes a cleanly closed log look like one whose process crashed: a crash
/// leaves no clean-close marker.
fn forget_clean_close(root: &Path) {
    let marker = wal_dir(root).join("CLOSED");
    std::fs::remove_file(marker).expect("a clean close left its marker");
}

fn flip_bit(path: &Path, offset: u64, bit: u8) -> std::io::Result<()> {
    let mut bytes = std::fs::read(path)?;
    bytes[offset as usize] ^= 1 << bit;
    std::fs::write(path, bytes)
}

/// Offset of the `n`th frame (0-based) after the header of a segment.
fn frame_offset(path: &Path, n: usize) -> u64 {
    let bytes = std::fs::read(path).expect("read segment");
    let mut offset = trail_log::segment::SEGMENT_HEADER_BYTES;
    for _ in 0..n {
        let length =
            u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        offset += 8 + length;
    }
    offset as u64
}

fn expect_corruption(root: &Path, file: &Path) -> (u64, Lsn, String) {
    expect_corruption_with(root, file, small_segments())
}

fn expect_corruption_with(root: &Path, file: &Path, options: LogOptions) -> (u64, Lsn, String) {
    match open(root, options) {
        Err(LogError::Corruption {
            file: found,
            offset,
            lsn,
            reason,
        }) => {
            assert_eq!(found, file, "the error names the damaged file");
            (offset, lsn, reason)
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a damaged log opened"),
    }
}

fn verify_at_open() -> LogOptions {
    LogOptions {
        verify_on_open: true,
        ..small_segments()
    }
}

#[test]
fn flipped_bit_in_a_sealed_segment_refuses_to_open_and_touches_nothing() -> TestResult {
    let directory = tempfile::tempdir()?;
    write_log(directory.path(), 800)?;
    let segments = segment_files(directory.path());
    assert!(segments.len() >= 2);
    let target = &segments[0];
    let offset = frame_offset(target, 10) + 20;
    flip_bit(target, offset, 3)?;
    let before = snapshot(directory.path());
    let (found_offset, lsn, reason) =
        expect_corruption_with(directory.path(), target, verify_at_open());
    assert_eq!(found_offset, frame_offset(target, 10));
    assert_eq!(lsn, Lsn(11));
    assert!(reason.contains("checksum"), "{reason}");
    assert_eq!(snapshot(directory.path()), before, "files are untouched");
    let error = open(directory.path(), verify_at_open())
        .err()
        .map(|error| error.kind());
    assert_eq!(error, Some(ErrorKind::DataLoss));
    Ok(())
}

/// Without `verify_on_open`, sealed segments are trusted at open by their
/// seal and sidecar: the log opens, background verification finds the
/// damage (file, offset, lsn), and every read across it refuses it.
#[test]
fn flipped_bit_in_a_sealed_segment_is_found_in_the_background_and_by_reads() -> TestResult {
    let directory = tempfile::tempdir()?;
    write_log(directory.path(), 800)?;
    let segments = segment_files(directory.path());
    let target = &segments[0];
    let damaged_offset = frame_offset(target, 10);
    flip_bit(target, damaged_offset + 20, 3)?;
    let before = snapshot(directory.path());
    let (store, log) = open(directory.path(), small_segments())?;
    assert_eq!(log.head().lsn, Lsn(800), "the log opens");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        let status = log.background_verification();
        if !status.running || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let failure = status
        .failure
        .expect("background verification found the damage");
    assert_eq!(failure.file, *target);
    assert_eq!(failure.offset, damaged_offset);
    assert_eq!(failure.lsn, Lsn(11));
    assert!(status.segments_total >= 1);
    let read: Result<Vec<_>, _> = log.read(Lsn(5), Lsn(20)).collect();
    match read {
        Err(LogError::Corruption { file, lsn, .. }) => {
            assert_eq!(file, *target);
            assert_eq!(lsn, Lsn(11));
        }
        other => panic!("a read across the damage must fail, got {other:?}"),
    }
    drop(log);
    store.close()?;
    assert_eq!(snapshot(directory.path()), before, "nothing was repaired");
    Ok(())
}

#[test]
fn flipped_bit_in_a_segment_header_refuses_to_open() -> TestResult {
    let directory = tempfile::tempdir()?;
    write_log(directory.path(), 800)?;
    let segments = segment_files(directory.path());
    let target = &segments[1];
    flip_bit(target, 50, 0)?;
    let before = snapshot(directory.path());
    let (offset, _, reason) = expect_corruption(directory.path(), target);
    assert_eq!(offset, 0);
    assert!(reason.contains("header"), "{reason}");
    assert_eq!(snapshot(directory.path()), before);
    Ok(())
}

#[test]
fn damage_in_the_active_segment_with_valid_records_after_it_is_corruption() -> TestResult {
    let directory = tempfile::tempdir()?;
    write_log(directory.path(), 100)?;
    let segments = segment_files(directory.path());
    assert_eq!(segments.len(), 1, "all records in the active segment");
    let target = &segments[0];
    let damaged = frame_offset(target, 40);
    flip_bit(target, damaged + 30, 6)?;
    let before = snapshot(directory.path());
    let (offset, lsn, reason) = expect_corruption(directory.path(), target);
    assert_eq!((offset, lsn), (damaged, Lsn(41)));
    assert!(reason.contains("acknowledged"), "{reason}");
    assert_eq!(snapshot(directory.path()), before, "files are untouched");
    // Offline verification reports the same place without opening for writes.
    let report = trail_log::offline::verify(directory.path(), &log_name(), &mut |_| {})?;
    let failure = report.failure.expect("offline verify finds the damage");
    assert_eq!((failure.lsn, failure.offset), (Lsn(41), damaged));
    Ok(())
}

/// Regression: a valid later record whose last byte is zero must still be
/// found, or synced data would be cut as if it were a torn write.
#[test]
fn damage_followed_by_a_record_ending_in_zero_is_still_corruption() -> TestResult {
    let directory = tempfile::tempdir()?;
    {
        let (store, log) = open(directory.path(), small_segments())?;
        append_one(&log, "first")?;
        log.append_blocking(
            vec![trail_log::EventInput::new("second".into(), vec![7, 7, 0])],
            false,
        )?;
        store.close()?;
    }
    let target = &segment_files(directory.path())[0];
    flip_bit(target, frame_offset(target, 0) + 12, 1)?;
    let before = snapshot(directory.path());
    let (offset, lsn, _) = expect_corruption(directory.path(), target);
    assert_eq!((offset, lsn), (frame_offset(target, 0), Lsn(1)));
    assert_eq!(snapshot(directory.path()), before);
    Ok(())
}

/// Regression: a crash after the seal frame was written but before the file
/// was trimmed and given its footer; the first open finishes the seal.
#[test]
fn an_interrupted_seal_is_finished_on_open() -> TestResult {
    let directory = tempfile::tempdir()?;
    let receipts = {
        let options = trail_log::LogOptions {
            segment_age_max: Some(std::time::Duration::from_millis(20)),
            ..small_segments()
        };
        let (store, log) = open(directory.path(), options)?;
        let receipts = vec![("only".to_string(), append_one(&log, "only")?)];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !trail_log::offline::inspect(directory.path())?[0].segments[0].sealed {
            assert!(std::time::Instant::now() < deadline, "segment never sealed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        store.close()?;
        receipts
    };
    let target = &segment_files(directory.path())[0];
    let sealed_len = std::fs::metadata(target)?.len();
    let mut bytes = std::fs::read(target)?;
    let footer = bytes.len() - trail_log::segment::FOOTER_BYTES;
    bytes.truncate(footer);
    bytes.resize(64 * 1024, 0);
    std::fs::write(target, &bytes)?;
    let (store, log) = open(directory.path(), small_segments())?;
    assert_log_matches(&log, &receipts);
    assert_eq!(
        std::fs::metadata(target)?.len(),
        sealed_len,
        "the seal was finished"
    );
    let next = append_one(&log, "next")?;
    assert_eq!(next.lsn, Lsn(2));
    store.close()?;
    Ok(())
}

/// After a clean close the last records are known to be acknowledged, so
/// damage there is corruption, not a torn write.
#[test]
fn damage_in_the_last_record_after_a_clean_close_is_corruption() -> TestResult {
    let directory = tempfile::tempdir()?;
    write_log(directory.path(), 30)?;
    let target = &segment_files(directory.path())[0];
    let last = frame_offset(target, 29);
    flip_bit(target, last + 40, 2)?;
    let before = snapshot(directory.path());
    let (offset, lsn, reason) = expect_corruption(directory.path(), target);
    assert_eq!((offset, lsn), (last, Lsn(30)));
    assert!(reason.contains("closed cleanly"), "{reason}");
    assert_eq!(snapshot(directory.path()), before);
    Ok(())
}

/// A clean close also catches whole segments removed from the end.
#[test]
fn a_removed_last_segment_after_a_clean_close_is_corruption() -> TestResult {
    let directory = tempfile::tempdir()?;
    write_log(directory.path(), 900)?;
    let segments = segment_files(directory.path());
    std::fs::remove_file(segments.last().expect("segments"))?;
    match open(directory.path(), small_segments()) {
        Err(LogError::Corruption { reason, .. }) => {
            assert!(reason.contains("closed cleanly"), "{reason}")
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a truncated log opened"),
    }
    Ok(())
}

#[test]
fn torn_tail_is_cut_and_the_log_goes_on() -> TestResult {
    let directory = tempfile::tempdir()?;
    let receipts = write_log(directory.path(), 50)?;
    let target = &segment_files(directory.path())[0];
    let end = frame_offset(target, 50);
    // A half-written frame: a plausible header and part of a body.
    let mut bytes = std::fs::read(target)?;
    let garbage = [0x40, 0x01, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 0, 7, 7, 7];
    bytes[end as usize..end as usize + garbage.len()].copy_from_slice(&garbage);
    std::fs::write(target, &bytes)?;
    let summaries = trail_log::offline::inspect(directory.path())?;
    assert_eq!(
        summaries[0].torn_tail.as_ref().map(|torn| torn.offset),
        Some(end)
    );
    let (store, log) = open(directory.path(), small_segments())?;
    assert_eq!(log.head().lsn, Lsn(50));
    assert_log_matches(&log, &receipts);
    let cut = log
        .torn_tail_cut_at_open()
        .expect("the open says what it cut");
    assert_eq!(
        (cut.offset, cut.bytes, cut.kept_lsn),
        (end, garbage.len() as u64, Lsn(50))
    );
    assert_eq!(
        cut.cut_records, 1,
        "the damaged frame: it may have been acknowledged"
    );
    let quarantined = wal_dir(directory.path()).join(format!(
        "{}.torn-{end}",
        target
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
    ));
    let kept = std::fs::read(&quarantined)?;
    assert_eq!(
        &kept[..garbage.len()],
        &garbage,
        "the cut bytes are kept for forensics"
    );
    let next = append_one(&log, "after-the-cut")?;
    assert_eq!(next.lsn, Lsn(51));
    store.close()?;
    drop(store);
    let (_store, log) = open(directory.path(), small_segments())?;
    assert_eq!(log.head().lsn, Lsn(51));
    assert_eq!(
        log.torn_tail_cut_at_open(),
        None,
        "a clean reopen cuts nothing"
    );
    Ok(())
}

#[test]
fn an_incomplete_trailing_atomic_batch_is_dropped_whole() -> TestResult {
    let directory = tempfile::tempdir()?;
    {
        let (store, log) = open(directory.path(), small_segments())?;
        append_one(&log, "single")?;
        let batch: Vec<_> = (0..4)
            .map(|index| event(&format!("batch-{index}"), 150))
            .collect();
        log.append_blocking(batch, true)?;
        store.close()?;
    }
    forget_clean_close(directory.path());
    // Lose the batch's last record, as a torn write would.
    let target = &segment_files(directory.path())[0];
    let last = frame_offset(target, 4);
    let end = frame_offset(target, 5);
    let mut bytes = std::fs::read(target)?;
    bytes[last as usize..end as usize].fill(0);
    std::fs::write(target, &bytes)?;
    let (_store, log) = open(directory.path(), small_segments())?;
    assert_eq!(log.head().lsn, Lsn(1), "the batch is all-or-nothing");
    let again = log.append_blocking(vec![event("batch-0", 150)], false)?;
    assert_eq!(
        again[0].lsn,
        Lsn(2),
        "the dropped batch's ids are free again"
    );
    assert!(!again[0].duplicate);
    Ok(())
}

#[test]
fn a_missing_middle_segment_is_corruption() -> TestResult {
    let directory = tempfile::tempdir()?;
    write_log(directory.path(), 900)?;
    let segments = segment_files(directory.path());
    assert!(segments.len() >= 3);
    std::fs::remove_file(&segments[1])?;
    let (_, _, reason) = expect_corruption(directory.path(), &segments[2]);
    assert!(reason.contains("missing"), "{reason}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random appends (some atomic), then a crash cut anywhere in the active
    /// segment's written bytes followed by random garbage: the recovered log
    /// is exactly a prefix of what was written, chain intact, LSNs dense, and
    /// never holds part of an atomic batch.
    #[test]
    fn recovery_keeps_exactly_a_prefix(
        requests in prop::collection::vec((1usize..4, any::<bool>(), 20usize..400), 1..40),
        cut_fraction in 0.0f64..1.0,
        garbage in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut written: Vec<(String, trail_log::Receipt, Lsn)> = Vec::new();
        {
            let (store, log) = open(directory.path(), small_segments()).expect("open");
            for (request, (count, atomic, size)) in requests.iter().enumerate() {
                let events: Vec<_> = (0..*count).map(|index| event(&format!("r{request}-{index}"), *size)).collect();
                let receipts = log.append_blocking(events, *atomic).expect("append");
                let batch_last = receipts.last().map(|receipt| receipt.lsn).expect("receipts");
                for (index, receipt) in receipts.into_iter().enumerate() {
                    let marker = if *atomic { batch_last } else { receipt.lsn };
                    written.push((format!("r{request}-{index}"), receipt, marker));
                }
            }
            store.close().expect("close");
        }
        forget_clean_close(directory.path());
        let segments = segment_files(directory.path());
        let active = segments.last().expect("a segment").clone();
        let summary = trail_log::offline::inspect(directory.path()).expect("inspect");
        let active_summary = summary[0].segments.last().expect("segment").clone();
        prop_assume!(!active_summary.sealed);
        let first_in_active = active_summary.first_lsn;
        let records_in_active = written.iter().filter(|(_, receipt, _)| receipt.lsn >= first_in_active).count();
        let data_end = frame_offset(&active, records_in_active);
        let header = trail_log::segment::SEGMENT_HEADER_BYTES as u64;
        let cut = header + ((data_end - header) as f64 * cut_fraction) as u64;
        let mut bytes = std::fs::read(&active).expect("read");
        bytes[cut as usize..data_end as usize].fill(0);
        let garbage_end = (cut as usize + garbage.len()).min(bytes.len());
        bytes[cut as usize..garbage_end].copy_from_slice(&garbage[..garbage_end - cut as usize]);
        std::fs::write(&active, &bytes).expect("write");

        // Records entirely before the cut survive, less an open batch.
        let mut survivors = 0usize;
        for (position, (_, receipt, _)) in written.iter().enumerate() {
            if receipt.lsn < first_in_active {
                survivors = position + 1;
                continue;
            }
            let index_in_segment = (receipt.lsn.0 - first_in_active.0 + 1) as usize;
            if frame_offset(&active, index_in_segment) <= cut { survivors = position + 1; } else { break; }
        }
        while survivors > 0 && written[survivors - 1].2 > written[survivors - 1].1.lsn {
            survivors -= 1;
        }
        let (_store, log) = open(directory.path(), small_segments()).expect("recovery opens the log");
        prop_assert_eq!(log.head().lsn, Lsn(survivors as u64));
        let kept: Vec<(String, trail_log::Receipt)> = written[..survivors].iter().map(|(id, receipt, _)| (id.clone(), *receipt)).collect();
        assert_log_matches(&log, &kept);
    }
}
