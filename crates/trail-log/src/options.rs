//! Per-log options, checked once at open.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::codec::FRAME_BODY_BYTES_MAX;
use crate::error::{LogError, Result};
use crate::segment::{SEAL_RESERVE_BYTES, SEGMENT_HEADER_BYTES};
use crate::types::Durability;

/// Upper bound of a record frame's size beyond its event id and event bytes
/// (frame header, version byte, enum tags and worst-case varints).
pub const RECORD_OVERHEAD_BYTES_MAX: usize = 128;

/// Where the log reads the time for `recorded_at`.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in unix nanoseconds.
    fn now_unix_nanos(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_nanos(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
            })
    }
}

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
    /// Largest encoded event.
    pub event_bytes_max: usize,
    /// Most events in one append request.
    pub batch_events_max: usize,
    /// Longest event id, in bytes.
    pub event_id_bytes_max: usize,
    /// Check every record of every segment when the log opens (slower start,
    /// but damage anywhere is found before the log takes writes).
    pub verify_on_open: bool,
    /// In `Sync` mode, prepare the next (zero-filled) segment on a
    /// background thread, so rolling over does not stall appends. Turn off
    /// for deterministic simulation.
    pub prepare_segments_ahead: bool,
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
            event_bytes_max: 1 << 20,
            batch_events_max: 10_000,
            event_id_bytes_max: 256,
            verify_on_open: true,
            prepare_segments_ahead: true,
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
                "segment_bytes",
                format!("{} is outside 64 KiB..=4 GiB", self.segment_bytes),
            );
        }
        let usable = (self.segment_bytes - SEGMENT_HEADER_BYTES as u64 - SEAL_RESERVE_BYTES) / 2;
        if self.group_bytes_max as u64 > usable {
            return invalid(
                "group_bytes_max",
                format!("{} is above half of a segment's usable space ({usable}); raise segment_bytes or lower it", self.group_bytes_max),
            );
        }
        let record_max = self.event_bytes_max + self.event_id_bytes_max + RECORD_OVERHEAD_BYTES_MAX;
        if record_max > self.group_bytes_max || record_max > FRAME_BODY_BYTES_MAX {
            return invalid(
                "event_bytes_max",
                format!(
                    "a record of {record_max} bytes (event_bytes_max + event_id_bytes_max + {RECORD_OVERHEAD_BYTES_MAX}) must fit group_bytes_max ({}) and the frame limit ({FRAME_BODY_BYTES_MAX})",
                    self.group_bytes_max
                ),
            );
        }
        if self.event_id_bytes_max == 0 {
            return invalid("event_id_bytes_max", "must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.queue_depth) {
            return invalid(
                "queue_depth",
                format!("{} is outside 1..=1000000", self.queue_depth),
            );
        }
        if !(1..=1_000_000).contains(&self.batch_events_max) {
            return invalid(
                "batch_events_max",
                format!("{} is outside 1..=1000000", self.batch_events_max),
            );
        }
        if let Durability::Interval(interval) = self.durability {
            if interval.is_zero() || interval > Duration::from_secs(60) {
                return invalid(
                    "durability",
                    format!("interval {interval:?} is outside (0, 60s]"),
                );
            }
        }
        if self
            .segment_age_max
            .is_some_and(|age| age < Duration::from_millis(10))
        {
            return invalid("segment_age_max", "must be at least 10ms".into());
        }
        Ok(())
    }
}
