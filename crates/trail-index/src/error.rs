//! The crate's one error type: each variant says which store, which log
//! position or which file was involved.

use std::path::PathBuf;

use trail_log::{ErrorKind, LogError};

/// The kind of a state-store error. A damaged store is the derived
/// store's problem, not the log's: it is rebuilt, so it is not DATA_LOSS.
#[must_use]
pub fn state_error_kind(error: &trail_state::StateError) -> ErrorKind {
    match error {
        trail_state::StateError::NothingToSnapshot { .. } => ErrorKind::NotFound,
        _ => ErrorKind::Internal,
    }
}

/// An error from a derived store or its driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The log failed under the follower (damage, IO, closed).
    #[error("reading the log: {0}")]
    Log(#[from] LogError),
    /// The query index (tantivy) failed.
    #[error("query index at {path}: {what}: {source}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// The index directory.
        path: PathBuf,
        /// The library's error.
        #[source]
        source: tantivy::TantivyError,
    },
    /// The query index's stored watermark does not parse: the index is not
    /// trusted and is rebuilt.
    #[error("query index at {path}: watermark {payload:?} is not `<lsn>:<hash hex>`")]
    Watermark {
        /// The index directory.
        path: PathBuf,
        /// The commit payload as found.
        payload: String,
    },
    /// The resource-state store failed.
    #[error("state store: {0}")]
    State(#[from] trail_state::StateError),
    /// A file system operation on a derived store's directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A query the caller sent is wrong (which field and why).
    #[error("{0}")]
    InvalidQuery(String),
    /// The derived store has stopped following its log.
    #[error("{store} of log {log} stopped following the log: {reason}")]
    Stopped {
        /// Which store.
        store: &'static str,
        /// The log.
        log: String,
        /// Why.
        reason: String,
    },
}

impl IndexError {
    /// What a caller can do about it, in the engine's terms (the server
    /// maps kinds to gRPC codes in one place).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            IndexError::Log(error) => error.kind(),
            IndexError::State(error) => state_error_kind(error),
            IndexError::InvalidQuery(_) => ErrorKind::InvalidArgument,
            IndexError::Stopped { .. } => ErrorKind::Unavailable,
            IndexError::Query { .. } | IndexError::Watermark { .. } | IndexError::Io { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// A tantivy failure at `path` while doing `what`.
    pub(crate) fn query<'a>(
        what: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(tantivy::TantivyError) -> IndexError + 'a {
        move |source| IndexError::Query {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// An IO failure on `path` while doing `what`.
    pub(crate) fn io<'a>(
        what: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> IndexError + 'a {
        move |source| IndexError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
