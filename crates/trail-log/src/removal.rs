//! Removing archived segments from local disk, the last step of the
//! archive's protocol (ENGINE.md "The retention gate"): the archive holds
//! the log, uploads and verifies a sealed segment, releases it, and then
//! asks the engine to drop the released prefix. The engine writes
//! `wal/PREFIX` (FORMAT.md §8.3) first, so a crash at any point leaves
//! either the old files (ignored by recovery) or the prefix, never a gap;
//! then takes the segments out of the catalog (new readers get `NotLocal`;
//! readers with the file open finish), then deletes the segment files. The
//! `.idx` sidecars stay: their event ids keep answering for idempotency.

use std::path::PathBuf;

use crate::error::{LogError, Result};
use crate::log::Log;
use crate::prefix::ArchivedPrefix;
use crate::types::Lsn;

/// What [`Log::remove_archived_through`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixRemoval {
    /// The record written: where the local log now starts.
    pub prefix: ArchivedPrefix,
    /// The segment files deleted, oldest first.
    pub removed: Vec<PathBuf>,
}

impl Log {
    /// Drops the local segments up to and including the one ending at
    /// `through`, which the caller has archived and verified: writes the
    /// archived-prefix record (`through + 1`, the last removed record's
    /// hash, `prev_recorded_at_unix_nanos` = its `recorded_at`, and the
    /// `voucher` naming what vouches for the archive), then removes the
    /// segments from the catalog and deletes their files. Only segments in
    /// [`Log::removable_segments`] go, and never the newest segment (the
    /// local log always keeps one, which the prefix's hash links into).
    /// Blocking file IO.
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] when `through` is not the last LSN of a
    /// removable segment followed by another local segment, or while the
    /// background verification still reads the sealed segments (retry when
    /// it is done); IO errors.
    pub fn remove_archived_through(
        &self,
        through: Lsn,
        prev_recorded_at_unix_nanos: i64,
        voucher: String,
    ) -> Result<PrefixRemoval> {
        if self.background_verification().running {
            return Err(LogError::InvalidArgument(
                "the background verification still reads sealed segments; remove archived segments after it finished".into(),
            ));
        }
        let removable = self.removable_segments();
        let segments = self.segments();
        let Some(last_removed) = removable.iter().find(|info| info.last_lsn == through) else {
            return Err(LogError::InvalidArgument(format!(
                "lsn {through} is not the last lsn of a sealed segment every retention holder released"
            )));
        };
        if !segments.iter().any(|info| info.first_lsn == through.next()) {
            return Err(LogError::InvalidArgument(format!(
                "no local segment starts at lsn {}: the newest segment always stays",
                through.next()
            )));
        }
        let prefix = ArchivedPrefix {
            first_lsn: through.next(),
            prev_hash: last_removed.last_hash,
            prev_recorded_at_unix_nanos,
            voucher,
        };
        let fs = self.shared.fs.as_ref();
        let wal_dir = &self.shared.wal_dir;
        // First the record, durably: from here a crash reopens the log
        // after the prefix whatever happens to the files below.
        prefix.write(fs, wal_dir)?;
        let removed_entries: Vec<PathBuf> = {
            let mut catalog = self.shared.catalog_mut();
            let paths = catalog
                .segments
                .iter()
                .filter(|entry| entry.last_lsn <= through)
                .map(|entry| entry.path.clone())
                .collect();
            catalog.segments.retain(|entry| entry.last_lsn > through);
            catalog.prefix = Some(prefix.clone());
            paths
        };
        for path in &removed_entries {
            fs.remove_file(path)
                .map_err(|error| LogError::io("removing archived segment", path, error))?;
        }
        fs.sync_dir(wal_dir)
            .map_err(|error| LogError::io("syncing", wal_dir, error))?;
        tracing::info!(log = %self.shared.name, first_local = %prefix.first_lsn, removed = removed_entries.len(), "removed archived segments from local disk");
        Ok(PrefixRemoval {
            prefix,
            removed: removed_entries,
        })
    }
}
