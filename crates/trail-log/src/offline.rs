//! Read-only access to a copy of a data directory, with no server: what the
//! CLI's `inspect` and offline `verify` use. Nothing here writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::genesis_hash;
use crate::error::{LogError, Result};
use crate::fs::{FileSystem, OsFileSystem};
use crate::log::VerifyReport;
use crate::recovery::{list_segments, recover, Repair, TornTail};
use crate::store::WAL_DIR_NAME;
use crate::types::{LogName, Lsn};

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
    /// Its segments, oldest first.
    pub segments: Vec<SegmentSummary>,
    /// A torn tail recovery would cut, if any.
    pub torn_tail: Option<TornTail>,
}

/// Lists every log under `root` with its segments. Reads every segment.
///
/// # Errors
/// IO errors and corruption (naming file, offset and LSN).
pub fn inspect(root: &Path) -> Result<Vec<LogSummary>> {
    let fs: Arc<dyn FileSystem> = Arc::new(OsFileSystem);
    let names = fs
        .list_dir(root)
        .map_err(|error| LogError::io("listing", root, error))?;
    let mut logs: Vec<LogName> = names
        .iter()
        .filter_map(|name| LogName::new(name).ok().filter(|log| log.as_str() == name))
        .collect();
    logs.sort();
    let mut summaries = Vec::new();
    for name in logs {
        let wal_dir = root.join(name.as_str()).join(WAL_DIR_NAME);
        if !fs.exists(&wal_dir).unwrap_or(false) {
            continue;
        }
        let recovery = recover(
            fs.as_ref(),
            &wal_dir,
            genesis_hash(name.as_str()),
            false,
            Repair::ReadOnly,
            &mut |_| {},
        )?;
        let mut segments = Vec::new();
        for (entry, (_, path)) in recovery
            .catalog
            .segments
            .iter()
            .zip(list_segments(fs.as_ref(), &wal_dir)?)
        {
            let bytes = fs
                .open_read(&path)
                .and_then(|file| file.len())
                .map_err(|error| LogError::io("reading the length of", &path, error))?;
            segments.push(SegmentSummary {
                file: path,
                first_lsn: entry.first_lsn,
                last_lsn: (entry.last_lsn >= entry.first_lsn).then_some(entry.last_lsn),
                bytes,
                sealed: entry.sealed,
            });
        }
        summaries.push(LogSummary {
            name,
            segments,
            torn_tail: recovery.torn_tail,
        });
    }
    Ok(summaries)
}

/// Verifies a whole log in a data directory without modifying it: every
/// record's CRC, LSN, chain link, every seal and segment boundary. A torn
/// tail (never acknowledged) is not a failure; damage to synced data is.
///
/// # Errors
/// IO errors, and [`LogError::LogNotFound`] when the log is not there.
pub fn verify(root: &Path, name: &LogName, progress: &mut dyn FnMut(Lsn)) -> Result<VerifyReport> {
    let fs = OsFileSystem;
    let wal_dir = root.join(name.as_str()).join(WAL_DIR_NAME);
    if !fs
        .exists(&wal_dir)
        .map_err(|error| LogError::io("looking for", &wal_dir, error))?
    {
        return Err(LogError::LogNotFound(name.to_string()));
    }
    match recover(
        &fs,
        &wal_dir,
        genesis_hash(name.as_str()),
        true,
        Repair::ReadOnly,
        progress,
    ) {
        Ok(recovery) => {
            let tip = recovery.recovered.tip;
            Ok(VerifyReport {
                verified: recovery.record_count,
                first: Lsn::FIRST,
                last: tip.lsn,
                head_hash: tip.hash,
                failure: None,
            })
        }
        Err(LogError::Corruption {
            file,
            offset,
            lsn,
            reason,
        }) => Ok(VerifyReport {
            verified: lsn.0.saturating_sub(1),
            first: Lsn::FIRST,
            last: Lsn(lsn.0.saturating_sub(1)),
            head_hash: crate::types::RecordHash::default(),
            failure: Some(crate::log::VerifyFailure {
                lsn,
                file,
                offset,
                reason,
            }),
        }),
        Err(error) => Err(error),
    }
}
