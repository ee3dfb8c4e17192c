//! The compactor: a background task that archives every log's sealed
//! segments (through `trail_archive::Archiver`, one per log) and drops
//! local copies after the retention delay. It runs beside the server and
//! shares nothing with the append path but the engine's catalog reads, so
//! appends never wait for it; a failed round (an object-store outage)
//! deletes nothing and is retried per log with exponential backoff.
//! With `[archive] lock_mode` set, it first probes whether the target
//! enforces S3 Object Lock (`trail_archive::lock::probe`) and every archived
//! object is locked before it counts as archived.
//! After each successful round of a log it archives the log's state
//! snapshots whose watermark's segment is archived (once each).
//! `Admin.ArchiveNow`, `Admin.ArchiveStatus` and `Admin.ArchiveHold` reach
//! it through [`Compactor`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use trail_archive::check::error_chain;

use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use trail_archive::{
    ArchiveError, ArchiveStatus, ArchiveTarget, Archiver, ArchiverConfig, Backoff, HoldDone,
    LockProbe, SnapshotArchiver,
};
use trail_log::{LogName, Lsn, Store};

use crate::config::ArchiveConfig;
use crate::metrics::{ArchiveMetrics, Metrics};
use crate::ServerError;

/// Most logs the compactor tracks; past it, new logs are not archived (and
/// a warning says so). Every log costs one archiver's small state.
pub const LOGS_MAX: usize = 4096;

/// One log's archiver and when it may try again.
struct Entry {
    archiver: Archiver,
    /// The log's state snapshots, archived once their watermark's segment
    /// is (`trail_archive::snapshots`).
    snapshots: SnapshotArchiver,
    backoff: Backoff,
    next_attempt: Instant,
    metrics: Arc<ArchiveMetrics>,
}

impl Entry {
    /// Runs one archiver step and records what it did in the metrics.
    async fn step(&mut self, force: bool) -> Result<u64, ArchiveError> {
        let mut outcome = self.archiver.step(force).await;
        if let Ok(segments) = outcome {
            let archiver = &self.archiver;
            let holder = |lsn| archiver.archived_holder(lsn).cloned();
            outcome = self.snapshots.step(&holder).await.map(|_| segments);
        }
        for upload in self.archiver.take_uploads() {
            self.metrics.uploaded(upload.stored_bytes, upload.elapsed);
        }
        if outcome.is_err() {
            self.metrics.failed();
        }
        self.sample();
        outcome
    }

    fn sample(&self) {
        let status = self.archiver.status();
        self.metrics
            .sample(status.local_bytes, status.archived_bytes);
    }
}

/// The running compactor, shared with the Admin service.
#[derive(Clone)]
pub struct Compactor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    target: ArchiveTarget,
    config: ArchiverConfig,
    check_interval: Duration,
    backoff: Backoff,
    metrics: Metrics,
    /// Per log, behind its own lock: a round and an `ArchiveNow` of the
    /// same log never run at once; different logs never wait for each other.
    logs: Mutex<BTreeMap<LogName, Arc<Mutex<Entry>>>>,
    /// Logs that failed to open (damaged, served out of service): not
    /// opened again every round. A restart tries them again.
    unopenable: Mutex<BTreeSet<LogName>>,
    /// What the Object Lock probe found, and when a failed probe is tried
    /// again (one probe per target, not per log).
    probe: std::sync::Mutex<(LockProbe, Instant)>,
}

/// How long after a probe that could not finish (the store unreachable)
/// the compactor probes again.
pub const PROBE_RETRY: Duration = Duration::from_secs(60);

impl Compactor {
    /// The compactor `config` describes, recording into `metrics`; `None`
    /// when archiving is off.
    ///
    /// # Errors
    /// [`ServerError::Config`] when the target cannot be opened.
    pub fn new(
        config: &ArchiveConfig,
        store: Arc<Store>,
        metrics: Metrics,
    ) -> Result<Option<Compactor>, ServerError> {
        if !config.enabled() {
            return Ok(None);
        }
        let target = ArchiveTarget::open(&config.target_config())
            .map_err(|error| ServerError::Config(format!("archive.url: {error}")))?
            .with_multipart(config.multipart())
            .map_err(|error| ServerError::Config(format!("archive.multipart_*: {error}")))?
            .with_lock_policy(config.lock_policy())
            .map_err(|error| ServerError::Config(format!("archive.lock_mode: {error}")))?;
        let probe = if config.lock_policy().is_some() {
            LockProbe::Pending
        } else {
            LockProbe::Off
        };
        Ok(Some(Compactor {
            inner: Arc::new(Inner {
                store,
                target,
                config: config.archiver_config(),
                check_interval: Duration::from_millis(config.check_interval_ms),
                backoff: Backoff::new(
                    Duration::from_millis(config.backoff_initial_ms),
                    Duration::from_millis(config.backoff_max_ms),
                ),
                metrics,
                logs: Mutex::new(BTreeMap::new()),
                unopenable: Mutex::new(BTreeSet::new()),
                probe: std::sync::Mutex::new((probe, Instant::now())),
            }),
        }))
    }

    /// Where it archives to.
    #[must_use]
    pub fn target(&self) -> &ArchiveTarget {
        &self.inner.target
    }

    /// What the Object Lock probe found so far.
    #[must_use]
    pub fn lock_probe(&self) -> LockProbe {
        self.inner
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    /// Probes whether the target enforces Object Lock, when a lock mode is
    /// set and no probe finished yet (a failed one is tried again after
    /// [`PROBE_RETRY`]); logs what it found, a warning unless enforced.
    /// Returns the result.
    pub async fn probe_lock(&self) -> LockProbe {
        {
            let probe = self
                .inner
                .probe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = match &probe.0 {
                LockProbe::Pending => true,
                LockProbe::Failed(_) => Instant::now() >= probe.1,
                _ => false,
            };
            if !due {
                return probe.0.clone();
            }
        }
        let found = self.inner.target.probe_lock().await;
        let policy = self.inner.target.lock_policy();
        let mode = policy.map_or("off", |policy| policy.mode.as_config());
        match &found {
            LockProbe::Enforced => tracing::info!(
                target = self.inner.target.url(),
                lock_mode = mode,
                "object lock: the target enforces it (a locked probe version could not be deleted)"
            ),
            LockProbe::Off | LockProbe::Pending => {}
            other => tracing::warn!(
                target = self.inner.target.url(),
                lock_mode = mode,
                result = other.name(),
                detail = other.detail(),
                "object lock: the target is not known to enforce it; archived objects may not be write-once (uploads fail while they cannot be locked)"
            ),
        }
        let mut probe = self
            .inner
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *probe = (found.clone(), Instant::now() + PROBE_RETRY);
        found
    }

    /// Runs rounds every `check_interval` until `stopping` turns true
    /// (after the Object Lock probe, when a lock mode is set).
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        tracing::info!(
            target = self.inner.target.url(),
            "archiving sealed segments"
        );
        let mut ticks = tokio::time::interval(self.inner.check_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stopping.borrow() {
                break;
            }
            tokio::select! {
                _ = ticks.tick() => {}
                changed = stopping.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            }
            self.round().await;
        }
    }

    /// One round over every log whose backoff has passed.
    async fn round(&self) {
        // The first round probes; later ones only after a failed probe.
        self.probe_lock().await;
        let store = Arc::clone(&self.inner.store);
        let names = match tokio::task::spawn_blocking(move || store.list()).await {
            Ok(Ok(names)) => names,
            Ok(Err(error)) => {
                tracing::warn!(%error, "archive: cannot list the logs");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "archive: listing the logs failed");
                return;
            }
        };
        for name in names {
            let Some(entry) = self.entry(&name).await else {
                continue;
            };
            let mut entry = entry.lock().await;
            if Instant::now() < entry.next_attempt {
                // The sizes still move (appends, removals) while it waits.
                entry.sample();
                continue;
            }
            match entry.step(false).await {
                Ok(_) => entry.backoff.succeeded(),
                Err(error) => {
                    let delay = entry.backoff.failed();
                    entry.next_attempt = Instant::now() + delay;
                    tracing::warn!(log = %name, error = %error_chain(&error), retry_in_ms = delay.as_millis(), "archive round failed; nothing local was removed");
                }
            }
        }
    }

    /// The log's entry, created on first use; `None` for a log that does
    /// not exist or does not open (served out of service elsewhere).
    async fn entry(&self, name: &LogName) -> Option<Arc<Mutex<Entry>>> {
        let mut logs = self.inner.logs.lock().await;
        if let Some(entry) = logs.get(name) {
            return Some(Arc::clone(entry));
        }
        if logs.len() >= LOGS_MAX {
            tracing::warn!(log = %name, "archive: more than {LOGS_MAX} logs; this one is not archived");
            return None;
        }
        if self.inner.unopenable.lock().await.contains(name) {
            return None;
        }
        let store = Arc::clone(&self.inner.store);
        let lookup = name.clone();
        let log = match tokio::task::spawn_blocking(move || store.get(&lookup)).await {
            Ok(Ok(log)) => log?,
            Ok(Err(error)) => {
                tracing::warn!(log = %name, %error, "archive: the log does not open; it is not archived");
                self.inner.unopenable.lock().await.insert(name.clone());
                return None;
            }
            Err(_) => return None,
        };
        let entry = Arc::new(Mutex::new(Entry {
            snapshots: SnapshotArchiver::new(
                self.inner.target.clone(),
                name.clone(),
                &trail_index::DerivedPaths::new(self.inner.store.root(), name).snapshots,
                self.inner.config.encoding,
            ),
            archiver: Archiver::new(self.inner.target.clone(), log, self.inner.config),
            backoff: self.inner.backoff.clone(),
            next_attempt: Instant::now(),
            metrics: self.inner.metrics.for_archive(name.as_str()),
        }));
        logs.insert(name.clone(), Arc::clone(&entry));
        Some(entry)
    }

    /// Seals the log's active segment when it holds records, archives
    /// every sealed segment of `name` now and waits until each is
    /// verified; returns the status and how many it uploaded. `None` for a
    /// log that does not exist. Everything acknowledged before the call is
    /// archived when it returns.
    ///
    /// # Errors
    /// [`ArchiveError::Log`] when the seal fails (a closed or fail-stopped
    /// log), otherwise as [`Archiver::step`].
    pub async fn archive_now(
        &self,
        name: &LogName,
    ) -> Result<Option<(ArchiveStatus, u64)>, ArchiveError> {
        let Some(entry) = self.entry(name).await else {
            return Ok(None);
        };
        let mut entry = entry.lock().await;
        // Under the entry's lock, so a background round cannot start
        // between the seal and the upload; the seal waits only for the
        // writer's queue, never for the object store.
        let log = Arc::clone(entry.archiver.log());
        log.seal_active().await?;
        let uploaded = entry.step(true).await?;
        entry.backoff.succeeded();
        entry.next_attempt = Instant::now();
        let mut status = entry.archiver.status();
        status.lock_probe = self.lock_probe();
        Ok(Some((status, uploaded)))
    }

    /// The archive's status for `name`; `None` for a log that does not exist.
    pub async fn status(&self, name: &LogName) -> Option<ArchiveStatus> {
        let entry = self.entry(name).await?;
        let entry = entry.lock().await;
        let mut status = entry.archiver.status();
        status.lock_probe = self.lock_probe();
        Some(status)
    }

    /// Sets (`on`) or clears the legal hold of the archived objects of the
    /// segments holding any of `from..=to` of `name`; `None` for a log that
    /// does not exist.
    ///
    /// # Errors
    /// As [`Archiver::hold`].
    pub async fn hold(
        &self,
        name: &LogName,
        from: Lsn,
        to: Lsn,
        on: bool,
    ) -> Result<Option<HoldDone>, ArchiveError> {
        let Some(entry) = self.entry(name).await else {
            return Ok(None);
        };
        let mut entry = entry.lock().await;
        entry.archiver.hold(from, to, on).await.map(Some)
    }
}
