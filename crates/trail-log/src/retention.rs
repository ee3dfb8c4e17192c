//! The retention gate: components that need a log's sealed segments on
//! local disk (the archive until it has uploaded them, a follower that reads
//! files) hold them, and say up to which LSN they released them. A sealed
//! segment may leave the local disk only when every holder released all of
//! it, and never while nobody holds the log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::types::Lsn;

/// The holders of a log's sealed segments. A holder (the archive, a
/// follower that reads from files) says up to which LSN it no longer needs
/// the local files; a sealed segment may leave the local disk only when
/// every holder released all of it.
#[derive(Debug, Default)]
pub(crate) struct RetentionGate {
    next_id: AtomicU64,
    /// Holder id -> (name, released through this LSN).
    holders: Mutex<BTreeMap<u64, (String, Lsn)>>,
}

impl RetentionGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (String, Lsn)>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn hold(&self, name: &str) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (name.to_owned(), Lsn::ZERO));
        id
    }

    pub fn release_through(&self, id: u64, lsn: Lsn) {
        if let Some((_, released)) = self.lock().get_mut(&id) {
            // Releasing is monotonic: a holder cannot take back a release.
            *released = (*released).max(lsn);
        }
    }

    pub fn drop_holder(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The LSN through which every holder released, `None` with no holder.
    pub fn released_through(&self) -> Option<Lsn> {
        self.lock().values().map(|(_, released)| *released).min()
    }

    pub fn holders(&self) -> Vec<(String, Lsn)> {
        self.lock().values().cloned().collect()
    }
}

/// A claim on a log's sealed segments: while it exists, the engine keeps
/// every local sealed segment past what it released. Dropping it releases
/// everything.
#[derive(Debug)]
pub struct RetentionHold {
    pub(crate) gate: Arc<RetentionGate>,
    pub(crate) id: u64,
}

impl RetentionHold {
    /// This holder no longer needs the local files of LSNs up to `lsn`
    /// (monotonic: a smaller value than before changes nothing).
    pub fn release_through(&self, lsn: Lsn) {
        self.gate.release_through(self.id, lsn);
    }
}

impl Drop for RetentionHold {
    fn drop(&mut self) {
        self.gate.drop_holder(self.id);
    }
}
