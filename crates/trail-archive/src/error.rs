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
    /// An S3 Object Lock call (retention, legal hold) failed: an archived
    /// object is not locked as configured, so it is not "archived" yet.
    #[error("object lock: could not {operation} {key}: {failure}")]
    Lock {
        /// What was being done (`set the retention of`, ...).
        operation: &'static str,
        /// The object key.
        key: String,
        /// Why.
        failure: LockFailure,
    },
}

/// Why an Object Lock call failed (`lock.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockFailure {
    /// No answer (refused connection, timeout), a 5xx, or no credentials:
    /// retry later.
    #[error("the store did not answer: {0}")]
    Unreachable(String),
    /// The bucket has no Object Lock configuration (S3 `InvalidRequest`):
    /// it must be created with Object Lock enabled.
    #[error("the bucket has no Object Lock configuration (InvalidRequest: {0}); create the bucket with Object Lock enabled")]
    NotEnabled(String),
    /// The store does not implement the call (501 NotImplemented, 405).
    #[error("the store does not implement Object Lock ({0})")]
    Unsupported(String),
    /// The store refused: HTTP status, S3 error code and message.
    #[error("refused with {status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// S3 error code (`AccessDenied`, ...).
        code: String,
        /// S3's message.
        message: String,
    },
    /// The store accepted the call but reads back something else.
    #[error("{0}")]
    NotApplied(String),
    /// The target is not an S3 bucket (`file://`).
    #[error("file:// targets cannot enforce Object Lock; use an s3:// target whose bucket has Object Lock enabled")]
    NotS3,
}

impl ArchiveError {
    /// True for damage to archived data (missing, altered, swapped objects):
    /// what a server maps to DATA_LOSS and the CLI to its failure exit code.
    #[must_use]
    pub fn is_data_loss(&self) -> bool {
        matches!(self, ArchiveError::DataLoss { .. })
    }

    /// True when retrying later may succeed (the store was unreachable,
    /// for an object call or an Object Lock call).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ArchiveError::Store { .. }
                | ArchiveError::Lock {
                    failure: LockFailure::Unreachable(_),
                    ..
                }
        )
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
