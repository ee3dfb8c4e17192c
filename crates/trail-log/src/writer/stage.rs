//! The writer's first stage: classify each event of a request (new, or a
//! retry of an event already in the log), number the new ones and frame
//! them into the group's buffer. Nothing is written here.

use std::sync::Arc;

use crate::append::{PreparedEvent, Unchanged, RESOURCE_BUCKETS};
use crate::catalog::{SegmentEntry, Tip};
use crate::codec::{self, RecordSuffix};
use crate::error::{LogError, Result};
use crate::index::rebuild_sidecar;
use crate::read::{read_single, StoredRecord};
use crate::types::{Lsn, Receipt};

use super::{Staged, Writer};

/// The writer's table slot of a resource key.
fn bucket(resource_key: u64) -> usize {
    (resource_key % RESOURCE_BUCKETS as u64) as usize
}

/// What one event of a request turns out to be.
enum Slot {
    /// A retry of an event already in the log (or staged in this group).
    Duplicate(Receipt),
    /// A new event.
    New,
}

impl Writer {
    /// Classifies, numbers and frames one request's events into the buffer.
    /// All of the request is staged, or (on error) none of it. The request
    /// was checked by `AppendLimits::check`: its event ids are distinct.
    pub(super) fn stage(
        &mut self,
        events: Vec<crate::append::PreparedEvent>,
        atomic: bool,
        condition: Option<Unchanged>,
    ) -> Result<Vec<Receipt>> {
        if let Some(condition) = condition {
            let last = self.resource_touched[bucket(condition.resource_key)];
            if last > condition.since {
                return Err(LogError::ResourceChanged {
                    log: self.shared.name.to_string(),
                    since: condition.since,
                    last,
                });
            }
        }
        let mut slots = Vec::with_capacity(events.len());
        for event in &events {
            slots.push(match self.find_existing(&event.event_id, event.key)? {
                Some((receipt, stored_event)) => {
                    if !self
                        .options
                        .same_content
                        .same_content(&stored_event, event.body.event())
                    {
                        return Err(LogError::EventIdConflict {
                            event_id: event.event_id.clone(),
                            lsn: receipt.lsn,
                        });
                    }
                    Slot::Duplicate(Receipt {
                        duplicate: true,
                        ..receipt
                    })
                }
                None => Slot::New,
            });
        }
        let new_count = slots
            .iter()
            .filter(|slot| matches!(slot, Slot::New))
            .count() as u64;
        let batch_last_lsn = Lsn(self.staged_tip.lsn.0 + new_count);
        let rollback = (self.buffer.len(), self.staged.len(), self.staged_tip);
        let mut receipts: Vec<Receipt> = Vec::with_capacity(events.len());
        for (event, slot) in events.into_iter().zip(&slots) {
            let receipt = match slot {
                Slot::Duplicate(receipt) => *receipt,
                Slot::New => match self.stage_one(event, atomic.then_some(batch_last_lsn)) {
                    Ok(receipt) => receipt,
                    Err(error) => {
                        let (buffer_len, staged_len, tip) = rollback;
                        self.buffer.truncate(buffer_len);
                        for staged in self.staged.drain(staged_len..) {
                            self.staged_ids.remove(&staged.key);
                        }
                        self.staged_tip = tip;
                        return Err(error);
                    }
                },
            };
            receipts.push(receipt);
        }
        debug_assert!(
            !atomic || self.staged_tip.lsn == batch_last_lsn,
            "an atomic batch ends where its marker says"
        );
        Ok(receipts)
    }

    /// Numbers, chains and frames one new event.
    fn stage_one(
        &mut self,
        mut event: PreparedEvent,
        batch_last_lsn: Option<Lsn>,
    ) -> Result<Receipt> {
        let lsn = self.staged_tip.lsn.next();
        // A compensation undoes an earlier record. (That the hash it names
        // is the target's is checked by whoever builds it, the server, and
        // by every verify; the writer would need a read per compensation.)
        if let Some(target) = event
            .compensates
            .filter(|target| *target >= lsn || *target == Lsn::ZERO)
        {
            return Err(LogError::InvalidArgument(format!(
                "event {:?} compensates lsn {target}, but would itself be lsn {lsn}: a compensation undoes an earlier record",
                event.event_id
            )));
        }
        let recorded_at_unix_nanos = self
            .options
            .clock
            .now_unix_nanos()
            .max(self.staged_tip.recorded_at_unix_nanos);
        let prev_hash = self.staged_tip.hash;
        let suffix = RecordSuffix {
            lsn,
            recorded_at_unix_nanos,
            prev_hash,
            batch_last_lsn: batch_last_lsn.unwrap_or(lsn),
            durable_lsn: self.synced_lsn,
        };
        // Invariants of the record about to be framed: dense LSNs, a link
        // to the record before, a durable watermark below its own LSN.
        assert!(
            suffix.durable_lsn < lsn,
            "durable watermark below the record"
        );
        assert!(
            suffix.batch_last_lsn >= lsn,
            "batch marker not before the record"
        );
        let frame_start = self.buffer.len();
        let hash = codec::encode_prepared_frame(&mut self.buffer, &mut event.body, &suffix)
            .map_err(|error| LogError::InvalidArgument(error.to_string()))?;
        self.staged_tip = Tip {
            lsn,
            hash,
            recorded_at_unix_nanos,
        };
        let receipt = Receipt {
            lsn,
            hash,
            recorded_at_unix_nanos,
            duplicate: false,
        };
        if let Some(resource_key) = event.resource_key {
            // Set before a rollback could undo the staging: a bucket's LSN
            // may then name a record that never lands, which only makes a
            // condition stricter, never looser.
            self.resource_touched[bucket(resource_key)] = lsn;
        }
        let key = event.key;
        self.staged_ids.insert(key, self.staged.len());
        self.staged.push(Staged {
            key,
            event_id: event.event_id,
            event: event.body,
            receipt,
            prev_hash,
            frame_start,
        });
        Ok(receipt)
    }

    /// The receipt and stored event bytes of an earlier event with this id.
    pub(super) fn find_existing(
        &mut self,
        event_id: &str,
        key: u64,
    ) -> Result<Option<(Receipt, Vec<u8>)>> {
        if let Some(&index) = self.staged_ids.get(&key) {
            // A key shared by two ids is an accident of 64 bits; then look
            // through the staged events for the id itself.
            let staged = Some(&self.staged[index])
                .filter(|staged| staged.event_id == event_id)
                .or_else(|| {
                    self.staged
                        .iter()
                        .find(|staged| staged.event_id == event_id)
                });
            if let Some(staged) = staged {
                return Ok(Some((staged.receipt, staged.event.event().to_vec())));
            }
        }
        let shared = Arc::clone(&self.shared);
        let mut rebuild = |first_lsn: Lsn| {
            rebuild_sidecar(
                shared.fs.as_ref(),
                &shared.wal_dir,
                shared.genesis,
                first_lsn,
            )
        };
        let candidates = self
            .ids
            .candidates(self.shared.fs.as_ref(), key, &mut rebuild)?;
        for lsn in candidates {
            let stored = self.read_record(lsn)?;
            if stored.record.event_id == event_id {
                let receipt = Receipt {
                    lsn,
                    hash: stored.hash,
                    recorded_at_unix_nanos: stored.record.recorded_at_unix_nanos,
                    duplicate: true,
                };
                return Ok(Some((receipt, stored.record.event)));
            }
        }
        Ok(None)
    }

    /// Reads a written record (durable or not) by LSN.
    fn read_record(&self, lsn: Lsn) -> Result<StoredRecord> {
        if let Some(active) = self
            .active
            .as_ref()
            .filter(|active| lsn >= active.first_lsn)
        {
            let entry = SegmentEntry {
                first_lsn: active.first_lsn,
                last_lsn: self.written_tip.lsn,
                path: active.path.clone(),
                sealed: false,
                limit: active.write_offset,
                sparse: active.sparse.clone(),
                prev_hash: active.prev_hash,
                last_hash: self.written_tip.hash,
                file_bytes: active.capacity,
            };
            return read_single(self.shared.fs.as_ref(), &entry, lsn);
        }
        let entry = self.shared.catalog().segment_for(lsn).cloned();
        match entry {
            Some(entry) => read_single(self.shared.fs.as_ref(), &entry, lsn),
            None => Err(LogError::LsnNotFound {
                log: self.shared.name.to_string(),
                lsn,
                head: self.durable_tip.lsn,
            }),
        }
    }
}
