//! Helpers shared by trail-log's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use trail_log::fs::FileSystem;
use trail_log::{EventInput, Log, LogName, LogOptions, Lsn, Receipt, Store};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Options with small segments so tests cross segment boundaries.
pub fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 64 * 1024,
        group_bytes_max: 16 * 1024,
        append: trail_log::AppendLimits {
            event_bytes_max: 4 * 1024,
            ..trail_log::AppendLimits::default()
        },
        ..LogOptions::default()
    }
}

/// [`small_segments`] without the background preparer: the writer creates
/// every segment itself, so a fault injected for an append hits that
/// append, not the preparer's zero fill of the next segment.
pub fn small_segments_unprepared() -> LogOptions {
    LogOptions {
        prepare_segments_ahead: false,
        ..small_segments()
    }
}

/// The preparer's spare segment in the `wal` directory, once one is ready.
pub fn spare_file(root: &Path) -> PathBuf {
    wal_dir(root).join("spare.seg.tmp")
}

pub fn log_name() -> LogName {
    LogName::new("audit").expect("valid name")
}

pub fn open(root: &Path, options: LogOptions) -> Result<(Store, Arc<Log>), trail_log::LogError> {
    let store = Store::open(root, options)?;
    let log = store.get_or_create(&log_name())?;
    Ok((store, log))
}

pub fn open_with(
    fs: Arc<dyn FileSystem>,
    root: &Path,
    options: LogOptions,
) -> Result<(Store, Arc<Log>), trail_log::LogError> {
    let store = Store::open_with_fs(fs, root, options)?;
    let log = store.get_or_create(&log_name())?;
    Ok((store, log))
}

/// An event whose bytes depend on its id, so content checks are meaningful.
pub fn event(id: &str, size: usize) -> EventInput {
    let mut bytes = id.as_bytes().to_vec();
    bytes.resize(size.max(id.len()), b'x');
    EventInput::new(id.to_owned(), bytes)
}

pub fn append_one(log: &Log, id: &str) -> Result<Receipt, trail_log::LogError> {
    Ok(log.append_blocking(vec![event(id, 200)], false)?[0])
}

pub fn wal_dir(root: &Path) -> PathBuf {
    root.join("audit").join("wal")
}

pub fn segment_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(wal_dir(root))
        .expect("wal dir")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    files.sort();
    files
}

/// Reads the whole log and checks LSN density and that it matches receipts.
pub fn assert_log_matches(log: &Log, receipts: &[(String, Receipt)]) {
    let head = log.head();
    let records: Vec<_> = log
        .read(Lsn(1), head.lsn)
        .collect::<Result<_, _>>()
        .expect("read back");
    assert_eq!(
        records.len() as u64,
        head.lsn.0,
        "every lsn up to the head reads back"
    );
    for (position, stored) in records.iter().enumerate() {
        assert_eq!(
            stored.record.lsn,
            Lsn(position as u64 + 1),
            "lsns are dense"
        );
    }
    for (event_id, receipt) in receipts {
        let stored = &records[(receipt.lsn.0 - 1) as usize];
        assert_eq!(
            &stored.record.event_id, event_id,
            "receipt lsn {} holds its event",
            receipt.lsn
        );
        assert_eq!(
            stored.hash, receipt.hash,
            "receipt hash of lsn {} matches",
            receipt.lsn
        );
    }
    let report = log
        .verify(Lsn(1), head.lsn, &mut |_| {})
        .expect("verify runs");
    assert_eq!(report.failure, None);
    assert_eq!(report.verified, head.lsn.0);
    assert_eq!(report.head_hash, head.hash);
}
