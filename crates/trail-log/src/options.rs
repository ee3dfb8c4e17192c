//! Per-log options, checked once at open.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::append::{keys, AppendLimits};
use crate::codec::{FRAME_BODY_BYTES_MAX, RECORD_OVERHEAD_BYTES_MAX};
use crate::error::{LogError, Result};
use crate::segment::{SEAL_RESERVE_BYTES, SEGMENT_HEADER_BYTES};
use crate::types::Durability;

/// Where the log reads the time: the wall clock for `recorded_at`, and a
/// monotonic clock for its timers (age-based sealing, interval syncs). A
/// test drives both with [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in unix nanoseconds.
    fn now_unix_nanos(&self) -> i64;
    /// Time since an arbitrary fixed origin; never goes backwards.
    fn monotonic(&self) -> Duration;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The origin of [`SystemClock::monotonic`].
static MONOTONIC_ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Clock for SystemClock {
    fn now_unix_nanos(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
            })
    }

    fn monotonic(&self) -> Duration {
        MONOTONIC_ORIGIN.elapsed()
    }
}

/// A clock that moves only when told to (tests). After moving it, call
/// [`crate::Log::run_timers`] so the writer looks at its timers at once.
#[derive(Debug)]
pub struct ManualClock {
    unix_nanos: AtomicI64,
    monotonic_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at the given wall time, monotonic time zero.
    #[must_use]
    pub fn new(unix_nanos: i64) -> ManualClock {
        ManualClock {
            unix_nanos: AtomicI64::new(unix_nanos),
            monotonic_nanos: AtomicU64::new(0),
        }
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.monotonic_nanos.fetch_add(nanos, Ordering::SeqCst);
        self.unix_nanos
            .fetch_add(i64::try_from(nanos).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_nanos(&self) -> i64 {
        self.unix_nanos.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.monotonic_nanos.load(Ordering::SeqCst))
    }
}

/// Decides whether a retried event is the same as the stored one, so the
/// retry gets the original receipt instead of ALREADY_EXISTS. The engine
/// does not know the event schema: the server gives it the rule, the way
/// it gives the clock.
pub trait SameContent: Send + Sync + fmt::Debug {
    /// Whether `sent` carries the same event as `stored`.
    fn same_content(&self, stored: &[u8], sent: &[u8]) -> bool;
}

/// The rule the engine uses unless told otherwise: equal bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct SameBytes;

impl SameContent for SameBytes {
    fn same_content(&self, stored: &[u8], sent: &[u8]) -> bool {
        stored == sent
    }
}

/// The most events in a group after which the writer polls its queue
/// before it sleeps (`LogOptions::writer_spin`): one or two events per
/// group means few clients sending small requests, and idle cores; larger
/// groups mean the cores are busy decoding requests, and a polling writer
/// would take time from them (64 clients: 5% of throughput when it polled
/// after every group; 4 streams of 100-event requests: 7% when it polled
/// after groups of at most two requests).
pub const SPIN_GROUP_EVENTS_MAX: usize = 2;

/// The longest `writer_spin` the options accept.
pub const WRITER_SPIN_MAX: Duration = Duration::from_millis(10);

/// How a log is written. Every client-controlled size is bounded here.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// When appends are acknowledged relative to fsync.
    pub durability: Durability,
    /// Size of a segment file (preallocated); a segment is sealed when the
    /// next write would not fit.
    pub segment_bytes: u64,
    /// Seal the active segment once it is this old (if it holds records).
    pub segment_age_max: Option<Duration>,
    /// Append requests that may wait for the writer; beyond it callers wait
    /// (`append`) or are refused (`try_append`).
    pub queue_depth: usize,
    /// Most bytes the writer puts in one write + fsync, and the most one
    /// append request may carry.
    pub group_bytes_max: usize,
    /// What one append request may carry.
    pub append: AppendLimits,
    /// Re-hash every record of every sealed segment before the log opens
    /// (start-up time grows with the log). Without it, sealed segments are
    /// trusted at open by header, seal, footer and sidecar, and re-hashed in
    /// the background when `verify_in_background` is set; the active segment
    /// is always scanned, and every read checks the chain it passes.
    pub verify_on_open: bool,
    /// Re-hash the sealed segments trusted at open on a background thread.
    pub verify_in_background: bool,
    /// Whether a retried event is the same as the stored one.
    pub same_content: Arc<dyn SameContent>,
    /// In `Sync` mode, prepare the next (zero-filled) segment on a
    /// background thread, so rolling over does not stall appends. Turn off
    /// for deterministic simulation.
    pub prepare_segments_ahead: bool,
    /// How long a roll waits for the spare the background thread is still
    /// filling before it preallocates the segment itself. The fill started
    /// before the roll needed it, so only a stuck or very slow disk gets
    /// near the default of 30 s.
    pub spare_wait: Duration,
    /// After a group of at most [`SPIN_GROUP_EVENTS_MAX`] events (a
    /// lightly loaded log), the writer polls its queue for this long
    /// before it sleeps, so the next append of a client that waits for
    /// each ack finds it awake instead of paying a thread wake-up (on a VM
    /// a trip through the host). Costs up to this much CPU per group at
    /// light load; `Duration::ZERO` (the default) turns it off
    /// (DECISIONS.md #47).
    pub writer_spin: Duration,
    /// Sealed segments whose pages stay in the page cache: once a segment
    /// is sealed, the one this many seals before it is dropped from the
    /// cache (`posix_fadvise(DONTNEED)`, on the preparer's thread before
    /// it fills the next spare), so the pages the log writes next are
    /// recycled ones rather than new memory (DECISIONS.md #48). Readers of
    /// older segments read them from the disk. `0` keeps every segment's
    /// pages (the kernel evicts them under memory pressure).
    pub cached_sealed_segments: usize,
    /// The clock `recorded_at` comes from.
    pub clock: Arc<dyn Clock>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Sync,
            segment_bytes: 64 << 20,
            segment_age_max: None,
            queue_depth: 4096,
            group_bytes_max: 4 << 20,
            append: AppendLimits::default(),
            verify_on_open: false,
            verify_in_background: true,
            same_content: Arc::new(SameBytes),
            prepare_segments_ahead: true,
            spare_wait: Duration::from_secs(30),
            // Off: it trades the tail and light-load CPU for the median
            // (DECISIONS.md #47); 300 us is the measured setting.
            writer_spin: Duration::ZERO,
            cached_sealed_segments: 4,
            clock: Arc::new(SystemClock),
        }
    }
}

impl LogOptions {
    /// Checks the options against each other.
    ///
    /// # Errors
    /// [`LogError::InvalidOption`] naming the option and the bound.
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |option: &'static str, reason: String| Err(LogError::InvalidOption { option, reason });
        if !(64 * 1024..=(4u64 << 30)).contains(&self.segment_bytes) {
            return invalid(
                "log.segment_bytes",
                format!("{} is outside 64 KiB..=4 GiB", self.segment_bytes),
            );
        }
        let usable = (self.segment_bytes - SEGMENT_HEADER_BYTES as u64 - SEAL_RESERVE_BYTES) / 2;
        if self.group_bytes_max as u64 > usable {
            return invalid(
                keys::GROUP_BYTES_MAX,
                format!("{} is above half of a segment's usable space ({usable}); raise segment_bytes or lower it", self.group_bytes_max),
            );
        }
        let append = &self.append;
        let record_max =
            append.event_bytes_max + append.event_id_bytes_max + RECORD_OVERHEAD_BYTES_MAX;
        if record_max > self.group_bytes_max || record_max > FRAME_BODY_BYTES_MAX {
            return invalid(
                keys::EVENT_BYTES_MAX,
                format!(
                    "a record of {record_max} bytes ({} + {} + {RECORD_OVERHEAD_BYTES_MAX}) must fit {} ({}) and the frame limit ({FRAME_BODY_BYTES_MAX})",
                    keys::EVENT_BYTES_MAX,
                    keys::EVENT_ID_BYTES_MAX,
                    keys::GROUP_BYTES_MAX,
                    self.group_bytes_max
                ),
            );
        }
        if append.event_id_bytes_max == 0 {
            return invalid(keys::EVENT_ID_BYTES_MAX, "must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.queue_depth) {
            return invalid(
                "log.queue_depth",
                format!("{} is outside 1..=1000000", self.queue_depth),
            );
        }
        if !(1..=1_000_000).contains(&append.events_per_request_max) {
            return invalid(
                keys::EVENTS_PER_REQUEST_MAX,
                format!("{} is outside 1..=1000000", append.events_per_request_max),
            );
        }
        if self.writer_spin > WRITER_SPIN_MAX {
            return invalid(
                "log.writer_spin_us",
                format!(
                    "{} us is above {} us",
                    self.writer_spin.as_micros(),
                    WRITER_SPIN_MAX.as_micros()
                ),
            );
        }
        if let Durability::Interval(interval) = self.durability {
            if interval.is_zero() || interval > Duration::from_secs(60) {
                return invalid(
                    "log.fsync_interval_ms",
                    format!("interval {interval:?} is outside (0, 60s]"),
                );
            }
        }
        if self
            .segment_age_max
            .is_some_and(|age| age < Duration::from_millis(10))
        {
            return invalid("log.segment_age_max_secs", "must be at least 10ms".into());
        }
        Ok(())
    }
}
