//! What an append carries and the engine's half of the append contract: the
//! structure and size checks (one [`AppendLimits`], derived by the server
//! from its configuration) and the CPU work done on the caller's thread
//! before anything is queued for the writer. The server checks content
//! (field by field) before it calls the engine; both refuse an event id that
//! repeats within one request.

use std::collections::HashSet;

use crate::codec::PreparedBody;
use crate::codec::RECORD_OVERHEAD_BYTES_MAX;
use crate::error::{LogError, Result};
use crate::types::RecordKind;

/// One event to append: its id and the producer's encoding of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInput {
    /// Unique per log for the log's whole life.
    pub event_id: String,
    /// The event as the producer encoded it, stored byte for byte.
    pub encoded_event: Vec<u8>,
    /// Event or compensation.
    pub kind: RecordKind,
}

impl EventInput {
    /// An event record.
    #[must_use]
    pub fn new(event_id: String, encoded_event: Vec<u8>) -> EventInput {
        EventInput {
            event_id,
            encoded_event,
            kind: RecordKind::Event,
        }
    }

    /// An upper bound of this event's frame on disk.
    #[must_use]
    pub fn frame_bytes_max(&self) -> usize {
        self.encoded_event.len() + self.event_id.len() + RECORD_OVERHEAD_BYTES_MAX
    }
}

/// What one append request may carry. The names in error messages are
/// `traild`'s configuration keys, so a refused client (or its operator)
/// knows what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendLimits {
    /// Events in one request (`limits.events_per_request_max`).
    pub events_per_request_max: usize,
    /// One encoded event, in bytes (`limits.event_bytes_max`).
    pub event_bytes_max: usize,
    /// One event id, in bytes (`limits.event_id_bytes_max`).
    pub event_id_bytes_max: usize,
}

impl Default for AppendLimits {
    /// The same defaults as `traild`'s `[limits]`.
    fn default() -> Self {
        AppendLimits {
            events_per_request_max: 1_000,
            event_bytes_max: 64 << 10,
            event_id_bytes_max: 128,
        }
    }
}

/// Configuration keys the engine's limits are known by.
pub mod keys {
    /// See [`super::AppendLimits::events_per_request_max`].
    pub const EVENTS_PER_REQUEST_MAX: &str = "limits.events_per_request_max";
    /// See [`super::AppendLimits::event_bytes_max`].
    pub const EVENT_BYTES_MAX: &str = "limits.event_bytes_max";
    /// See [`super::AppendLimits::event_id_bytes_max`].
    pub const EVENT_ID_BYTES_MAX: &str = "limits.event_id_bytes_max";
    /// See [`crate::LogOptions::group_bytes_max`].
    pub const GROUP_BYTES_MAX: &str = "log.group_bytes_max";
}

impl AppendLimits {
    /// Checks one request's structure against the limits and against
    /// `group_bytes_max` (one request must fit one group commit).
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] for an empty request, an empty or
    /// repeated event id; [`LogError::TooLarge`] naming the limit's key.
    pub fn check(&self, events: &[EventInput], group_bytes_max: usize) -> Result<()> {
        if events.is_empty() {
            return Err(LogError::InvalidArgument(
                "an append needs at least one event".into(),
            ));
        }
        if events.len() > self.events_per_request_max {
            return Err(too_large(
                "append request".into(),
                events.len(),
                "events",
                self.events_per_request_max,
                keys::EVENTS_PER_REQUEST_MAX,
            ));
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut total = 0usize;
        for (index, event) in events.iter().enumerate() {
            if event.event_id.is_empty() {
                return Err(LogError::InvalidArgument(format!(
                    "events[{index}].event_id is empty"
                )));
            }
            if event.event_id.len() > self.event_id_bytes_max {
                return Err(too_large(
                    format!("events[{index}].event_id"),
                    event.event_id.len(),
                    "bytes",
                    self.event_id_bytes_max,
                    keys::EVENT_ID_BYTES_MAX,
                ));
            }
            if event.encoded_event.len() > self.event_bytes_max {
                return Err(too_large(
                    format!("events[{index}]"),
                    event.encoded_event.len(),
                    "bytes",
                    self.event_bytes_max,
                    keys::EVENT_BYTES_MAX,
                ));
            }
            // One event cannot repeat itself: most requests skip the set.
            if events.len() > 1 && !seen.insert(event.event_id.as_str()) {
                return Err(LogError::InvalidArgument(format!(
                    "events[{index}].event_id {:?} repeats an earlier event id of the same request; send each event once",
                    event.event_id
                )));
            }
            total += event.frame_bytes_max();
        }
        if total > group_bytes_max {
            return Err(too_large(
                "append request".into(),
                total,
                "bytes",
                group_bytes_max,
                keys::GROUP_BYTES_MAX,
            ));
        }
        Ok(())
    }
}

/// The error for `what` of `size` over `limit`, named by its configuration key.
fn too_large(
    what: String,
    size: usize,
    unit: &'static str,
    limit: usize,
    setting: &'static str,
) -> LogError {
    LogError::TooLarge {
        what,
        size: size as u64,
        unit,
        limit: limit as u64,
        setting,
    }
}

/// An event on its way to the writer: its id, and the head of its record
/// body already encoded and hashed on the appending thread (so the writer,
/// which every append of the log passes through, does as little as it can).
#[derive(Debug)]
pub(crate) struct PreparedEvent {
    pub event_id: String,
    /// `index::event_id_key` of the id.
    pub key: u64,
    pub body: PreparedBody,
}

/// An append checked and prepared by [`crate::Log::prepare`], ready for
/// [`crate::Log::submit`].
#[derive(Debug)]
pub struct PreparedAppend {
    pub(crate) events: Vec<PreparedEvent>,
    pub(crate) atomic: bool,
}

/// Encodes and hashes the head of each event's record.
pub(crate) fn prepare(events: Vec<EventInput>, atomic: bool) -> Result<PreparedAppend> {
    let events = events
        .into_iter()
        .map(|event| {
            let body = PreparedBody::new(event.kind, &event.event_id, &event.encoded_event)
                .map_err(|error| LogError::InvalidArgument(error.to_string()))?;
            let key = crate::index::event_id_key(&event.event_id);
            Ok(PreparedEvent {
                event_id: event.event_id,
                key,
                body,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PreparedAppend { events, atomic })
}
