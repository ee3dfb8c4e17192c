//! The server's configuration: one TOML file, every key optional, overridable
//! by flags and environment variables (see `traild --help`). The embedded
//! defaults run a working loopback server (DESIGN.md, "Operations").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trail_index::{DerivedOptions, Pace, SnapshotPolicy};
use trail_log::codec::RECORD_OVERHEAD_BYTES_MAX;
use trail_log::{AppendLimits, Durability, LogOptions};

use crate::limits::Limits;
use crate::ServerError;

/// Everything `traild` needs to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the logs live: one directory per log.
    pub data_dir: PathBuf,
    /// The gRPC listen address. Beyond loopback only with `insecure`.
    pub listen: SocketAddr,
    /// Where Prometheus scrapes `/metrics`; `None` (in TOML `"off"` or
    /// `""`) turns metrics off. Beyond loopback only with `insecure`.
    #[serde(with = "metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Allow a non-loopback listen address without TLS and tokens.
    pub insecure: bool,
    /// How long graceful shutdown waits for in-flight requests, milliseconds.
    pub shutdown_grace_ms: u64,
    /// The log engine's settings.
    pub log: LogConfig,
    /// Bounds on everything a client controls.
    pub limits: Limits,
    /// The derived stores that follow each log (query index, resource state).
    pub derived: DerivedConfig,
    /// Where and how the server logs.
    pub logging: LoggingConfig,
    /// Tiered storage: the compactor that archives sealed segments.
    pub archive: ArchiveConfig,
}

/// The compactor (`compactor.rs`): archives each log's sealed segments to
/// an object store, then drops local copies after `local_retention_secs`.
/// Off by default (`url = ""`): an archive on the same disk as the data dir
/// is no second copy, and turning archiving on lets segments leave the
/// local disk, which an operator should choose knowingly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// `file:///absolute/path` or `s3://bucket/prefix`; empty turns
    /// archiving off.
    pub url: String,
    /// S3 endpoint (empty: AWS, or `AWS_ENDPOINT_URL`); plain `http://`
    /// only to a loopback host.
    pub endpoint: String,
    /// S3 region (empty: `AWS_REGION`, else `us-east-1`).
    pub region: String,
    /// S3 access key id (empty: `AWS_ACCESS_KEY_ID`; prefer the variable).
    pub access_key_id: String,
    /// S3 secret key (empty: `AWS_SECRET_ACCESS_KEY`; prefer the variable).
    pub secret_access_key: String,
    /// A sealed segment is archived once it is this old, seconds.
    pub archive_after_secs: u64,
    /// ...or at once while a log's local segment files exceed this many bytes.
    pub hot_bytes_max: u64,
    /// An archived segment's local file is removed this long after its
    /// upload was verified, seconds.
    pub local_retention_secs: u64,
    /// zstd level of the objects, 1..=19; 0 stores them uncompressed.
    pub zstd_level: i32,
    /// How often the compactor looks for due segments, milliseconds.
    pub check_interval_ms: u64,
    /// First delay after a failed round, milliseconds (doubles per failure).
    pub backoff_initial_ms: u64,
    /// Longest delay between failed rounds, milliseconds.
    pub backoff_max_ms: u64,
    /// Bytes of archived segments one log's read-through cache keeps
    /// (reads of LSNs no longer local); at most
    /// `trail_server::service::ARCHIVE_READ_LOGS_MAX` logs keep one at a
    /// time. A segment larger than this is read once and not kept.
    pub read_cache_bytes_max: u64,
    /// Objects (compressed segments, sidecars) larger than this many bytes
    /// go up as an S3 multipart upload; at least 5 MiB.
    pub multipart_threshold_bytes: u64,
    /// Bytes of each part of a multipart upload but the last, 5 MiB..=5 GiB
    /// (S3's bounds).
    pub multipart_part_bytes: u64,
    /// S3 Object Lock (WORM) on every archived object: `""` (off),
    /// `"governance"` or `"compliance"`. `s3://` targets only, whose bucket
    /// was created with Object Lock enabled; `traild` probes at start
    /// whether the store enforces it (`trail archive status`).
    pub lock_mode: String,
    /// How long each archived object stays locked after its upload, days
    /// (1..=36500; required with a lock mode).
    pub lock_retention_days: u64,
    /// The nice value (0..=19) of the thread that checks and compresses a
    /// segment before its upload: appends go first when the cores are busy.
    pub nice: i32,
}

/// The longest Object Lock retention taken, days (100 years, S3's bound
/// for default retention).
pub const LOCK_RETENTION_DAYS_MAX: u64 = 36_500;

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            url: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            archive_after_secs: 3600,
            hot_bytes_max: 16 << 30,
            local_retention_secs: 7 * 24 * 3600,
            zstd_level: trail_archive::ZSTD_LEVEL_DEFAULT,
            check_interval_ms: 5000,
            backoff_initial_ms: 1000,
            backoff_max_ms: 300_000,
            read_cache_bytes_max: 256 << 20,
            multipart_threshold_bytes: trail_archive::Multipart::default().threshold_bytes,
            multipart_part_bytes: trail_archive::Multipart::default().part_bytes,
            lock_mode: String::new(),
            lock_retention_days: 0,
            nice: trail_archive::ARCHIVE_NICE_DEFAULT,
        }
    }
}

impl ArchiveConfig {
    /// Whether archiving is on.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// What the archiver of each log runs with.
    #[must_use]
    pub fn archiver_config(&self) -> trail_archive::ArchiverConfig {
        let encoding = if self.zstd_level == 0 {
            trail_archive::Encoding {
                compression: trail_archive::Compression::None,
                zstd_level: 0,
            }
        } else {
            trail_archive::Encoding {
                compression: trail_archive::Compression::Zstd,
                zstd_level: self.zstd_level,
            }
        };
        trail_archive::ArchiverConfig {
            encoding,
            archive_after: Duration::from_secs(self.archive_after_secs),
            hot_bytes_max: self.hot_bytes_max,
            local_retention: Duration::from_secs(self.local_retention_secs),
            nice: self.nice,
        }
    }

    /// The retention every archived object gets; `None` with lock mode
    /// off (or an unknown mode, which [`Config::validate`] refuses).
    #[must_use]
    pub fn lock_policy(&self) -> Option<trail_archive::LockPolicy> {
        let mode = trail_archive::LockMode::parse(&self.lock_mode)?;
        Some(trail_archive::LockPolicy {
            mode,
            retention: Duration::from_secs(self.lock_retention_days.saturating_mul(24 * 3600)),
        })
    }

    fn validate_lock(&self) -> Result<(), ServerError> {
        if self.lock_mode.is_empty() {
            if self.lock_retention_days != 0 {
                return Err(ServerError::Config(format!(
                    "archive.lock_retention_days = {} but archive.lock_mode is off: set lock_mode = \"governance\" or \"compliance\", or remove lock_retention_days",
                    self.lock_retention_days
                )));
            }
            return Ok(());
        }
        if !matches!(self.lock_mode.as_str(), "governance" | "compliance") {
            return Err(ServerError::Config(format!(
                "archive.lock_mode = {:?}: use \"governance\", \"compliance\", or \"\" for off",
                self.lock_mode
            )));
        }
        if !(1..=LOCK_RETENTION_DAYS_MAX).contains(&self.lock_retention_days) {
            return Err(ServerError::Config(format!(
                "archive.lock_retention_days = {} is outside 1..={LOCK_RETENTION_DAYS_MAX}: a lock mode needs a retention of at least one day",
                self.lock_retention_days
            )));
        }
        if !self.enabled() {
            return Err(ServerError::Config(
                "archive.lock_mode is set but archiving is off: set archive.url to an s3:// target"
                    .to_owned(),
            ));
        }
        if !self.url.starts_with("s3://") {
            return Err(ServerError::Config(format!(
                "archive.lock_mode = {:?} with archive.url = {:?}: file targets cannot enforce Object Lock; use an s3:// bucket created with Object Lock enabled",
                self.lock_mode, self.url
            )));
        }
        Ok(())
    }

    /// When objects go up in parts.
    #[must_use]
    pub fn multipart(&self) -> trail_archive::Multipart {
        trail_archive::Multipart {
            threshold_bytes: self.multipart_threshold_bytes,
            part_bytes: self.multipart_part_bytes,
        }
    }

    /// The target settings.
    #[must_use]
    pub fn target_config(&self) -> trail_archive::TargetConfig {
        trail_archive::TargetConfig {
            url: self.url.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        }
    }

    fn validate(&self) -> Result<(), ServerError> {
        if !(0..=19).contains(&self.nice) {
            return Err(ServerError::Config(format!(
                "archive.nice = {} is outside 0..=19 (the archive's thread may only lower its priority)",
                self.nice
            )));
        }
        if !(0..=19).contains(&self.zstd_level) {
            return Err(ServerError::Config(format!(
                "archive.zstd_level = {} is outside 0..=19 (0 turns compression off)",
                self.zstd_level
            )));
        }
        if self.check_interval_ms < 100 {
            return Err(ServerError::Config(
                "archive.check_interval_ms must be at least 100".to_owned(),
            ));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return Err(ServerError::Config(format!(
                "archive.backoff_initial_ms ({}) must be at least 1 and at most archive.backoff_max_ms ({})",
                self.backoff_initial_ms, self.backoff_max_ms
            )));
        }
        if self.multipart_part_bytes < trail_archive::MULTIPART_PART_BYTES_MIN
            || self.multipart_part_bytes > trail_archive::MULTIPART_PART_BYTES_MAX
        {
            return Err(ServerError::Config(format!(
                "archive.multipart_part_bytes = {} is outside {}..={} (S3 parts are 5 MiB to 5 GiB, all but the last)",
                self.multipart_part_bytes,
                trail_archive::MULTIPART_PART_BYTES_MIN,
                trail_archive::MULTIPART_PART_BYTES_MAX
            )));
        }
        if self.multipart_threshold_bytes < trail_archive::MULTIPART_PART_BYTES_MIN {
            return Err(ServerError::Config(format!(
                "archive.multipart_threshold_bytes = {} is below {} (S3's smallest part)",
                self.multipart_threshold_bytes,
                trail_archive::MULTIPART_PART_BYTES_MIN
            )));
        }
        if self.enabled() && !(self.url.starts_with("file://") || self.url.starts_with("s3://")) {
            return Err(ServerError::Config(format!(
                "archive.url = {:?}: use file:///absolute/path or s3://bucket/prefix, or \"\" for off",
                self.url
            )));
        }
        self.validate_lock()
    }
}

/// The derived stores that follow each log: the query index and the
/// resource-state store (see `trail_index`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DerivedConfig {
    /// Keep them at all (off: Query, GetState and History are refused).
    pub enabled: bool,
    /// The longest time records taken in stay uncommitted (invisible to
    /// Query), milliseconds: what the index's lag is at least, under load.
    pub commit_interval_ms: u64,
    /// Records a store reads from the log per step.
    pub batch_records: usize,
    /// A state snapshot after this many records (0: not by count).
    pub snapshot_every_records: u64,
    /// A state snapshot after this long, if records came in, seconds
    /// (0: not by time).
    pub snapshot_every_secs: u64,
    /// Snapshots kept per log; older ones are removed.
    pub snapshots_kept: usize,
    /// The nice value (0..=19) of the stores' threads: they take the cores
    /// after appends when both are busy, and catch up in the gaps.
    pub nice: i32,
    /// Whether the stores' threads run in the idle scheduling class (Linux
    /// SCHED_IDLE): a core only when appends leave one free.
    pub idle: bool,
}

impl Default for DerivedConfig {
    fn default() -> Self {
        let options = DerivedOptions::default();
        DerivedConfig {
            enabled: true,
            commit_interval_ms: u64::try_from(options.pace.commit_interval.as_millis())
                .unwrap_or(u64::MAX),
            batch_records: options.pace.batch_records,
            snapshot_every_records: options.snapshots.every_records,
            snapshot_every_secs: options.snapshots.every.as_secs(),
            snapshots_kept: options.snapshots.keep,
            nice: options.nice,
            idle: options.idle,
        }
    }
}

impl DerivedConfig {
    /// The options the derived stores run with; `None` when turned off.
    #[must_use]
    pub fn options(&self) -> Option<DerivedOptions> {
        let defaults = DerivedOptions::default();
        self.enabled.then(|| DerivedOptions {
            pace: Pace {
                batch_records: self.batch_records,
                commit_interval: Duration::from_millis(self.commit_interval_ms),
                ..defaults.pace
            },
            snapshots: SnapshotPolicy {
                every_records: self.snapshot_every_records,
                every: Duration::from_secs(self.snapshot_every_secs),
                keep: self.snapshots_kept,
            },
            nice: self.nice,
            idle: self.idle,
        })
    }

    fn validate(&self) -> Result<(), ServerError> {
        if !(0..=19).contains(&self.nice) {
            return Err(ServerError::Config(format!(
                "derived.nice = {} is outside 0..=19 (a store's threads may only lower their priority)",
                self.nice
            )));
        }
        for (name, value) in [
            ("commit_interval_ms", self.commit_interval_ms),
            ("batch_records", self.batch_records as u64),
            ("snapshots_kept", self.snapshots_kept as u64),
        ] {
            if value == 0 {
                return Err(ServerError::Config(format!(
                    "derived.{name} must be at least 1"
                )));
            }
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./trail-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            insecure: false,
            shutdown_grace_ms: 30_000,
            log: LogConfig::default(),
            limits: Limits::default(),
            derived: DerivedConfig::default(),
            logging: LoggingConfig::default(),
            archive: ArchiveConfig::default(),
        }
    }
}

/// Parses a `metrics_listen` value: an address, or `off` / empty for none.
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_metrics_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|error| {
        format!("{text:?} is not an address such as 127.0.0.1:9464, or \"off\": {error}")
    })
}

/// `metrics_listen` in TOML: a string, `"off"` for none (TOML has no null).
mod metrics_listen {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(
        value: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(address) => serializer.collect_str(address),
            None => serializer.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_metrics_listen(&text).map_err(serde::de::Error::custom)
    }
}

/// When an append is acknowledged relative to fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Acknowledge after fdatasync (the default): nothing acknowledged is lost.
    Sync,
    /// Acknowledge after write; fdatasync every `fsync_interval_ms`.
    Interval,
    /// Never fsync: tests and benchmarks only.
    None,
}

/// The log engine's settings (see `trail_log::LogOptions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// When appends are acknowledged.
    pub durability: DurabilityMode,
    /// With `durability = "interval"`: the longest time between fsyncs.
    pub fsync_interval_ms: u64,
    /// A segment is sealed when it reaches this size.
    pub segment_bytes: u64,
    /// A segment is sealed when it is this old (0 = never by age), seconds.
    pub segment_age_max_secs: u64,
    /// Appends waiting per log before callers wait (backpressure).
    pub queue_depth: usize,
    /// The most bytes one group commit writes.
    pub group_bytes_max: usize,
    /// After a group of one or two events, how long the writer polls for
    /// the next append before it sleeps, microseconds (0, the default:
    /// never; at most 10,000).
    pub writer_spin_us: u64,
    /// Sealed segments whose pages stay in the page cache; older ones are
    /// dropped from it once sealed, so the log's writes reuse freed pages
    /// (0: keep them all).
    pub cached_sealed_segments: usize,
    /// Re-hash every record of every sealed segment before a log opens
    /// (start-up time then grows with the log).
    pub verify_on_open: bool,
    /// Re-hash the sealed segments trusted at open on a background thread
    /// (a log found damaged there is taken out of service).
    pub verify_in_background: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        let options = LogOptions::default();
        LogConfig {
            durability: DurabilityMode::Sync,
            fsync_interval_ms: 10,
            segment_bytes: options.segment_bytes,
            segment_age_max_secs: options.segment_age_max.map_or(0, |age| age.as_secs()),
            queue_depth: options.queue_depth,
            group_bytes_max: options.group_bytes_max,
            writer_spin_us: u64::try_from(options.writer_spin.as_micros()).unwrap_or(u64::MAX),
            cached_sealed_segments: options.cached_sealed_segments,
            verify_on_open: options.verify_on_open,
            verify_in_background: options.verify_in_background,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where and how the server logs (via `tracing`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Text or JSON lines on stderr.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `trail_server=debug`; `RUST_LOG`
    /// overrides it.
    pub filter: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}

impl Config {
    /// Reads a TOML file; keys it does not set keep their defaults.
    ///
    /// # Errors
    /// [`ServerError::Config`] when the file cannot be read or parsed.
    pub fn from_file(path: &Path) -> Result<Config, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ServerError::Config(format!("cannot read {}: {error}", path.display()))
        })?;
        Config::from_toml(&text).map_err(|error| match error {
            ServerError::Config(message) => {
                ServerError::Config(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the bad key.
    pub fn from_toml(text: &str) -> Result<Config, ServerError> {
        toml::from_str(text).map_err(|error| ServerError::Config(error.to_string()))
    }

    /// The configuration as TOML (what `traild --print-config` prints).
    ///
    /// # Errors
    /// [`ServerError::Config`] if serialization fails (a bug).
    pub fn to_toml(&self) -> Result<String, ServerError> {
        toml::to_string_pretty(self).map_err(|error| ServerError::Config(error.to_string()))
    }

    /// Rejects settings the server cannot run with, before anything starts.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the setting and why.
    pub fn validate(&self) -> Result<(), ServerError> {
        if !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ServerError::Config(format!(
                "listen = {} is not a loopback address and this server has no TLS or tokens yet; \
                 listen on 127.0.0.1 or pass --insecure",
                self.listen
            )));
        }
        if let Some(metrics) = self.metrics_listen {
            if !metrics.ip().is_loopback() && !self.insecure {
                return Err(ServerError::Config(format!(
                    "metrics_listen = {metrics} is not a loopback address; \
                     listen on 127.0.0.1, turn metrics off with \"off\", or pass --insecure"
                )));
            }
        }
        if self.log.durability == DurabilityMode::Interval && self.log.fsync_interval_ms == 0 {
            return Err(ServerError::Config(
                "log.fsync_interval_ms must be at least 1 with durability = \"interval\""
                    .to_owned(),
            ));
        }
        self.limits.validate()?;
        self.derived.validate()?;
        self.archive.validate()?;
        self.request_fits_a_group()?;
        self.log_options()
            .validate()
            .map_err(|error| ServerError::Config(format!("log settings: {error}")))?;
        Ok(())
    }

    /// The engine refuses an append whose records could exceed one group
    /// commit (`log.group_bytes_max`): each event's record is at most its
    /// encoding plus its id plus `RECORD_OVERHEAD_BYTES_MAX`. A request
    /// that passed `limits.request_bytes_max` must never meet that second,
    /// different refusal, so the largest request's records must fit.
    fn request_fits_a_group(&self) -> Result<(), ServerError> {
        let limits = &self.limits;
        let records_max = limits
            .events_per_request_max
            .saturating_mul(
                limits
                    .event_id_bytes_max
                    .saturating_add(RECORD_OVERHEAD_BYTES_MAX),
            )
            .saturating_add(limits.request_bytes_max);
        if records_max > self.log.group_bytes_max {
            return Err(ServerError::Config(format!(
                "limits.request_bytes_max ({}) + limits.events_per_request_max ({}) x \
                 (limits.event_id_bytes_max ({}) + {RECORD_OVERHEAD_BYTES_MAX} bytes of record overhead) \
                 = {records_max} bytes is larger than log.group_bytes_max ({}); \
                 lower limits.request_bytes_max or raise log.group_bytes_max",
                limits.request_bytes_max,
                limits.events_per_request_max,
                limits.event_id_bytes_max,
                self.log.group_bytes_max
            )));
        }
        Ok(())
    }

    /// The log engine's options this configuration asks for.
    #[must_use]
    pub fn log_options(&self) -> LogOptions {
        let durability = match self.log.durability {
            DurabilityMode::Sync => Durability::Sync,
            DurabilityMode::Interval => {
                Durability::Interval(Duration::from_millis(self.log.fsync_interval_ms))
            }
            DurabilityMode::None => Durability::None,
        };
        // The engine enforces the same limits the server checks first, so a
        // bug in validation cannot store an oversized event.
        LogOptions {
            durability,
            segment_bytes: self.log.segment_bytes,
            segment_age_max: (self.log.segment_age_max_secs > 0)
                .then(|| Duration::from_secs(self.log.segment_age_max_secs)),
            queue_depth: self.log.queue_depth,
            group_bytes_max: self.log.group_bytes_max,
            writer_spin: Duration::from_micros(self.log.writer_spin_us),
            cached_sealed_segments: self.log.cached_sealed_segments,
            verify_on_open: self.log.verify_on_open,
            verify_in_background: self.log.verify_in_background,
            append: AppendLimits {
                events_per_request_max: self.limits.events_per_request_max,
                event_bytes_max: self.limits.event_bytes_max,
                event_id_bytes_max: self.limits.event_id_bytes_max,
            },
            same_content: Arc::new(crate::content::ProtoEventContent),
            ..LogOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() -> Result<(), ServerError> {
        let config = Config::default();
        let text = config.to_toml()?;
        assert_eq!(Config::from_toml(&text)?, config);
        Ok(())
    }

    #[test]
    fn partial_file_keeps_defaults() -> Result<(), ServerError> {
        let config =
            Config::from_toml("listen = \"127.0.0.1:7000\"\n[log]\ndurability = \"none\"\n")?;
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.log.durability, DurabilityMode::None);
        assert_eq!(config.data_dir, PathBuf::from("./trail-data"));
        Ok(())
    }

    #[test]
    fn unknown_key_is_refused() {
        let error = Config::from_toml("listen_addr = \"127.0.0.1:7000\"\n");
        assert!(
            matches!(error, Err(ServerError::Config(message)) if message.contains("listen_addr"))
        );
    }

    #[test]
    fn multipart_settings_outside_s3_bounds_are_refused_by_name() {
        for (threshold, part, key) in [
            (8 << 20, (5 << 20) - 1, "archive.multipart_part_bytes"),
            (8 << 20, (5 << 30) + 1, "archive.multipart_part_bytes"),
            ((5 << 20) - 1, 8 << 20, "archive.multipart_threshold_bytes"),
        ] {
            let mut config = Config::default();
            config.archive.multipart_threshold_bytes = threshold;
            config.archive.multipart_part_bytes = part;
            let message = match config.validate() {
                Err(ServerError::Config(message)) => message,
                other => panic!("{other:?}"),
            };
            assert!(message.contains(key), "{message}");
        }
        let mut config = Config::default();
        config.archive.multipart_threshold_bytes = 5 << 20;
        config.archive.multipart_part_bytes = 5 << 20;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_writer_spin_is_bounded_and_reaches_the_log() {
        let mut config = Config::default();
        config.log.writer_spin_us = 10_001;
        let message = match config.validate() {
            Err(ServerError::Config(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(message.contains("log.writer_spin_us"), "{message}");
        config.log.writer_spin_us = 300;
        assert!(config.validate().is_ok());
        assert_eq!(config.log_options().writer_spin, Duration::from_micros(300));
        assert_eq!(Config::default().log_options().writer_spin, Duration::ZERO);
        config.log.cached_sealed_segments = 9;
        assert_eq!(config.log_options().cached_sealed_segments, 9);
        assert_eq!(Config::default().log_options().cached_sealed_segments, 4);
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn nice_values_are_bounded_and_reach_the_threads() -> Result<(), ServerError> {
        for nice in [-1, 20] {
            let mut config = Config::default();
            config.derived.nice = nice;
            let message = match config.validate() {
                Err(ServerError::Config(message)) => message,
                other => panic!("{other:?}"),
            };
            assert!(message.contains("derived.nice"), "{message}");
            let mut config = Config::default();
            config.archive.nice = nice;
            let message = match config.validate() {
                Err(ServerError::Config(message)) => message,
                other => panic!("{other:?}"),
            };
            assert!(message.contains("archive.nice"), "{message}");
        }
        assert_eq!(
            Config::from_toml("[archive]\nnice = 3\n")?
                .archive
                .archiver_config()
                .nice,
            3
        );
        let config = Config::from_toml("[derived]\nnice = 0\n")?;
        assert_eq!(
            config.derived.options().map(|options| options.nice),
            Some(0)
        );
        assert_eq!(
            Config::default()
                .derived
                .options()
                .map(|options| options.nice),
            Some(trail_index::DERIVED_NICE_DEFAULT)
        );
        let config = Config::from_toml("[derived]\nidle = false\n")?;
        assert_eq!(
            config.derived.options().map(|options| options.idle),
            Some(false)
        );
        assert_eq!(
            Config::default()
                .derived
                .options()
                .map(|options| options.idle),
            Some(trail_index::DERIVED_IDLE_DEFAULT)
        );
        Ok(())
    }

    #[test]
    fn limits_that_depend_on_each_other_are_compared() {
        let mut config = Config::default();
        config.limits.request_bytes_max = 4 << 20;
        let message = match config.validate() {
            Err(ServerError::Config(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(
            message.contains("limits.request_bytes_max") && message.contains("log.group_bytes_max"),
            "{message}"
        );
        config.log.group_bytes_max = 8 << 20;
        assert!(config.validate().is_ok());

        let mut config = Config::default();
        config.limits.payload_bytes_max = config.limits.event_bytes_max + 1;
        let message = match config.validate() {
            Err(ServerError::Config(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(
            message.contains("limits.payload_bytes_max")
                && message.contains("limits.event_bytes_max"),
            "{message}"
        );

        let mut config = Config::default();
        config.limits.event_bytes_max = config.limits.request_bytes_max + 1;
        let message = match config.validate() {
            Err(ServerError::Config(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(
            message.contains("limits.event_bytes_max")
                && message.contains("limits.request_bytes_max"),
            "{message}"
        );
    }

    #[test]
    fn archive_settings_are_checked() {
        let with = |edit: &dyn Fn(&mut ArchiveConfig)| {
            let mut config = Config::default();
            edit(&mut config.archive);
            config.validate()
        };
        assert!(
            !Config::default().archive.enabled(),
            "archiving is off by default"
        );
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|archive| archive.url = "s3://bucket/prefix".into()).is_ok());
        assert!(with(&|archive| archive.url = "ftp://host/x".into()).is_err());
        assert!(with(&|archive| archive.zstd_level = 20).is_err());
        assert!(with(&|archive| archive.check_interval_ms = 10).is_err());
        assert!(with(&|archive| archive.backoff_initial_ms = 0).is_err());
        assert!(with(&|archive| archive.backoff_initial_ms = archive.backoff_max_ms + 1).is_err());
        // Object Lock: a known mode, a retention, an s3:// target.
        let locked = |mode: &str, days: u64, url: &str| {
            with(&|archive| {
                archive.url = url.into();
                archive.lock_mode = mode.into();
                archive.lock_retention_days = days;
            })
        };
        assert!(locked("governance", 1, "s3://bucket/prefix").is_ok());
        assert!(locked("compliance", 3650, "s3://bucket/prefix").is_ok());
        assert!(locked("", 0, "file:///var/trail/archive").is_ok());
        let refused = |result: Result<(), ServerError>, part: &str| match result {
            Err(ServerError::Config(message)) => {
                assert!(message.contains(part), "{message} names {part}");
            }
            other => panic!("expected a config error naming {part}, got {other:?}"),
        };
        refused(
            locked("governance", 1, "file:///var/trail/archive"),
            "file targets cannot enforce Object Lock",
        );
        refused(
            locked("governance", 0, "s3://bucket/prefix"),
            "archive.lock_retention_days",
        );
        refused(
            locked(
                "governance",
                LOCK_RETENTION_DAYS_MAX + 1,
                "s3://bucket/prefix",
            ),
            "archive.lock_retention_days",
        );
        refused(locked("worm", 1, "s3://bucket/prefix"), "archive.lock_mode");
        refused(
            locked("GOVERNANCE", 1, "s3://bucket/prefix"),
            "archive.lock_mode",
        );
        refused(locked("governance", 1, ""), "archiving is off");
        refused(locked("", 7, "s3://bucket/prefix"), "lock_mode is off");
        let policy = ArchiveConfig {
            url: "s3://bucket/prefix".into(),
            lock_mode: "compliance".into(),
            lock_retention_days: 2,
            ..ArchiveConfig::default()
        }
        .lock_policy();
        assert_eq!(
            policy,
            Some(trail_archive::LockPolicy {
                mode: trail_archive::LockMode::Compliance,
                retention: Duration::from_secs(2 * 24 * 3600),
            })
        );
        assert_eq!(ArchiveConfig::default().lock_policy(), None);
        let parsed = Config::from_toml(
            "[archive]\nurl = \"s3://b/p\"\nlock_mode = \"governance\"\nlock_retention_days = 30\n",
        )
        .expect("parses");
        assert_eq!(parsed.archive.lock_retention_days, 30);
        assert!(parsed.validate().is_ok());
        let off = Config {
            archive: ArchiveConfig {
                zstd_level: 0,
                ..ArchiveConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(
            off.archive.archiver_config().encoding.compression,
            trail_archive::Compression::None
        );
    }

    #[test]
    fn non_loopback_needs_insecure() {
        let mut config = Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            ..Config::default()
        };
        assert!(
            matches!(config.validate(), Err(ServerError::Config(message)) if message.contains("--insecure"))
        );
        config.insecure = true;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn metrics_listen_parses_turns_off_and_needs_loopback() -> Result<(), ServerError> {
        assert_eq!(
            Config::default().metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        for off in ["metrics_listen = \"off\"\n", "metrics_listen = \"\"\n"] {
            let config = Config::from_toml(off)?;
            assert_eq!(config.metrics_listen, None);
            assert_eq!(Config::from_toml(&config.to_toml()?)?, config);
        }
        let config = Config::from_toml("metrics_listen = \"127.0.0.1:9999\"\n")?;
        assert_eq!(
            config.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9999)))
        );
        assert!(matches!(
            Config::from_toml("metrics_listen = \"nine\"\n"),
            Err(ServerError::Config(message)) if message.contains("metrics_listen") || message.contains("off")
        ));
        let mut config = Config {
            metrics_listen: Some(SocketAddr::from(([0, 0, 0, 0], 9464))),
            ..Config::default()
        };
        assert!(
            matches!(config.validate(), Err(ServerError::Config(message)) if message.contains("metrics_listen"))
        );
        config.insecure = true;
        assert!(config.validate().is_ok());
        Ok(())
    }
}
