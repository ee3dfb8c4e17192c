//! Read-only access to a copy of a data directory, with no server: what the
//! CLI's `inspect` and offline `verify` use. Nothing here writes: both run
//! the planning half of recovery (which never writes), and verification
//! then re-hashes every local segment through the same path as
//! `Log::verify`.

use std::path::{Path, PathBuf};

use crate::codec::genesis_hash;
use crate::error::{LogError, Result};
use crate::fs::{FileSystem, OsFileSystem};
use crate::prefix::ArchivedPrefix;
use crate::recovery::{analyze, Depth, TornTail};
use crate::store::WAL_DIR_NAME;
use crate::types::{LogName, Lsn, RecordHash};
use crate::verify::{verify_range, VerifyFailure, VerifyReport};

/// One segment file as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The file.
    pub file: PathBuf,
    /// Its first LSN.
    pub first_lsn: Lsn,
    /// Its last good LSN (`None` when it holds no record).
    pub last_lsn: Option<Lsn>,
    /// File size in bytes (preallocated for the active segment).
    pub bytes: u64,
    /// Whether it ends with a seal.
    pub sealed: bool,
}

/// One log as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSummary {
    /// The log.
    pub name: LogName,
    /// Its local segments, oldest first.
    pub segments: Vec<SegmentSummary>,
    /// A torn tail recovery would cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Where the local log starts when its earlier records are archived.
    pub archived_prefix: Option<ArchivedPrefix>,
}

/// The logs under `root`, sorted (directories with a `wal` inside).
///
/// # Errors
/// IO errors listing `root`.
pub fn list_logs(root: &Path) -> Result<Vec<LogName>> {
    let fs = OsFileSystem;
    let names = fs
        .list_dir(root)
        .map_err(|error| LogError::io("listing", root, error))?;
    let mut logs: Vec<LogName> = names
        .iter()
        .filter_map(|name| LogName::new(name).ok().filter(|log| log.as_str() == name))
        .filter(|log| fs.exists(&wal_dir(root, log)).unwrap_or(false))
        .collect();
    logs.sort();
    Ok(logs)
}

fn wal_dir(root: &Path, name: &LogName) -> PathBuf {
    root.join(name.as_str()).join(WAL_DIR_NAME)
}

/// Describes one log's files (headers, seals, footers, sidecars and the
/// active segment; sealed segments are not re-hashed).
///
/// # Errors
/// IO errors, [`LogError::LogNotFound`], and corruption (naming file,
/// offset and LSN).
pub fn inspect_log(root: &Path, name: &LogName) -> Result<LogSummary> {
    let fs = OsFileSystem;
    let wal_dir = existing_wal_dir(&fs, root, name)?;
    let plan = analyze(
        &fs,
        &wal_dir,
        genesis_hash(name.as_str()),
        Depth::Quick,
        &mut |_| {},
    )?;
    let segments = plan
        .catalog
        .segments
        .iter()
        .map(|entry| SegmentSummary {
            file: entry.path.clone(),
            first_lsn: entry.first_lsn,
            last_lsn: (entry.last_lsn >= entry.first_lsn).then_some(entry.last_lsn),
            bytes: entry.file_bytes,
            sealed: entry.sealed,
        })
        .collect();
    Ok(LogSummary {
        name: name.clone(),
        segments,
        torn_tail: plan.torn_tail,
        archived_prefix: plan.catalog.prefix,
    })
}

/// Lists every log under `root` with its segments.
///
/// # Errors
/// As [`inspect_log`], for the first log that fails.
pub fn inspect(root: &Path) -> Result<Vec<LogSummary>> {
    list_logs(root)?
        .iter()
        .map(|name| inspect_log(root, name))
        .collect()
}

fn existing_wal_dir(fs: &dyn FileSystem, root: &Path, name: &LogName) -> Result<PathBuf> {
    let wal_dir = wal_dir(root, name);
    if !fs
        .exists(&wal_dir)
        .map_err(|error| LogError::io("looking for", &wal_dir, error))?
    {
        return Err(LogError::LogNotFound(name.to_string()));
    }
    Ok(wal_dir)
}

/// Verifies a whole log in a data directory without modifying it: every
/// record's CRC, LSN, chain link, every seal and segment boundary, from
/// genesis or from the archived prefix's hash. A torn tail (bytes past the
/// durable end that the next open would cut) is not a failure; it is
/// reported in [`VerifyReport::torn_tail`]. Damage to synced data is.
///
/// # Errors
/// IO errors, and [`LogError::LogNotFound`] when the log is not there.
pub fn verify(root: &Path, name: &LogName, progress: &mut dyn FnMut(Lsn)) -> Result<VerifyReport> {
    let fs = OsFileSystem;
    let wal_dir = existing_wal_dir(&fs, root, name)?;
    let genesis = genesis_hash(name.as_str());
    let plan = match analyze(&fs, &wal_dir, genesis, Depth::Quick, &mut |_| {}) {
        Ok(plan) => plan,
        Err(error) => {
            let mut report = VerifyReport::empty(Lsn::FIRST, RecordHash::default());
            report.failure = Some(VerifyFailure::from_corruption(error)?);
            return Ok(report);
        }
    };
    let mut report = verify_range(
        &fs,
        genesis,
        &plan.catalog.segments,
        plan.catalog.prefix.as_ref(),
        Lsn::FIRST,
        plan.tip.lsn,
        progress,
    )?;
    report.torn_tail = plan.torn_tail;
    Ok(report)
}
