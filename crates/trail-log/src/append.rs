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
use crate::types::{Lsn, RecordKind};

/// One event to append: its id and the producer's encoding of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInput {
    /// Unique per log for the log's whole life.
    pub event_id: String,
    /// The event as the producer encoded it, stored byte for byte.
    pub encoded_event: Vec<u8>,
    /// Event or compensation.
    pub kind: RecordKind,
    /// [`resource_key`] of the resource the event is about, when the caller
    /// knows it: what [`PreparedAppend::only_if_unchanged`] conditions look
    /// at. Not stored.
    pub resource_key: Option<u64>,
}

impl EventInput {
    /// An event record.
    #[must_use]
    pub fn new(event_id: String, encoded_event: Vec<u8>) -> EventInput {
        EventInput {
            event_id,
            encoded_event,
            kind: RecordKind::Event,
            resource_key: None,
        }
    }

    /// Names the resource the event is about (see [`EventInput::resource_key`]).
    #[must_use]
    pub fn about(mut self, resource: &str) -> EventInput {
        self.resource_key = Some(resource_key(resource));
        self
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
    /// See [`EventInput::resource_key`].
    pub resource_key: Option<u64>,
    /// The LSN a compensation undoes, checked against the LSN it gets.
    pub compensates: Option<Lsn>,
}

/// An append checked and prepared by [`crate::Log::prepare`], ready for
/// [`crate::Log::submit`].
#[derive(Debug)]
pub struct PreparedAppend {
    pub(crate) events: Vec<PreparedEvent>,
    pub(crate) atomic: bool,
    pub(crate) condition: Option<Unchanged>,
}

/// A condition the writer checks when it numbers an append: no record about
/// the resource was appended after `since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unchanged {
    /// [`resource_key`] of the resource.
    pub resource_key: u64,
    /// The LSN the caller's view of the resource is as of.
    pub since: Lsn,
}

impl PreparedAppend {
    /// Lands this append only if no record about `resource` (one appended
    /// with [`EventInput::about`] naming it) was appended after `since`;
    /// otherwise the append fails with [`LogError::ResourceChanged`] and
    /// nothing of it is written. The writer checks this as it numbers the
    /// append, so no append can slip in between the check and the records.
    ///
    /// The writer keeps, per bucket of resource keys, the last LSN that
    /// touched it (a fixed table, [`RESOURCE_BUCKETS`] entries, reset to the
    /// head when the log opens): a condition can fail because another
    /// resource of the same bucket changed, never pass when its own did.
    /// Callers retry with a newer view.
    #[must_use]
    pub fn only_if_unchanged(mut self, resource: &str, since: Lsn) -> PreparedAppend {
        self.condition = Some(Unchanged {
            resource_key: resource_key(resource),
            since,
        });
        self
    }
}

/// Buckets of the writer's "last LSN per resource" table: 32 KiB per log.
pub const RESOURCE_BUCKETS: usize = 4096;

/// The key of a resource name for append conditions: the first 8 bytes of
/// its blake3 hash (domain-separated from event-id keys).
#[must_use]
pub fn resource_key(resource: &str) -> u64 {
    static KEY: std::sync::LazyLock<[u8; 32]> =
        std::sync::LazyLock::new(|| blake3::derive_key("trail.v1 resource key", &[]));
    let hash = blake3::keyed_hash(&KEY, resource.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(key)
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
                resource_key: event.resource_key,
                compensates: event.kind.compensates(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PreparedAppend {
        events,
        atomic,
        condition: None,
    })
}
