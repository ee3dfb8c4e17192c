//! The writer's second stage: write the group's buffer with one call, make
//! it durable with one fdatasync (per the durability mode), and only then
//! publish it to readers and answer every append of the group.

use std::sync::atomic::Ordering;

use crate::catalog::Tip;
use crate::codec::FRAME_HEADER_BYTES;
use crate::error::{LogError, Result};
use crate::fs::FileSystem;
use crate::index::SPARSE_STRIDE_BYTES;
use crate::segment::SEAL_RESERVE_BYTES;
use crate::types::{Durability, Head};

use super::{ActiveSegment, PendingReply, Staged, Writer};

impl Writer {
    /// Writes the buffer, makes it durable per the durability mode,
    /// publishes it and answers every reply of the group.
    pub(super) fn commit(&mut self, replies: &mut Vec<PendingReply>) {
        let outcome = self.write_and_sync();
        for (reply, result) in replies.drain(..) {
            let result = match (&outcome, result) {
                (Err(error), Ok(_)) => Err(error.clone()),
                (_, result) => result,
            };
            let _ = reply.send(result);
        }
    }

    fn write_and_sync(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            return Err(self.fail_stop("records staged with no active segment (bug)".into()));
        };
        let offset = active.write_offset;
        assert!(
            offset + self.buffer.len() as u64 <= active.capacity - SEAL_RESERVE_BYTES,
            "a group never eats into the seal reserve"
        );
        check_group(&self.buffer, &self.staged, self.written_tip);
        if let Err(error) = active.file.write_all_at(&self.buffer, offset) {
            let path = active.path.clone();
            let length = self.buffer.len();
            let undone = error.kind() == std::io::ErrorKind::StorageFull
                && crate::fs::write_zeros(active.file.as_mut(), offset, offset + length as u64)
                    .is_ok();
            self.discard_staged();
            if undone {
                return Err(LogError::io("writing", path, error));
            }
            return Err(self.fail_stop(format!("writing {}: {error}", path.display())));
        }
        if cfg!(debug_assertions) {
            read_back(self.shared.fs.as_ref(), active, &self.buffer, offset);
        }
        active.write_offset += self.buffer.len() as u64;
        let counters = &self.shared.counters;
        counters.groups.fetch_add(1, Ordering::Relaxed);
        counters
            .records
            .fetch_add(self.staged.len() as u64, Ordering::Relaxed);
        counters
            .bytes
            .fetch_add(self.buffer.len() as u64, Ordering::Relaxed);
        let mut sparse_last = active.sparse.last().map_or(0, |(_, offset)| *offset);
        for staged in &self.staged {
            let frame_offset = offset + staged.frame_start as u64;
            if active.sparse.is_empty() || frame_offset >= sparse_last + SPARSE_STRIDE_BYTES {
                active.sparse.push((staged.receipt.lsn, frame_offset));
                sparse_last = frame_offset;
            }
            active.ids.push((staged.key, staged.receipt.lsn));
        }
        for staged in self.staged.drain(..) {
            self.ids.insert_active(staged.key, staged.receipt.lsn);
        }
        self.staged_ids.clear();
        self.buffer.clear();
        self.written_tip = self.staged_tip;
        match self.options.durability {
            Durability::Sync => self.sync_unsynced(),
            Durability::Interval(interval) => {
                if self
                    .options
                    .clock
                    .monotonic()
                    .saturating_sub(self.last_sync)
                    >= interval
                {
                    self.sync_unsynced()
                } else {
                    Ok(())
                }
            }
            Durability::None => {
                self.publish(self.written_tip);
                Ok(())
            }
        }
    }

    fn discard_staged(&mut self) {
        self.buffer.clear();
        self.staged.clear();
        self.staged_ids.clear();
        self.staged_tip = self.written_tip;
    }

    /// fdatasyncs what was written and publishes it.
    pub(super) fn sync_unsynced(&mut self) -> Result<()> {
        if let Some(error) = self.failure_error() {
            return Err(error);
        }
        if self.written_tip == self.durable_tip {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        if self.options.durability != Durability::None {
            self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = active.file.sync_data() {
                let path = active.path.display().to_string();
                return Err(self.fail_stop(format!("fdatasync of {path}: {error}")));
            }
            self.synced_lsn = self.written_tip.lsn;
        }
        self.last_sync = self.options.clock.monotonic();
        self.publish(self.written_tip);
        Ok(())
    }

    /// Lets readers see everything up to `tip`.
    pub(super) fn publish(&mut self, tip: Tip) {
        self.durable_tip = tip;
        if let Some(active) = &self.active {
            let mut catalog = self.shared.catalog_mut();
            if let Some(entry) = catalog
                .segments
                .last_mut()
                .filter(|entry| entry.first_lsn == active.first_lsn)
            {
                entry.last_lsn = tip.lsn;
                entry.last_hash = tip.hash;
                entry.limit = active.write_offset;
                // Sparse entries are only ever added: copy just the new ones.
                let known = entry.sparse.len();
                entry.sparse.extend_from_slice(&active.sparse[known..]);
            }
        }
        self.shared.head.send_replace(Head {
            lsn: tip.lsn,
            hash: tip.hash,
        });
    }
}

/// The group's invariants, checked before its one write: LSNs dense from the
/// written tip, each record linked to the one before, frames back to back
/// from the buffer's start to its end, each as long as its header says.
fn check_group(buffer: &[u8], staged: &[Staged], written: Tip) {
    let mut expected_lsn = written.lsn.next();
    let mut expected_prev = written.hash;
    for (position, record) in staged.iter().enumerate() {
        assert_eq!(record.receipt.lsn, expected_lsn, "lsns are dense");
        assert_eq!(
            record.prev_hash, expected_prev,
            "each record links to the one before"
        );
        let end = staged
            .get(position + 1)
            .map_or(buffer.len(), |next| next.frame_start);
        let header = &buffer[record.frame_start..record.frame_start + 4];
        let declared = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        assert_eq!(
            record.frame_start + FRAME_HEADER_BYTES + declared,
            end,
            "frames are back to back and as long as they say"
        );
        expected_lsn = expected_lsn.next();
        expected_prev = record.receipt.hash;
    }
    assert!(staged.first().is_none_or(|first| first.frame_start == 0));
}

/// Debug builds read every group back after writing it and compare.
fn read_back(fs: &dyn FileSystem, active: &ActiveSegment, buffer: &[u8], offset: u64) {
    let Ok(file) = fs.open_read(&active.path) else {
        return;
    };
    let mut written = vec![0u8; buffer.len()];
    if file.read_exact_at(&mut written, offset).is_ok() {
        assert!(written == buffer, "a group reads back as it was written");
    }
}
