//! Bounds on everything a client controls. Each has a name (the TOML key under
//! `[limits]`), which error messages quote so a client knows what to change.

use serde::{Deserialize, Serialize};

/// Limits that contradict each other or are zero: the message names the
/// limit (`limits.<key>`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitsError(pub String);

/// Client-controlled sizes and counts, all configurable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest gRPC request message, as encoded. Checked on the wire
    /// before tonic decodes anything (trail-server's `request_limit`); also tonic's
    /// decoding limit. Together with the event limits it must fit one group
    /// commit (`log.group_bytes_max`; see `Config::validate`).
    pub request_bytes_max: usize,
    /// Events in one append request.
    pub events_per_request_max: usize,
    /// One event, protobuf-encoded.
    pub event_bytes_max: usize,
    /// `event_id`, in bytes.
    pub event_id_bytes_max: usize,
    /// `actor`, `action`, `resource` and `trace_id`, each in bytes.
    pub field_bytes_max: usize,
    /// Entries in `attributes`.
    pub attributes_max: usize,
    /// One attribute key, in bytes.
    pub attribute_key_bytes_max: usize,
    /// One attribute value, in bytes.
    pub attribute_value_bytes_max: usize,
    /// `payload`, in bytes.
    pub payload_bytes_max: usize,
    /// The JSON text of `change`, in bytes.
    pub change_bytes_max: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub streams_per_connection_max: u32,
    /// Append requests of one `AppendStream` in flight at once.
    pub stream_appends_in_flight_max: usize,
    /// Records a `Read` or `Subscribe` reads from disk per step (at most
    /// 16: what one stream buffers); the gRPC stream's flow control holds a
    /// slow reader back between steps.
    pub read_chunk_records: usize,
    /// Disk reads of `Read` and `Subscribe` streams running at once, server
    /// wide: each runs on a blocking thread, so this bounds the threads
    /// (and their allocator arenas) that many readers can occupy.
    pub disk_reads_in_flight_max: usize,
    /// Records (or history rows) per `Query`/`History` page when the
    /// request asks for 0.
    pub query_page_records_default: usize,
    /// The most records (or history rows) one page may ask for.
    pub query_page_records_max: usize,
    /// Conditions in one filter (each attribute counts as one).
    pub query_filters_max: usize,
    /// How long a request with `min_lsn` waits for a derived store when it
    /// names no timeout, milliseconds.
    pub index_wait_ms_default: u64,
    /// The longest `min_lsn_timeout_ms` a request may ask for.
    pub index_wait_ms_max: u64,
    /// The `reason` of a `Compensate` or `Rollback`, in bytes.
    pub reason_bytes_max: usize,
    /// Compensation records one `Compensate` (cascade) or `Rollback` may
    /// append in its one atomic batch; the batch must also fit one group
    /// commit (`log.group_bytes_max`).
    pub compensation_records_max: usize,
}

/// The most records a `Read` or `Subscribe` stream reads ahead of its
/// client; what a stalled reader can hold.
pub const READ_CHUNK_RECORDS_MAX: usize = 16;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 3 MiB: with 1,000 events of the longest id, a request's
            // records still fit the default 4 MiB group commit.
            request_bytes_max: 3 << 20,
            events_per_request_max: 1_000,
            event_bytes_max: 64 << 10,
            event_id_bytes_max: 128,
            field_bytes_max: 1_024,
            attributes_max: 64,
            attribute_key_bytes_max: 128,
            attribute_value_bytes_max: 1_024,
            payload_bytes_max: 48 << 10,
            change_bytes_max: 48 << 10,
            streams_per_connection_max: 256,
            stream_appends_in_flight_max: 16,
            read_chunk_records: 16,
            disk_reads_in_flight_max: 4,
            query_page_records_default: 100,
            query_page_records_max: 1_000,
            query_filters_max: 16,
            index_wait_ms_default: 5_000,
            index_wait_ms_max: 60_000,
            reason_bytes_max: 1_024,
            compensation_records_max: 10_000,
        }
    }
}

impl Limits {
    /// Rejects limits that contradict each other or are zero.
    ///
    /// # Errors
    /// [`LimitsError`] naming the limit.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let positive = [
            ("request_bytes_max", self.request_bytes_max),
            ("events_per_request_max", self.events_per_request_max),
            ("event_bytes_max", self.event_bytes_max),
            ("event_id_bytes_max", self.event_id_bytes_max),
            ("field_bytes_max", self.field_bytes_max),
            ("attribute_key_bytes_max", self.attribute_key_bytes_max),
            (
                "stream_appends_in_flight_max",
                self.stream_appends_in_flight_max,
            ),
            ("read_chunk_records", self.read_chunk_records),
            ("disk_reads_in_flight_max", self.disk_reads_in_flight_max),
            (
                "query_page_records_default",
                self.query_page_records_default,
            ),
            ("query_page_records_max", self.query_page_records_max),
            ("query_filters_max", self.query_filters_max),
            ("reason_bytes_max", self.reason_bytes_max),
            ("compensation_records_max", self.compensation_records_max),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(LimitsError(format!("limits.{name} must be at least 1")));
            }
        }
        if self.read_chunk_records > READ_CHUNK_RECORDS_MAX {
            return Err(LimitsError(format!(
                "limits.read_chunk_records ({}) is above {READ_CHUNK_RECORDS_MAX}: a stream \
                 buffers at most that many records, so a stalled reader holds no more",
                self.read_chunk_records
            )));
        }
        if self.disk_reads_in_flight_max > 1024 {
            return Err(LimitsError(format!(
                "limits.disk_reads_in_flight_max ({}) is above 1024 (each is a thread)",
                self.disk_reads_in_flight_max
            )));
        }
        if self.query_page_records_default > self.query_page_records_max {
            return Err(LimitsError(format!(
                "limits.query_page_records_default ({}) is above limits.query_page_records_max ({})",
                self.query_page_records_default, self.query_page_records_max
            )));
        }
        if self.index_wait_ms_default > self.index_wait_ms_max {
            return Err(LimitsError(format!(
                "limits.index_wait_ms_default ({}) is above limits.index_wait_ms_max ({})",
                self.index_wait_ms_default, self.index_wait_ms_max
            )));
        }
        if self.streams_per_connection_max == 0 {
            return Err(LimitsError(
                "limits.streams_per_connection_max must be at least 1".to_owned(),
            ));
        }
        // An event must fit in a request, or the limit on events could never
        // be reached and clients would see the request limit instead.
        if self.event_bytes_max > self.request_bytes_max {
            return Err(LimitsError(format!(
                "limits.event_bytes_max ({}) is larger than limits.request_bytes_max ({}); \
                 an event that large could never arrive",
                self.event_bytes_max, self.request_bytes_max
            )));
        }
        // Each part of an event must fit an event, or its own limit could
        // never be reached.
        let parts = [
            ("event_id_bytes_max", self.event_id_bytes_max),
            ("field_bytes_max", self.field_bytes_max),
            ("attribute_key_bytes_max", self.attribute_key_bytes_max),
            ("attribute_value_bytes_max", self.attribute_value_bytes_max),
            ("payload_bytes_max", self.payload_bytes_max),
            ("change_bytes_max", self.change_bytes_max),
        ];
        for (name, value) in parts {
            if value > self.event_bytes_max {
                return Err(LimitsError(format!(
                    "limits.{name} ({value}) is larger than limits.event_bytes_max ({}); \
                     an event could never reach it",
                    self.event_bytes_max
                )));
            }
        }
        Ok(())
    }
}
