//! The compactor: a background task that archives every log's sealed
//! segments (through `trail_archive::Archiver`, one per log) and drops
//! local copies after the retention delay. It runs beside the server and
//! shares nothing with the append path but the engine's catalog reads, so
//! appends never wait for it; a failed round (an object-store outage)
//! deletes nothing and is retried per log with exponential backoff.
//! `Admin.ArchiveNow` and `Admin.ArchiveStatus` reach it through
//! [`Compactor`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use trail_archive::check::error_chain;

use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use trail_archive::{
    ArchiveError, ArchiveStatus, ArchiveTarget, Archiver, ArchiverConfig, Backoff,
};
use trail_log::{LogName, Store};

use crate::config::ArchiveConfig;
use crate::metrics::{ArchiveMetrics, Metrics};
use crate::ServerError;

/// Most logs the compactor tracks; past it, new logs are not archived (and
/// a warning says so). Every log costs one archiver's small state.
pub const LOGS_MAX: usize = 4096;

/// One log's archiver and when it may try again.
struct Entry {
    archiver: Archiver,
    backoff: Backoff,
    next_attempt: Instant,
    metrics: Arc<ArchiveMetrics>,
}

impl Entry {
    /// Runs one archiver step and records what it did in the metrics.
    async fn step(&mut self, force: bool) -> Result<u64, ArchiveError> {
        let outcome = self.archiver.step(force).await;
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
}

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
            .map_err(|error| ServerError::Config(format!("archive.multipart_*: {error}")))?;
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
            }),
        }))
    }

    /// Where it archives to.
    #[must_use]
    pub fn target(&self) -> &ArchiveTarget {
        &self.inner.target
    }

    /// Runs rounds every `check_interval` until `stopping` turns true.
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
        Ok(Some((entry.archiver.status(), uploaded)))
    }

    /// The archive's status for `name`; `None` for a log that does not exist.
    pub async fn status(&self, name: &LogName) -> Option<ArchiveStatus> {
        let entry = self.entry(name).await?;
        let entry = entry.lock().await;
        Some(entry.archiver.status())
    }
}
