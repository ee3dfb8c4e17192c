//! The state a log's handle, readers, followers, background verifier and
//! writer share: the catalog behind its lock, the durable head's watch, the
//! segment notifications, the retention gate and the writer's counters.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::{broadcast, watch};

use crate::background::BackgroundVerification;
use crate::catalog::{Catalog, SegmentEvent};
use crate::fs::FileSystem;
use crate::retention::RetentionGate;
use crate::types::{Head, LogName, RecordHash};

/// Counters the writer keeps, for metrics and benchmarks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub groups: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub segments_started: AtomicU64,
    pub segments_prepared_inline: AtomicU64,
    pub segments_uncached: AtomicU64,
    pub spin_catches: AtomicU64,
}

/// State shared by a log's handle, its readers, followers and its writer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub counters: Counters,
    pub name: LogName,
    /// `<root>/<log>/wal`
    pub wal_dir: PathBuf,
    pub fs: Arc<dyn FileSystem>,
    pub genesis: RecordHash,
    pub catalog: RwLock<Catalog>,
    pub head: watch::Sender<Head>,
    pub segment_events: broadcast::Sender<SegmentEvent>,
    pub retention: Arc<RetentionGate>,
    pub background: Arc<BackgroundVerification>,
    /// Set when the writer has exited: followers stop waiting.
    pub closed: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells listeners; nobody listening is fine.
    pub fn announce(&self, event: SegmentEvent) {
        let _ = self.segment_events.send(event);
    }
}
