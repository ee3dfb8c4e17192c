//! The event-id index the writer checks every append against, so a retry is
//! safe for the log's whole life. Ids of the active segment are held exactly
//! in memory; ids of sealed segments live in their `.idx` sidecars, behind
//! one in-memory growable Bloom filter, so the common case (a new id) costs a
//! hash and a filter probe and only a filter hit reads sidecars.

use std::collections::HashMap;
use std::path::PathBuf;

use growable_bloom_filter::GrowableBloom;

use crate::error::{LogError, Result};
use crate::fs::FileSystem;
use crate::index::{event_id_key, SegmentIndex};
use crate::types::Lsn;

/// False-positive rate of the filter: a false positive costs reading the
/// sidecars of sealed segments, so keep it rare.
const FILTER_FALSE_POSITIVE_RATE: f64 = 0.0001;
const FILTER_INITIAL_CAPACITY: usize = 100_000;

/// Where sealed segments' ids are found.
#[derive(Debug, Clone)]
pub(crate) struct SealedIds {
    pub first_lsn: Lsn,
    pub index_path: PathBuf,
}

pub(crate) struct EventIdIndex {
    filter: GrowableBloom,
    active: HashMap<String, Lsn>,
    /// Oldest first.
    sealed: Vec<SealedIds>,
}

impl std::fmt::Debug for EventIdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIdIndex")
            .field("active", &self.active.len())
            .field("sealed", &self.sealed.len())
            .finish()
    }
}

impl EventIdIndex {
    pub fn new() -> EventIdIndex {
        EventIdIndex {
            filter: GrowableBloom::new(FILTER_FALSE_POSITIVE_RATE, FILTER_INITIAL_CAPACITY),
            active: HashMap::new(),
            sealed: Vec::new(),
        }
    }

    /// Registers a sealed segment whose ids (keys) are given.
    pub fn add_sealed(&mut self, sealed: SealedIds, keys: impl IntoIterator<Item = u64>) {
        for key in keys {
            self.filter.insert(key);
        }
        self.sealed.push(sealed);
    }

    /// Registers an id of the active segment.
    pub fn insert_active(&mut self, key: u64, event_id: String, lsn: Lsn) {
        debug_assert_eq!(key, event_id_key(&event_id));
        self.filter.insert(key);
        self.active.insert(event_id, lsn);
    }

    /// The active segment was sealed: its ids are now found through its
    /// sidecar.
    pub fn seal_active(&mut self, sealed: SealedIds) {
        self.active.clear();
        self.sealed.push(sealed);
    }

    /// LSNs that may hold this id: exact for the active segment, confirmed
    /// by key for sealed ones (the caller compares the stored id).
    /// `rebuild` produces a sealed segment's index when its sidecar is
    /// missing or damaged.
    pub fn candidates(
        &self,
        fs: &dyn FileSystem,
        event_id: &str,
        rebuild: &mut dyn FnMut(Lsn) -> Result<SegmentIndex>,
    ) -> Result<Vec<Lsn>> {
        if let Some(lsn) = self.active.get(event_id) {
            return Ok(vec![*lsn]);
        }
        let key = event_id_key(event_id);
        if !self.filter.contains(key) {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for sealed in self.sealed.iter().rev() {
            let index = match read_index(fs, &sealed.index_path) {
                Ok(index) => index,
                Err(_) => rebuild(sealed.first_lsn)?,
            };
            found.extend(index.lsns_with_key(key));
        }
        Ok(found)
    }
}

/// Reads and checks a sidecar index.
pub(crate) fn read_index(fs: &dyn FileSystem, path: &std::path::Path) -> Result<SegmentIndex> {
    let file = fs
        .open_read(path)
        .map_err(|error| LogError::io("opening", path, error))?;
    let len = file
        .len()
        .map_err(|error| LogError::io("reading the length of", path, error))?;
    let len = usize::try_from(len)
        .map_err(|_| LogError::corruption(path, 0, Lsn::ZERO, "index file too large"))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|error| LogError::io("reading", path, error))?;
    SegmentIndex::decode(&bytes).map_err(|reason| LogError::corruption(path, 0, Lsn::ZERO, reason))
}
