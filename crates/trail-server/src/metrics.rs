//! Prometheus metrics (DESIGN.md, "Operations"), served over HTTP at
//! `/metrics` on `metrics_listen` (127.0.0.1:9464 by default).
//!
//! Each server owns its recorder (none is installed globally, so several
//! servers can run in one process, as the tests do). Handles are registered
//! once per log and kept, so recording on the append path is a few atomic
//! operations: no allocation, no label lookup. The writer's own counters
//! ([`trail_log::LogStats`]) and queue depths are sampled every
//! [`SAMPLE_INTERVAL`].
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `trail_append_requests_total` | counter | `log`, `outcome` (`ok` or a gRPC code such as `invalid_argument`) |
//! | `trail_append_events_total` | counter | `log`, `outcome` (`ok`, `duplicate` or a gRPC code) |
//! | `trail_append_bytes_total` | counter | `log`: encoded event bytes appended (duplicates not counted) |
//! | `trail_append_latency_seconds` | histogram | `log`: request received to durable acknowledgement, successful requests |
//! | `trail_append_request_events` | histogram | `log`: events per successful request |
//! | `trail_log_queue_depth` | gauge | `log`: appends waiting for the writer |
//! | `trail_log_groups_total` | counter | `log`: group commits (one write each) |
//! | `trail_log_records_total` | counter | `log`: records the writer appended |
//! | `trail_log_written_bytes_total` | counter | `log`: frame bytes written |
//! | `trail_log_syncs_total` | counter | `log`: fdatasync/fsync calls |
//! | `trail_log_segments_started_total` | counter | `log`: segments the writer started |
//! | `trail_log_segments_prepared_inline_total` | counter | `log`: of those, preallocated on the writer's thread because no prepared spare was ready (in sync mode a stall of the appends behind it) |
//! | `trail_log_segments_uncached_total` | counter | `log`: sealed segments whose pages were dropped from the page cache (`[log] cached_sealed_segments`) |
//! | `trail_log_writer_spin_catches_total` | counter | `log`: appends the writer found while polling its queue after a small group (`[log] writer_spin_us`) |
//! | `trail_log_damaged` | gauge | `log`: 1 for a log out of service because its stored data is damaged |
//! | `trail_log_segments_to_verify` | gauge | `log`: sealed segments trusted at open, to be re-hashed in the background |
//! | `trail_log_segments_verified` | gauge | `log`: of those, re-hashed and found sound so far |
//! | `trail_log_torn_tail_records_cut` | gauge | `log`: records a torn tail held that opening the log cut (0: none); see OPERATIONS.md |
//! | `trail_archive_uploaded_segments_total` | counter | `log`: segments uploaded and verified by this process |
//! | `trail_archive_uploaded_bytes_total` | counter | `log`: bytes stored for them (segment and sidecar objects, compressed) |
//! | `trail_archive_upload_latency_seconds` | histogram | `log`: one segment, from reading it locally to its manifest read back |
//! | `trail_archive_failures_total` | counter | `log`: failed archive rounds (each retried after a backoff) |
//! | `trail_archive_local_bytes` | gauge | `log`: bytes of the log's local segment files (the hot tier) |
//! | `trail_archive_archived_bytes` | gauge | `log`: bytes the archive holds for the log |
//! | `trail_archive_read_cache_hits_total` | counter | `log`: archived segments a read found in the read-through cache |
//! | `trail_archive_read_cache_misses_total` | counter | `log`: archived segments a read had to download |
//! | `trail_archive_read_latency_seconds` | histogram | `log`: one read step of archived records, cache or download |
//!
//! The `trail_archive_*` series exist only with `[archive]` on, for the
//! logs the compactor or a read-through has touched.
//!
//! The writer's counters start at zero when the server opens the log. The
//! mean group commit size is
//! `rate(trail_log_records_total[1m]) / rate(trail_log_groups_total[1m])`.
//! Requests refused before their log was known (a bad log name, or a bad
//! first request to a new log) carry `log="_unknown"`, a name no log can
//! have, so clients cannot create label values at will.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tokio::task::JoinHandle;
use tonic::Code;
use trail_log::Log;

use crate::ServerError;

/// How often the writer's counters and queue depths are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The `log` label of requests refused before their log was known.
pub const UNKNOWN_LOG: &str = "_unknown";

const APPEND_REQUESTS: &str = "trail_append_requests_total";
const APPEND_EVENTS: &str = "trail_append_events_total";
const APPEND_BYTES: &str = "trail_append_bytes_total";
const APPEND_LATENCY: &str = "trail_append_latency_seconds";
const APPEND_REQUEST_EVENTS: &str = "trail_append_request_events";
const QUEUE_DEPTH: &str = "trail_log_queue_depth";
const SEGMENTS_TO_VERIFY: &str = "trail_log_segments_to_verify";
const SEGMENTS_VERIFIED: &str = "trail_log_segments_verified";
const TORN_TAIL_RECORDS_CUT: &str = "trail_log_torn_tail_records_cut";
const QUERY_INDEX_LAG: &str = "trail_query_index_lag_records";
const STATE_STORE_LAG: &str = "trail_state_store_lag_records";
const LOG_GROUPS: &str = "trail_log_groups_total";
const LOG_RECORDS: &str = "trail_log_records_total";
const LOG_WRITTEN_BYTES: &str = "trail_log_written_bytes_total";
const LOG_SYNCS: &str = "trail_log_syncs_total";
const LOG_SEGMENTS_STARTED: &str = "trail_log_segments_started_total";
const LOG_SEGMENTS_PREPARED_INLINE: &str = "trail_log_segments_prepared_inline_total";
const LOG_SEGMENTS_UNCACHED: &str = "trail_log_segments_uncached_total";
const LOG_SPIN_CATCHES: &str = "trail_log_writer_spin_catches_total";
const LOG_DAMAGED: &str = "trail_log_damaged";
const ARCHIVE_SEGMENTS: &str = "trail_archive_uploaded_segments_total";
const ARCHIVE_BYTES: &str = "trail_archive_uploaded_bytes_total";
const ARCHIVE_UPLOAD_LATENCY: &str = "trail_archive_upload_latency_seconds";
const ARCHIVE_FAILURES: &str = "trail_archive_failures_total";
const ARCHIVE_LOCAL_BYTES: &str = "trail_archive_local_bytes";
const ARCHIVE_ARCHIVED_BYTES: &str = "trail_archive_archived_bytes";
const ARCHIVE_READ_HITS: &str = "trail_archive_read_cache_hits_total";
const ARCHIVE_READ_MISSES: &str = "trail_archive_read_cache_misses_total";
const ARCHIVE_READ_LATENCY: &str = "trail_archive_read_latency_seconds";

/// Upper bounds of the latency buckets, seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds of the upload latency buckets, seconds: 10 ms to 10 min
/// (a 64 MiB segment to a slow remote store takes minutes).
const UPLOAD_LATENCY_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
];

/// Upper bounds of the events-per-request buckets.
const REQUEST_EVENTS_BUCKETS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 10_000.0,
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The server's metrics: a recorder, or nothing when metrics are off. Cheap
/// to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    recorder: Option<Arc<PrometheusRecorder>>,
    /// Handles for requests refused before their log was known.
    unknown: Arc<OnceLock<Arc<LogMetrics>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Metrics")
            .field("enabled", &self.recorder.is_some())
            .finish_non_exhaustive()
    }
}

/// The HTTP endpoint serving `/metrics`; stops when dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// The address it listens on.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Metrics {
    /// Metrics off: every handle is a no-op.
    #[must_use]
    pub fn disabled() -> Metrics {
        Metrics::default()
    }

    /// Whether anything is recorded.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.recorder.is_some()
    }

    /// Starts recording and serves `/metrics` on `address` (port 0 picks a
    /// free port; [`MetricsEndpoint::address`] tells which). Must be called
    /// inside a tokio runtime.
    ///
    /// # Errors
    /// [`ServerError::Listen`] when `address` cannot be bound,
    /// [`ServerError::Metrics`] when the exporter cannot be built.
    pub fn start(address: SocketAddr) -> Result<(Metrics, MetricsEndpoint), ServerError> {
        // The exporter binds the address itself and does not say which port
        // it got, so a port 0 is resolved here first (and any bind error
        // reported with its cause). The port is free again between this
        // probe and the exporter's bind: another process could take it in
        // that moment, and then the exporter's bind fails with a clear error.
        let probe = std::net::TcpListener::bind(address)
            .map_err(|source| ServerError::Listen { address, source })?;
        let bound = probe
            .local_addr()
            .map_err(|source| ServerError::Listen { address, source })?;
        drop(probe);

        let builder = PrometheusBuilder::new()
            .with_http_listener(bound)
            .set_buckets_for_metric(Matcher::Full(APPEND_LATENCY.to_owned()), &LATENCY_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(APPEND_REQUEST_EVENTS.to_owned()),
                    &REQUEST_EVENTS_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(ARCHIVE_UPLOAD_LATENCY.to_owned()),
                    &UPLOAD_LATENCY_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(ARCHIVE_READ_LATENCY.to_owned()),
                    &LATENCY_BUCKETS,
                )
            })
            .map_err(|error| ServerError::Metrics(error.to_string()))?;
        let (recorder, exporter) = builder
            .build()
            .map_err(|error| ServerError::Metrics(format!("cannot serve on {bound}: {error}")))?;
        describe(&recorder);
        let task = tokio::spawn(async move {
            if let Err(error) = exporter.await {
                tracing::error!(?error, "the metrics endpoint stopped");
            }
        });
        let metrics = Metrics {
            recorder: Some(Arc::new(recorder)),
            unknown: Arc::default(),
        };
        Ok((
            metrics,
            MetricsEndpoint {
                address: bound,
                task,
            },
        ))
    }

    /// The handles for one log (registered now; keep them).
    #[must_use]
    pub fn for_log(&self, log: &str) -> Arc<LogMetrics> {
        Arc::new(LogMetrics::new(self.recorder.clone(), log))
    }

    /// The handles for requests refused before their log was known.
    #[must_use]
    pub fn unknown_log(&self) -> Arc<LogMetrics> {
        Arc::clone(self.unknown.get_or_init(|| {
            // Only refusals are ever counted here: no other series.
            Arc::new(LogMetrics::new(None, UNKNOWN_LOG).with_recorder(self.recorder.clone()))
        }))
    }

    /// The archive handles for one log (registered now; keep them). The
    /// compactor and the read-through each ask; both get the same series.
    #[must_use]
    pub fn for_archive(&self, log: &str) -> Arc<ArchiveMetrics> {
        Arc::new(ArchiveMetrics::new(self.recorder.as_deref(), log))
    }

    /// Marks `log` as damaged and out of service: `trail_log_damaged{log}`
    /// = 1 (the series exists only for damaged logs, so
    /// `trail_log_damaged > 0` alerts on any).
    pub fn log_damaged(&self, log: &str) {
        if let Some(recorder) = &self.recorder {
            let log = SharedString::from_owned(log.to_owned());
            recorder
                .register_gauge(&key(LOG_DAMAGED, &log, None), &METADATA)
                .set(1.0);
        }
    }

    /// The Prometheus text exposition of everything recorded (what
    /// `/metrics` answers); empty when metrics are off.
    #[must_use]
    pub fn render(&self) -> String {
        self.recorder
            .as_ref()
            .map(|recorder| recorder.handle().render())
            .unwrap_or_default()
    }
}

fn describe(recorder: &PrometheusRecorder) {
    let counters = [
        (APPEND_REQUESTS, Unit::Count, "Append requests (a stream message counts as one), by outcome"),
        (APPEND_EVENTS, Unit::Count, "Events in append requests, by outcome: ok, duplicate (the original receipt was returned) or the request's gRPC error code"),
        (APPEND_BYTES, Unit::Bytes, "Encoded event bytes appended, duplicates not counted"),
        (LOG_GROUPS, Unit::Count, "Group commits the log's writer made (one write call each) since the server opened the log"),
        (LOG_RECORDS, Unit::Count, "Records the log's writer appended since the server opened the log"),
        (LOG_WRITTEN_BYTES, Unit::Bytes, "Frame bytes the log's writer wrote since the server opened the log"),
        (LOG_SYNCS, Unit::Count, "fdatasync/fsync calls on the log's segments since the server opened the log"),
        (LOG_SEGMENTS_STARTED, Unit::Count, "Segments the writer started since the server opened the log"),
        (LOG_SEGMENTS_PREPARED_INLINE, Unit::Count, "Segments the writer preallocated on its own thread because no prepared spare was ready (in sync mode each stalls the appends behind it)"),
        (LOG_SEGMENTS_UNCACHED, Unit::Count, "Sealed segments whose pages were dropped from the page cache ([log] cached_sealed_segments) since the server opened the log"),
        (LOG_SPIN_CATCHES, Unit::Count, "Appends the writer found while polling its queue after a small group ([log] writer_spin_us) instead of after sleeping"),
        (ARCHIVE_SEGMENTS, Unit::Count, "Segments of the log uploaded to the archive and verified there (read back) by this process"),
        (ARCHIVE_BYTES, Unit::Bytes, "Bytes stored in the archive for the segments this process uploaded (segment and sidecar objects, as stored)"),
        (ARCHIVE_FAILURES, Unit::Count, "Failed archive rounds of the log (an unreachable store, a bucket that does not continue the log); nothing local is removed, the round is retried after a backoff"),
        (ARCHIVE_READ_HITS, Unit::Count, "Archived segments a read of archived records found in the read-through cache"),
        (ARCHIVE_READ_MISSES, Unit::Count, "Archived segments a read of archived records downloaded (and verified) from the archive"),
    ];
    for (name, unit, help) in counters {
        recorder.describe_counter(name.into(), Some(unit), SharedString::const_str(help));
    }
    recorder.describe_histogram(
        APPEND_LATENCY.into(),
        Some(Unit::Seconds),
        SharedString::const_str(
            "Successful append requests: from request received to durable acknowledgement",
        ),
    );
    recorder.describe_histogram(
        APPEND_REQUEST_EVENTS.into(),
        Some(Unit::Count),
        SharedString::const_str("Events per successful append request"),
    );
    recorder.describe_histogram(
        ARCHIVE_UPLOAD_LATENCY.into(),
        Some(Unit::Seconds),
        SharedString::const_str(
            "One segment's archiving: from reading the local file to its objects and manifest read back and compared",
        ),
    );
    recorder.describe_histogram(
        ARCHIVE_READ_LATENCY.into(),
        Some(Unit::Seconds),
        SharedString::const_str(
            "One read step of archived records for Read or Subscribe, from the cache or a download",
        ),
    );
    recorder.describe_gauge(
        ARCHIVE_LOCAL_BYTES.into(),
        Some(Unit::Bytes),
        SharedString::const_str(
            "Bytes of the log's local segment files, the hot tier (sampled by the compactor)",
        ),
    );
    recorder.describe_gauge(
        ARCHIVE_ARCHIVED_BYTES.into(),
        Some(Unit::Bytes),
        SharedString::const_str(
            "Bytes the archive holds for the log per its manifest chain (sampled by the compactor)",
        ),
    );
    recorder.describe_gauge(
        QUEUE_DEPTH.into(),
        Some(Unit::Count),
        SharedString::const_str("Appends waiting in the log's queue for its writer (sampled)"),
    );
    recorder.describe_gauge(
        SEGMENTS_TO_VERIFY.into(),
        Some(Unit::Count),
        SharedString::const_str(
            "Sealed segments trusted at open (seal, footer, sidecar) that background verification re-hashes",
        ),
    );
    recorder.describe_gauge(
        SEGMENTS_VERIFIED.into(),
        Some(Unit::Count),
        SharedString::const_str(
            "Sealed segments background verification re-hashed and found sound",
        ),
    );
    recorder.describe_gauge(
        TORN_TAIL_RECORDS_CUT.into(),
        Some(Unit::Count),
        SharedString::const_str(
            "Records of a torn tail cut when the log opened: never acknowledged after a torn write, possibly acknowledged if a crash hit the last synced group",
        ),
    );
    recorder.describe_gauge(
        QUERY_INDEX_LAG.into(),
        Some(Unit::Count),
        SharedString::const_str(
            "Durable records the log's query index has not taken in yet (sampled; Query's min_lsn waits for them)",
        ),
    );
    recorder.describe_gauge(
        STATE_STORE_LAG.into(),
        Some(Unit::Count),
        SharedString::const_str(
            "Durable records the log's resource-state store has not taken in yet (sampled)",
        ),
    );
    recorder.describe_gauge(
        LOG_DAMAGED.into(),
        Some(Unit::Count),
        SharedString::const_str(
            "1 for a log out of service because its stored data is damaged (found at open or by background verification)",
        ),
    );
}

/// The `outcome` label for a gRPC code.
#[must_use]
pub fn outcome_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The number of gRPC codes (`Code` values are 0..=16).
const CODES: usize = 17;

/// One log's metric handles.
pub struct LogMetrics {
    recorder: Option<Arc<PrometheusRecorder>>,
    log: SharedString,
    requests_ok: Counter,
    events_ok: Counter,
    events_duplicate: Counter,
    bytes: Counter,
    latency: Histogram,
    request_events: Histogram,
    queue_depth: Gauge,
    segments_to_verify: Gauge,
    segments_verified: Gauge,
    torn_tail_records_cut: Gauge,
    query_index_lag: Gauge,
    state_store_lag: Gauge,
    groups: Counter,
    records: Counter,
    written_bytes: Counter,
    syncs: Counter,
    segments_started: Counter,
    segments_prepared_inline: Counter,
    segments_uncached: Counter,
    spin_catches: Counter,
    /// `(requests, events)` per error code, registered on first use: a
    /// series appears only for codes that happened.
    errors: [OnceLock<(Counter, Counter)>; CODES],
}

impl std::fmt::Debug for LogMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LogMetrics")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl LogMetrics {
    fn new(recorder: Option<Arc<PrometheusRecorder>>, log: &str) -> LogMetrics {
        let log = SharedString::from_owned(log.to_owned());
        let counter = |name: &'static str, outcome: Option<&'static str>| {
            register_counter(recorder.as_deref(), name, &log, outcome)
        };
        let requests_ok = counter(APPEND_REQUESTS, Some("ok"));
        let events_ok = counter(APPEND_EVENTS, Some("ok"));
        let events_duplicate = counter(APPEND_EVENTS, Some("duplicate"));
        let bytes = counter(APPEND_BYTES, None);
        let groups = counter(LOG_GROUPS, None);
        let records = counter(LOG_RECORDS, None);
        let written_bytes = counter(LOG_WRITTEN_BYTES, None);
        let syncs = counter(LOG_SYNCS, None);
        let segments_started = counter(LOG_SEGMENTS_STARTED, None);
        let segments_prepared_inline = counter(LOG_SEGMENTS_PREPARED_INLINE, None);
        let segments_uncached = counter(LOG_SEGMENTS_UNCACHED, None);
        let spin_catches = counter(LOG_SPIN_CATCHES, None);
        let (latency, request_events, queue_depth) = match recorder.as_deref() {
            Some(recorder) => (
                recorder.register_histogram(&key(APPEND_LATENCY, &log, None), &METADATA),
                recorder.register_histogram(&key(APPEND_REQUEST_EVENTS, &log, None), &METADATA),
                recorder.register_gauge(&key(QUEUE_DEPTH, &log, None), &METADATA),
            ),
            None => (Histogram::noop(), Histogram::noop(), Gauge::noop()),
        };
        let gauge = |name: &'static str| match recorder.as_deref() {
            Some(recorder) => recorder.register_gauge(&key(name, &log, None), &METADATA),
            None => Gauge::noop(),
        };
        let (segments_to_verify, segments_verified, torn_tail_records_cut) = (
            gauge(SEGMENTS_TO_VERIFY),
            gauge(SEGMENTS_VERIFIED),
            gauge(TORN_TAIL_RECORDS_CUT),
        );
        let (query_index_lag, state_store_lag) = (gauge(QUERY_INDEX_LAG), gauge(STATE_STORE_LAG));
        LogMetrics {
            recorder,
            log,
            requests_ok,
            events_ok,
            events_duplicate,
            bytes,
            latency,
            request_events,
            queue_depth,
            segments_to_verify,
            segments_verified,
            torn_tail_records_cut,
            query_index_lag,
            state_store_lag,
            groups,
            records,
            written_bytes,
            syncs,
            segments_started,
            segments_prepared_inline,
            segments_uncached,
            spin_catches,
            errors: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Registers later (refusal) counters with `recorder`; the handles made
    /// so far stay as they are.
    fn with_recorder(mut self, recorder: Option<Arc<PrometheusRecorder>>) -> LogMetrics {
        self.recorder = recorder;
        self
    }

    /// A successful append request: `appended` new events of `bytes` encoded
    /// bytes, `duplicates` events answered with their original receipt,
    /// acknowledged `latency` after it arrived.
    pub fn append_ok(&self, appended: u64, duplicates: u64, bytes: u64, latency: Duration) {
        self.requests_ok.increment(1);
        self.events_ok.increment(appended);
        if duplicates > 0 {
            self.events_duplicate.increment(duplicates);
        }
        self.bytes.increment(bytes);
        self.latency.record(latency.as_secs_f64());
        #[allow(clippy::cast_precision_loss)]
        self.request_events.record((appended + duplicates) as f64);
    }

    /// A refused append request carrying `events` events.
    pub fn append_failed(&self, code: Code, events: u64) {
        let index = usize::try_from(i32::from(code)).unwrap_or(0).min(CODES - 1);
        let (requests, events_counter) = self.errors[index].get_or_init(|| {
            let outcome = Some(outcome_label(code));
            (
                register_counter(
                    self.recorder.as_deref(),
                    APPEND_REQUESTS,
                    &self.log,
                    outcome,
                ),
                register_counter(self.recorder.as_deref(), APPEND_EVENTS, &self.log, outcome),
            )
        });
        requests.increment(1);
        events_counter.increment(events);
    }

    /// The derived stores' lag behind a log whose head is `head`.
    pub fn sample_derived(&self, head: u64, query_lsn: u64, state_lsn: u64) {
        #[allow(clippy::cast_precision_loss)]
        {
            self.query_index_lag
                .set(head.saturating_sub(query_lsn) as f64);
            self.state_store_lag
                .set(head.saturating_sub(state_lsn) as f64);
        }
    }

    /// Copies the log writer's counters and queue depth.
    pub fn sample(&self, log: &Log) {
        let stats = log.stats();
        self.groups.absolute(stats.groups);
        self.records.absolute(stats.records);
        self.written_bytes.absolute(stats.bytes);
        self.syncs.absolute(stats.syncs);
        self.segments_started.absolute(stats.segments_started);
        self.segments_prepared_inline
            .absolute(stats.segments_prepared_inline);
        self.segments_uncached.absolute(stats.segments_uncached);
        self.spin_catches.absolute(stats.spin_catches);
        #[allow(clippy::cast_precision_loss)]
        self.queue_depth.set(log.queue_len() as f64);
        let verification = log.background_verification();
        #[allow(clippy::cast_precision_loss)]
        {
            self.segments_to_verify
                .set(verification.segments_total as f64);
            self.segments_verified
                .set(verification.segments_verified as f64);
            self.torn_tail_records_cut.set(
                log.torn_tail_cut_at_open()
                    .map_or(0.0, |torn| torn.cut_records as f64),
            );
        }
    }
}

/// One log's archive handles: uploads (the compactor) and read-through.
pub struct ArchiveMetrics {
    uploaded_segments: Counter,
    uploaded_bytes: Counter,
    upload_latency: Histogram,
    failures: Counter,
    local_bytes: Gauge,
    archived_bytes: Gauge,
    read_hits: Counter,
    read_misses: Counter,
    read_latency: Histogram,
}

impl std::fmt::Debug for ArchiveMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ArchiveMetrics")
            .finish_non_exhaustive()
    }
}

impl ArchiveMetrics {
    fn new(recorder: Option<&PrometheusRecorder>, log: &str) -> ArchiveMetrics {
        let log = SharedString::from_owned(log.to_owned());
        let counter = |name: &'static str| register_counter(recorder, name, &log, None);
        let gauge = |name: &'static str| match recorder {
            Some(recorder) => recorder.register_gauge(&key(name, &log, None), &METADATA),
            None => Gauge::noop(),
        };
        let histogram = |name: &'static str| match recorder {
            Some(recorder) => recorder.register_histogram(&key(name, &log, None), &METADATA),
            None => Histogram::noop(),
        };
        ArchiveMetrics {
            uploaded_segments: counter(ARCHIVE_SEGMENTS),
            uploaded_bytes: counter(ARCHIVE_BYTES),
            upload_latency: histogram(ARCHIVE_UPLOAD_LATENCY),
            failures: counter(ARCHIVE_FAILURES),
            local_bytes: gauge(ARCHIVE_LOCAL_BYTES),
            archived_bytes: gauge(ARCHIVE_ARCHIVED_BYTES),
            read_hits: counter(ARCHIVE_READ_HITS),
            read_misses: counter(ARCHIVE_READ_MISSES),
            read_latency: histogram(ARCHIVE_READ_LATENCY),
        }
    }

    /// A segment uploaded and verified: `stored_bytes` in `elapsed`.
    pub fn uploaded(&self, stored_bytes: u64, elapsed: Duration) {
        self.uploaded_segments.increment(1);
        self.uploaded_bytes.increment(stored_bytes);
        self.upload_latency.record(elapsed.as_secs_f64());
    }

    /// A failed archive round.
    pub fn failed(&self) {
        self.failures.increment(1);
    }

    /// The local (hot) and archived sizes of the log now.
    pub fn sample(&self, local_bytes: u64, archived_bytes: u64) {
        #[allow(clippy::cast_precision_loss)]
        {
            self.local_bytes.set(local_bytes as f64);
            self.archived_bytes.set(archived_bytes as f64);
        }
    }

    /// A read step of archived records: `hits` segments from the cache,
    /// `misses` downloaded, in `elapsed`.
    pub fn read(&self, hits: u64, misses: u64, elapsed: Duration) {
        self.read_hits.increment(hits);
        self.read_misses.increment(misses);
        self.read_latency.record(elapsed.as_secs_f64());
    }
}

fn key(name: &'static str, log: &SharedString, outcome: Option<&'static str>) -> Key {
    let mut labels = vec![Label::new("log", log.clone())];
    if let Some(outcome) = outcome {
        labels.push(Label::from_static_parts("outcome", outcome));
    }
    Key::from_parts(name, labels)
}

fn register_counter(
    recorder: Option<&PrometheusRecorder>,
    name: &'static str,
    log: &SharedString,
    outcome: Option<&'static str>,
) -> Counter {
    match recorder {
        Some(recorder) => recorder.register_counter(&key(name, log, outcome), &METADATA),
        None => Counter::noop(),
    }
}
