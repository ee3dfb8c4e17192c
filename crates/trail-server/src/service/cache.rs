//! Open logs by name, so handlers find a log without blocking IO; logs
//! found damaged, kept out of service; and the one way a handler opens (or
//! creates) a log the first time it is asked for.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use tonic::Status;
use trail_index::{DerivedLog, DerivedOptions};
use trail_log::{ErrorKind, Log, LogError, LogName, Store};

use trail_archive::{ArchiveReader, ArchiveTarget};

use crate::metrics::{ArchiveMetrics, LogMetrics, Metrics};
use crate::status;

/// Most logs with a read-through cache at once: each holds up to
/// `[archive] read_cache_bytes_max`, so this times that bounds the
/// server's cache. Past it, the least recently read log's cache goes.
pub const ARCHIVE_READ_LOGS_MAX: usize = 8;

/// Reads of archived records (LSNs before a log's first local one): one
/// [`ArchiveReader`] per log, with its bounded cache and metric handles.
pub struct ArchiveReaders {
    target: ArchiveTarget,
    cache_bytes_max: u64,
    metrics: Metrics,
    /// By log: the reader, its metrics and when it was last asked for.
    readers: std::sync::Mutex<ReaderSlots>,
}

#[derive(Default)]
struct ReaderSlots {
    by_log: HashMap<LogName, (Arc<ArchiveReader>, Arc<ArchiveMetrics>, u64)>,
    clock: u64,
}

impl ArchiveReaders {
    /// Reads from `target`, `cache_bytes_max` bytes cached per log.
    #[must_use]
    pub fn new(target: ArchiveTarget, cache_bytes_max: u64, metrics: Metrics) -> ArchiveReaders {
        ArchiveReaders {
            target,
            cache_bytes_max,
            metrics,
            readers: std::sync::Mutex::new(ReaderSlots::default()),
        }
    }

    /// The archive target (`Verify` checks archived ranges from it
    /// directly, not through a cache: it vouches for the bucket as it is).
    pub(super) fn target(&self) -> &ArchiveTarget {
        &self.target
    }

    /// `log`'s reader, created on first use. A stream keeps the reader it
    /// got even if it is evicted here meanwhile (its cache then goes when
    /// the stream ends).
    pub(super) fn reader(&self, log: &LogName) -> (Arc<ArchiveReader>, Arc<ArchiveMetrics>) {
        let mut slots = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        slots.clock += 1;
        let now = slots.clock;
        if let Some((reader, metrics, last_used)) = slots.by_log.get_mut(log) {
            *last_used = now;
            return (Arc::clone(reader), Arc::clone(metrics));
        }
        if slots.by_log.len() >= ARCHIVE_READ_LOGS_MAX {
            let oldest = slots
                .by_log
                .iter()
                .min_by_key(|(_, (_, _, last_used))| *last_used)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                slots.by_log.remove(&oldest);
            }
        }
        let reader = Arc::new(ArchiveReader::new(
            self.target.clone(),
            log.clone(),
            self.cache_bytes_max,
        ));
        let metrics = self.metrics.for_archive(log.as_str());
        slots.by_log.insert(
            log.clone(),
            (Arc::clone(&reader), Arc::clone(&metrics), now),
        );
        (reader, metrics)
    }
}

/// An open log, its derived stores and its metric handles.
#[derive(Clone)]
pub(super) struct OpenLog {
    pub(super) log: Arc<Log>,
    pub(super) derived: Derived,
    pub(super) metrics: Arc<LogMetrics>,
}

/// A log's derived stores (query index, resource state), as far as they run.
#[derive(Clone)]
pub(super) enum Derived {
    /// Following the log.
    Running(Arc<DerivedLog>),
    /// Turned off in the configuration (`derived.enabled = false`).
    Off,
    /// They did not open: why (the log itself is served).
    Failed(String),
}

impl Derived {
    /// The running stores, or the status Query, GetState and History answer.
    pub(super) fn running(&self) -> Result<&Arc<DerivedLog>, Status> {
        match self {
            Derived::Running(derived) => Ok(derived),
            Derived::Off => Err(Status::failed_precondition(
                "this server keeps no derived state (derived.enabled = false)",
            )),
            Derived::Failed(reason) => Err(Status::unavailable(format!(
                "the log's derived state did not open: {reason}"
            ))),
        }
    }
}

/// A log that did not open because its stored data is damaged: it stays
/// out of service (every request answers DATA_LOSS) while the server's
/// other logs go on, and is not reopened (recovery would only find the same
/// damage again, at the cost of a full scan per request).
#[derive(Clone)]
pub(super) struct Damaged {
    /// What the engine found: file, offset, LSN and reason.
    pub(super) damage: String,
    /// Its metric handles, so refused appends are counted under its name.
    pub(super) metrics: Arc<LogMetrics>,
}

impl Damaged {
    /// The status every request to the log gets.
    pub(super) fn status(&self, name: &LogName) -> Status {
        Status::data_loss(format!(
            "log {name} is damaged and out of service: {}",
            self.damage
        ))
    }
}

/// Open logs by name, so handlers find a log without blocking IO, and the
/// logs kept out of service.
#[derive(Default)]
pub(super) struct LogCache {
    open: RwLock<HashMap<LogName, OpenLog>>,
    damaged: RwLock<BTreeMap<LogName, Damaged>>,
    /// How each log's derived stores run; `None`: not at all.
    derived: Option<DerivedOptions>,
    /// Held while a log (and its derived stores) opens. An async lock, so
    /// requests waiting for an opening wait as tasks: with a blocking lock
    /// taken on the blocking pool, N first requests to one log took N
    /// blocking threads, all but one parked on it (64 at the start of a
    /// 64-client benchmark, DECISIONS.md #45).
    opening: Arc<tokio::sync::Mutex<()>>,
}

impl LogCache {
    /// A cache that starts each log's derived stores with `derived`.
    pub(super) fn new(derived: Option<DerivedOptions>) -> LogCache {
        LogCache {
            derived,
            ..LogCache::default()
        }
    }

    pub(super) fn get(&self, name: &LogName) -> Option<OpenLog> {
        self.open
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The open log, unless background verification found it damaged since
    /// it opened: then it is taken out of service like a log that failed
    /// to open, and `None` sends the caller to [`LogCache::damaged`].
    pub(super) fn get_in_service(&self, name: &LogName, metrics: &Metrics) -> Option<OpenLog> {
        let open = self.get(name)?;
        let Some(failure) = open.log.background_damage() else {
            return Some(open);
        };
        let error = LogError::Corruption {
            file: failure.file,
            offset: failure.offset,
            lsn: failure.lsn,
            reason: format!("found by background verification: {}", failure.reason),
        };
        self.quarantine(name, &error, metrics);
        self.open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        None
    }

    /// Caches `log` unless another task cached it first; returns the cached one.
    fn insert(&self, name: LogName, log: Arc<Log>, derived: Derived, metrics: &Metrics) -> OpenLog {
        self.open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_insert_with_key(|name| OpenLog {
                log,
                derived,
                metrics: metrics.for_log(name.as_str()),
            })
            .clone()
    }

    pub(super) fn all(&self) -> Vec<OpenLog> {
        self.open
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The damage that keeps `name` out of service, if it is.
    pub(super) fn damaged(&self, name: &LogName) -> Option<Damaged> {
        self.damaged
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Takes `name` out of service because opening it failed with `error`
    /// (damaged data); says so in the server's log and its metrics.
    pub(super) fn quarantine(
        &self,
        name: &LogName,
        error: &LogError,
        metrics: &Metrics,
    ) -> Damaged {
        let mut damaged = self.damaged.write().unwrap_or_else(PoisonError::into_inner);
        damaged
            .entry(name.clone())
            .or_insert_with(|| {
                tracing::error!(
                    log = %name,
                    %error,
                    "log is damaged: out of service (requests to it answer DATA_LOSS); the other logs are served. \
                     Copy its directory and run `trail verify --dir DATA_DIR --log {name}` on the copy"
                );
                metrics.log_damaged(name.as_str());
                Damaged {
                    damage: error.to_string(),
                    metrics: metrics.for_log(name.as_str()),
                }
            })
            .clone()
    }
}

/// Finds a log, opening it (or, with `create`, creating it) and starting
/// its derived stores on the blocking pool the first time. Openings are
/// serialized, so two first requests never open one log's stores twice,
/// and one opening takes one blocking thread however many requests wait
/// for it.
pub(super) async fn find_log(
    store: &Arc<Store>,
    cache: &Arc<LogCache>,
    metrics: &Metrics,
    name: LogName,
    create: bool,
) -> Result<OpenLog, Status> {
    if let Some(known) = known(cache, &name, metrics) {
        return known;
    }
    let one_at_a_time = Arc::clone(&cache.opening).lock_owned().await;
    // Whoever held the lock may just have opened it, or found it damaged.
    if let Some(known) = known(cache, &name, metrics) {
        return known;
    }
    let opener = Arc::clone(store);
    let opening = Arc::clone(cache);
    let wanted = name.clone();
    let counted = metrics.clone();
    let found = tokio::task::spawn_blocking(move || {
        // The guard goes with the opening, not with the request: a request
        // cancelled meanwhile must not let a second opening of the same
        // log start beside this one.
        let _one_at_a_time = one_at_a_time;
        let log = if create {
            opener.get_or_create(&wanted).map(Some)
        } else {
            opener.get(&wanted)
        }?;
        Ok::<_, LogError>(log.map(|log| {
            let derived = open_derived(opener.root(), &log, opening.derived);
            opening.insert(wanted, log, derived, &counted)
        }))
    })
    .await
    .map_err(|error| Status::internal(format!("opening the log failed: {error}")))?
    .map_err(|error| match error.kind() {
        ErrorKind::DataLoss => cache.quarantine(&name, &error, metrics).status(&name),
        _ => status::from_log_error(&error),
    })?;
    found.ok_or_else(|| status::log_not_found(&name))
}

/// The log if it is open and in service; its status if it is damaged.
fn known(cache: &LogCache, name: &LogName, metrics: &Metrics) -> Option<Result<OpenLog, Status>> {
    if let Some(log) = cache.get_in_service(name, metrics) {
        return Some(Ok(log));
    }
    cache.damaged(name).map(|damaged| Err(damaged.status(name)))
}

/// Opens and starts `log`'s derived stores (blocking IO). A failure is
/// logged and kept: the log itself is still served.
fn open_derived(
    root: &std::path::Path,
    log: &Arc<Log>,
    options: Option<DerivedOptions>,
) -> Derived {
    let Some(options) = options else {
        return Derived::Off;
    };
    match DerivedLog::open(root, Arc::clone(log), options) {
        Ok(derived) => Derived::Running(Arc::new(derived)),
        Err(error) => {
            tracing::error!(log = %log.name(), %error, "derived state did not open; the log is served without Query, GetState and History");
            Derived::Failed(error.to_string())
        }
    }
}
