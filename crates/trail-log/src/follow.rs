//! Following the durable log: a [`Follower`] yields records in LSN order up
//! to the durable head, waits for more, and keeps its position and the hash
//! the next record must link to across waits, segment rolls and parking,
//! so every link it passes is checked. It is what every derived component
//! (indexes, the Merkle tree, the archive, Subscribe) reads the log through.
//!
//! A follower holds an open file and a read buffer only while it reads:
//! [`Follower::park`] puts them down (a stalled consumer then costs a few
//! bytes of position), and the next read picks them up through the sparse
//! index.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{LogError, Result};
use crate::read::{ChainReader, StoredRecord};
use crate::shared::Shared;
use crate::types::{Head, Lsn, RecordHash};

/// A reader that follows a log's durable head. Blocking IO happens only in
/// [`Follower::read_available`], [`Follower::next_blocking`] and
/// [`Follower::next`]; [`Follower::wait`] does none.
pub struct Follower {
    shared: Arc<Shared>,
    reader: ChainReader,
    heads: watch::Receiver<Head>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("log", &self.shared.name)
            .field("next", &self.reader.next_lsn())
            .finish_non_exhaustive()
    }
}

impl Follower {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn, prev_hash: Option<RecordHash>) -> Follower {
        let heads = shared.head.subscribe();
        Follower {
            shared,
            reader: ChainReader::new(from, prev_hash),
            heads,
        }
    }

    /// The LSN the follower yields next.
    #[must_use]
    pub fn position(&self) -> Lsn {
        self.reader.next_lsn()
    }

    /// Hash of the record before [`Follower::position`], once known: what
    /// the next record must link to. A follower resumed from a stored
    /// watermark passes it to `Log::follow_from` so the first link is
    /// checked too.
    #[must_use]
    pub fn prev_hash(&self) -> Option<RecordHash> {
        self.reader.prev_hash()
    }

    /// The durable head as last seen.
    #[must_use]
    pub fn head(&self) -> Head {
        *self.heads.borrow()
    }

    /// Records behind the durable head (the follower's lag).
    #[must_use]
    pub fn lag(&self) -> u64 {
        (self.head().lsn.0 + 1).saturating_sub(self.position().0)
    }

    /// Puts the open file and read buffer down; the position stays.
    pub fn park(&mut self) {
        self.reader.park();
    }

    /// Why no more records can come, once the follower has read everything
    /// durable: the log was closed, or it fail-stopped.
    fn finished(&self) -> Option<LogError> {
        if let Some(reason) = self.shared.catalog().failed.clone() {
            return Some(LogError::FailStopped {
                log: self.shared.name.to_string(),
                reason,
            });
        }
        self.shared
            .closed
            .load(Ordering::Acquire)
            .then(|| LogError::Closed(self.shared.name.to_string()))
    }

    /// Durable records from the position on, at most `records_max` of them
    /// and (past the first) about `bytes_max` bytes of bodies; empty when
    /// the follower is at the head. Blocking IO; never waits for appends.
    ///
    /// # Errors
    /// Damage (CRC, density, a broken chain link) naming file, offset and
    /// LSN; IO errors; [`LogError::NotLocal`] for an archived position.
    pub fn read_available(
        &mut self,
        records_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<StoredRecord>> {
        let head = self.heads.borrow_and_update().lsn;
        let mut records = Vec::new();
        let mut bytes = 0usize;
        while records.len() < records_max && (records.is_empty() || bytes < bytes_max) {
            match self.reader.next_up_to(&self.shared, head)? {
                Some(stored) => {
                    bytes += stored.body.len();
                    records.push(stored);
                }
                None => break,
            }
        }
        Ok(records)
    }

    /// Waits (without IO) until a record past the position is durable.
    ///
    /// # Errors
    /// [`LogError::Closed`] or [`LogError::FailStopped`] when none can come.
    pub async fn wait(&mut self) -> Result<()> {
        loop {
            let position = self.position();
            if self.heads.borrow_and_update().lsn >= position {
                return Ok(());
            }
            if let Some(error) = self.finished() {
                return Err(error);
            }
            if self.heads.changed().await.is_err() {
                return Err(LogError::Closed(self.shared.name.to_string()));
            }
        }
    }

    /// The next record, waiting for it to become durable. Reads on the
    /// calling task (small, usually page-cache reads); a server with many
    /// followers calls [`Follower::wait`] and does the reading where
    /// blocking IO belongs.
    ///
    /// # Errors
    /// As [`Follower::wait`] and [`Follower::read_available`].
    pub async fn next(&mut self) -> Result<StoredRecord> {
        loop {
            self.wait().await?;
            if let Some(stored) = self.read_available(1, 0)?.pop() {
                return Ok(stored);
            }
        }
    }

    /// The next record, blocking the thread until it is durable.
    ///
    /// # Errors
    /// As [`Follower::next`].
    pub fn next_blocking(&mut self) -> Result<StoredRecord> {
        loop {
            if let Some(stored) = self.read_available(1, 0)?.pop() {
                return Ok(stored);
            }
            if let Some(error) = self.finished() {
                return Err(error);
            }
            let position = self.position();
            let mut heads = self.heads.clone();
            loop {
                if heads.borrow_and_update().lsn >= position || self.finished().is_some() {
                    break;
                }
                // The watch needs no runtime, only a waker.
                if pollster::block_on(heads.changed()).is_err() {
                    return Err(LogError::Closed(self.shared.name.to_string()));
                }
            }
        }
    }
}
