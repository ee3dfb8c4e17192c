//! A log record as the derived stores see it: the engine's fields plus the
//! producer's event's keys (`trail_proto::keys::EventKeys`: no payload). The log stores the event as
//! the bytes the producer sent; a record whose event does not decode (the
//! server validates events, but the engine takes any bytes) is indexed by
//! its LSN, time and kind alone.

use prost::Message;
use trail_log::{RecordKind, StoredRecord};
use trail_proto::keys::EventKeys;
use trail_proto::v1::Outcome;

/// What the derived stores take from one record.
#[derive(Clone, Debug)]
pub struct IndexedRecord {
    /// Position in the log.
    pub lsn: u64,
    /// Hash of the stored record.
    pub hash: [u8; 32],
    /// The server's time.
    pub recorded_at_unix_nanos: i64,
    /// Event or compensation.
    pub kind: Kind,
    /// For a compensation, the LSN it undoes.
    pub compensates: u64,
    /// The producer's event's keys (empty when it does not decode).
    pub event: EventKeys,
}

/// The record kinds a filter can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A producer's event.
    Event,
    /// A compensation appended by Trail.
    Compensation,
}

impl Kind {
    /// The name the index and the CLI use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Compensation => "compensation",
        }
    }
}

/// The name the index and history use for an outcome.
#[must_use]
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Unspecified => "unspecified",
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Denied => "denied",
    }
}

impl IndexedRecord {
    /// Decodes `stored`'s event.
    #[must_use]
    pub fn from_stored(stored: &StoredRecord) -> IndexedRecord {
        let record = &stored.record;
        let (kind, compensates) = match record.kind {
            RecordKind::Event => (Kind::Event, 0),
            RecordKind::CompensationV1 { compensates }
            | RecordKind::Compensation { compensates, .. } => (Kind::Compensation, compensates.0),
        };
        let event = EventKeys::decode(record.event.as_slice()).unwrap_or_else(|error| {
            tracing::warn!(lsn = record.lsn.0, %error, "event does not decode: indexed by lsn, time and kind only");
            EventKeys::default()
        });
        IndexedRecord {
            lsn: record.lsn.0,
            hash: stored.hash.0,
            recorded_at_unix_nanos: record.recorded_at_unix_nanos,
            kind,
            compensates,
            event,
        }
    }

    /// The event's outcome (unknown numbers read as unspecified).
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        Outcome::try_from(self.event.outcome).unwrap_or(Outcome::Unspecified)
    }
}
