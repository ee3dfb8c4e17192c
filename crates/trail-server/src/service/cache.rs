//! Open logs by name, so handlers find a log without blocking IO, and the
//! one way a handler opens (or creates) a log the first time it is asked for.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use tonic::Status;
use trail_log::{Log, LogName, Store};

use crate::metrics::{LogMetrics, Metrics};
use crate::status;

/// An open log and its metric handles.
#[derive(Clone)]
pub(super) struct OpenLog {
    pub(super) log: Arc<Log>,
    pub(super) metrics: Arc<LogMetrics>,
}

/// Open logs by name, so handlers find a log without blocking IO.
#[derive(Default)]
pub(super) struct LogCache(RwLock<HashMap<LogName, OpenLog>>);

impl LogCache {
    pub(super) fn get(&self, name: &LogName) -> Option<OpenLog> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Caches `log` unless another task cached it first; returns the cached one.
    fn insert(&self, name: LogName, log: Arc<Log>, metrics: &Metrics) -> OpenLog {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_insert_with_key(|name| OpenLog {
                log,
                metrics: metrics.for_log(name.as_str()),
            })
            .clone()
    }

    pub(super) fn all(&self) -> Vec<OpenLog> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// Finds a log, opening it (or, with `create`, creating it) on the blocking
/// pool the first time.
pub(super) async fn find_log(
    store: &Arc<Store>,
    cache: &LogCache,
    metrics: &Metrics,
    name: LogName,
    create: bool,
) -> Result<OpenLog, Status> {
    if let Some(log) = cache.get(&name) {
        return Ok(log);
    }
    let opener = Arc::clone(store);
    let wanted = name.clone();
    let found = tokio::task::spawn_blocking(move || {
        if create {
            opener.get_or_create(&wanted).map(Some)
        } else {
            opener.get(&wanted)
        }
    })
    .await
    .map_err(|error| Status::internal(format!("opening the log failed: {error}")))?
    .map_err(|error| status::from_log_error(&error))?;
    match found {
        Some(log) => Ok(cache.insert(name, log, metrics)),
        None => Err(status::log_not_found(&name)),
    }
}
