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

/// A status carrying the engine's message, which names what was wrong. A
/// limit the engine enforces is named by the TOML key that sets it (the
/// engine knows only its option names), in the shape every limit uses.
#[must_use]
pub fn from_log_error(error: &LogError) -> Status {
    if let LogError::TooLarge {
        what,
        size,
        limit,
        setting,
    } = error
    {
        let (key, unit) = config_key(setting);
        return Status::resource_exhausted(format!(
            "{what} is {size} {unit}; the limit is {limit} ({key})"
        ));
    }
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

/// The configuration key (and unit) behind an engine option that limits
/// what a client sends; `crate::Config::log_options` is where they meet.
fn config_key(setting: &str) -> (String, &'static str) {
    match setting {
        "event_bytes_max" => ("limits.event_bytes_max".to_owned(), "bytes"),
        "event_id_bytes_max" => ("limits.event_id_bytes_max".to_owned(), "bytes"),
        "batch_events_max" => ("limits.events_per_request_max".to_owned(), "events"),
        "group_bytes_max" => ("log.group_bytes_max".to_owned(), "bytes"),
        other => (other.to_owned(), "bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_limits_are_named_by_their_config_key() {
        let status = from_log_error(&LogError::TooLarge {
            what: "append request".to_owned(),
            size: 5_000_000,
            limit: 4_194_304,
            setting: "group_bytes_max",
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "append request is 5000000 bytes; the limit is 4194304 (log.group_bytes_max)"
        );
        let status = from_log_error(&LogError::TooLarge {
            what: "append request (events)".to_owned(),
            size: 11,
            limit: 10,
            setting: "batch_events_max",
        });
        assert!(
            status
                .message()
                .ends_with("11 events; the limit is 10 (limits.events_per_request_max)"),
            "{}",
            status.message()
        );
    }
}
