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
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::Internal => Code::Internal,
    }
}

/// A status carrying the engine's message, which names what was wrong. A
/// limit the engine enforces is already named by the TOML key that sets it
/// (`trail_log::append::keys`), in the shape every limit uses.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_limits_are_named_by_their_config_key() {
        let status = from_log_error(&LogError::TooLarge {
            what: "append request".to_owned(),
            size: 5_000_000,
            unit: "bytes",
            limit: 4_194_304,
            setting: trail_log::append::keys::GROUP_BYTES_MAX,
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "append request is 5000000 bytes; the limit is 4194304 (log.group_bytes_max)"
        );
        let limits = trail_log::AppendLimits {
            events_per_request_max: 10,
            ..trail_log::AppendLimits::default()
        };
        let events: Vec<_> = (0..11)
            .map(|index| trail_log::EventInput::new(format!("e-{index}"), vec![1]))
            .collect();
        let error = limits
            .check(&events, 1 << 20)
            .expect_err("11 events over 10");
        let status = from_log_error(&error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .ends_with("11 events; the limit is 10 (limits.events_per_request_max)"),
            "{}",
            status.message()
        );
    }
}
