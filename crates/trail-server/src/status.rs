//! The one place where log engine errors become gRPC status codes.

use tonic::{Code, Status};
use trail_log::{ErrorKind, LogError};

/// The gRPC code for an engine error kind. Exhaustive on purpose: a new kind
/// fails to compile here until someone decides what clients should see.
#[must_use]
pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    }
}

/// A status carrying the engine's message, which names what was wrong.
#[must_use]
pub fn from_log_error(error: &LogError) -> Status {
    let code = code_for(error.kind());
    if code == Code::Internal {
        tracing::error!(%error, "internal error");
    }
    Status::new(code, error.to_string())
}

/// A status for a log that does not exist.
#[must_use]
pub fn log_not_found(name: &trail_log::LogName) -> Status {
    Status::not_found(format!(
        "log \"{name}\" does not exist; a log is created by its first append"
    ))
}
