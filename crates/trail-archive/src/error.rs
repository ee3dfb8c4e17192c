//! The archive's one error type. Messages are lowercase and name what a
//! reader needs to act: the object key and LSN range for damage, the
//! configuration key for a bad setting.

use std::path::PathBuf;

use trail_log::{LogError, Lsn};

/// A result with [`ArchiveError`].
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// What went wrong with the archive.
/// Exhaustive on purpose: the server maps every variant to a status with
/// no catch-all arm.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The target URL or another setting cannot be used.
    #[error("invalid archive configuration: {0}")]
    Config(String),
    /// The object store failed (unreachable, refused, timed out): retry later.
    #[error("object store could not {operation} {key}")]
    Store {
        /// What was being done (`put`, `get`, `list`, ...).
        operation: &'static str,
        /// The object key (or prefix).
        key: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// An archived object is missing, altered, swapped, or breaks the
    /// chain: the archive cannot vouch for these LSNs (DATA_LOSS).
    #[error("archived object {key} (lsns {first}..={last}): {reason}")]
    DataLoss {
        /// The object key.
        key: String,
        /// First LSN of the range it should hold.
        first: Lsn,
        /// Last LSN of that range.
        last: Lsn,
        /// What is wrong.
        reason: String,
    },
    /// An object already exists under a key with other content: the archive
    /// never overwrites, so an operator must look at it.
    #[error("archived object {key} already exists with other content (lsns {first}..={last}); it is never overwritten: inspect the bucket")]
    Conflict {
        /// The object key.
        key: String,
        /// First LSN of its range.
        first: Lsn,
        /// Last LSN of its range.
        last: Lsn,
    },
    /// A local file could not be read or written.
    #[error("local file {path}")]
    Local {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A local segment is not one the archive takes (not sealed, damaged).
    #[error("local segment {path} cannot be archived: {reason}")]
    Segment {
        /// The segment file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The log engine refused.
    #[error("log engine")]
    Log(#[from] LogError),
}

impl ArchiveError {
    /// True for damage to archived data (missing, altered, swapped objects):
    /// what a server maps to DATA_LOSS and the CLI to its failure exit code.
    #[must_use]
    pub fn is_data_loss(&self) -> bool {
        matches!(self, ArchiveError::DataLoss { .. })
    }

    /// True when retrying later may succeed (the store was unreachable).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, ArchiveError::Store { .. })
    }

    pub(crate) fn store(
        operation: &'static str,
        key: &object_store::path::Path,
        source: object_store::Error,
    ) -> ArchiveError {
        ArchiveError::Store {
            operation,
            key: key.to_string(),
            source,
        }
    }

    pub(crate) fn local(path: &std::path::Path, source: std::io::Error) -> ArchiveError {
        ArchiveError::Local {
            path: path.to_owned(),
            source,
        }
    }
}
