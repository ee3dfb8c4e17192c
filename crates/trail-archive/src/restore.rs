//! Rebuilding a data directory from the archive: every segment verified as
//! [`crate::verify_archive`] does, then written as `<dir>/<log>/wal/`
//! segments and sidecars (temporary file, fsync, rename, directory fsync),
//! so `traild` opens and serves the result like any log.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use trail_log::segment::{index_file_name, segment_file_name};
use trail_log::{LogName, WAL_DIR_NAME};

use crate::error::{ArchiveError, Result};
use crate::target::ArchiveTarget;
use crate::verify::{walk_checked, ArchiveReport, Progress};

/// Restores `log` from `target` into the data directory `data_dir`.
/// Refuses a log directory that already holds files: restore never mixes
/// with or replaces local data.
///
/// # Errors
/// As [`crate::verify_archive`] (nothing is left behind for a log that
/// fails: its partial `wal/` is removed), [`ArchiveError::Local`] for IO,
/// [`ArchiveError::Config`] for an existing log or an archive that holds
/// none of this log.
pub async fn restore_log(
    target: &ArchiveTarget,
    log: &LogName,
    data_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<ArchiveReport> {
    let log_dir = data_dir.join(log.as_str());
    let wal_dir = log_dir.join(WAL_DIR_NAME);
    if std::fs::read_dir(&log_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ArchiveError::Config(format!(
            "{} already exists and is not empty; restore into a fresh data directory",
            log_dir.display()
        )));
    }
    std::fs::create_dir_all(&wal_dir).map_err(|error| ArchiveError::local(&wal_dir, error))?;
    let mut write = |link: &crate::chain::ChainLink, fetched: crate::verify::FetchedSegment| {
        let first = link.manifest.first_lsn;
        write_durably(&wal_dir.join(segment_file_name(first)), &fetched.segment)?;
        write_durably(&wal_dir.join(index_file_name(first)), &fetched.index)
    };
    let outcome = walk_checked(target, log, progress, &mut write).await;
    match outcome {
        Ok(report) if report.segments == 0 => {
            let _ = std::fs::remove_dir_all(&log_dir);
            Err(ArchiveError::Config(format!(
                "the archive holds no segment of log {log}: nothing to restore (check the url and --log)"
            )))
        }
        Ok(report) => {
            for dir in [&wal_dir, &log_dir, &data_dir.to_path_buf()] {
                sync_dir(dir)?;
            }
            Ok(report)
        }
        Err(error) => {
            // A partial log would open as a shorter, valid log: remove it.
            let _ = std::fs::remove_dir_all(&log_dir);
            Err(error)
        }
    }
}

pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    let mut file =
        File::create(&temporary).map_err(|error| ArchiveError::local(&temporary, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| ArchiveError::local(&temporary, error))?;
    std::fs::rename(&temporary, path).map_err(|error| ArchiveError::local(path, error))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(|error| ArchiveError::local(dir, error))
}
