//! The writer's segment stage: seal the active segment (seal frame,
//! footer, trimmed length, sync, sidecar) and create the next one (from the
//! preparer's zero-filled spare, or preallocated here).

use std::sync::atomic::Ordering;

use crate::catalog::{SegmentEntry, SegmentEvent, SegmentInfo};
use crate::codec::{self, Seal};
use crate::error::{LogError, Result};
use crate::fs::WriteFile;
use crate::ids::SealedIds;
use crate::index::{write_index_file, SegmentIndex};
use crate::preparer::{drop_cached, zero_filled, Preparer};
use crate::segment::{self, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::shared::Shared;
use crate::types::{Durability, Lsn};

use super::{ActiveSegment, Writer};

impl Writer {
    /// Seals the active segment when it holds records, then starts a new one.
    pub(super) fn roll(&mut self) -> Result<()> {
        if self
            .active
            .as_ref()
            .is_some_and(|active| self.written_tip.lsn >= active.first_lsn)
        {
            self.seal_active()?;
        }
        if self.active.is_none() {
            self.create_active()?;
        }
        Ok(())
    }

    /// Seals the active segment when it holds records and answers with it
    /// as sealed; no new segment is created until the next append needs
    /// one (as after an age-based seal), so an idle log does not grow an
    /// empty preallocated file.
    pub(super) fn seal_holding_records(&mut self) -> Result<Option<SegmentInfo>> {
        let Some(first_lsn) = self
            .active
            .as_ref()
            .filter(|active| self.written_tip.lsn >= active.first_lsn)
            .map(|active| active.first_lsn)
        else {
            return Ok(None);
        };
        self.seal_active()?;
        let catalog = self.shared.catalog();
        let sealed = catalog
            .segments
            .iter()
            .find(|entry| entry.first_lsn == first_lsn && entry.sealed)
            .map(SegmentEntry::info);
        Ok(sealed)
    }

    /// Writes the seal and footer, trims the preallocated tail, syncs, then
    /// writes the sidecar index (best effort: it is rebuilt when missing).
    pub(super) fn seal_active(&mut self) -> Result<()> {
        let Some(mut active) = self.active.take() else {
            return Ok(());
        };
        let seal = Seal {
            first_lsn: active.first_lsn,
            last_lsn: self.written_tip.lsn,
            record_count: self.written_tip.lsn.0 - active.first_lsn.0 + 1,
            last_hash: self.written_tip.hash,
            sealed_at_unix_nanos: self.options.clock.now_unix_nanos(),
        };
        let seal_offset = active.write_offset;
        let mut trailer = Vec::with_capacity(128);
        codec::encode_seal_frame(&mut trailer, &seal)
            .map_err(|error| LogError::InvalidArgument(error.to_string()))?;
        trailer.extend_from_slice(&segment::encode_footer(seal_offset));
        let end = seal_offset + trailer.len() as u64;
        let sealed = active
            .file
            .write_all_at(&trailer, seal_offset)
            .and_then(|()| active.file.set_len(end))
            .and_then(|()| active.file.sync_all());
        if let Err(error) = sealed {
            let path = active.path.display().to_string();
            self.active = Some(active);
            return Err(self.fail_stop(format!("sealing {path}: {error}")));
        }
        active.write_offset = end;
        self.last_sync = self.options.clock.monotonic();
        self.synced_lsn = self.written_tip.lsn;
        let tip = self.written_tip;
        self.publish(tip);
        {
            let mut catalog = self.shared.catalog_mut();
            if let Some(entry) = catalog
                .segments
                .last_mut()
                .filter(|entry| entry.first_lsn == active.first_lsn)
            {
                entry.sealed = true;
                entry.limit = seal_offset;
                entry.last_lsn = seal.last_lsn;
                entry.last_hash = seal.last_hash;
                entry.file_bytes = end;
                entry.sparse.clone_from(&active.sparse);
                let info = entry.info();
                drop(catalog);
                self.shared.announce(SegmentEvent::Sealed(info));
            }
        }
        self.uncache_old_sealed();
        active.ids.sort_unstable();
        let index = SegmentIndex {
            first_lsn: active.first_lsn,
            last_lsn: seal.last_lsn,
            segment_bytes: end,
            seal_offset,
            sparse: std::mem::take(&mut active.sparse),
            ids: std::mem::take(&mut active.ids),
        };
        let index_path = self
            .shared
            .wal_dir
            .join(segment::index_file_name(active.first_lsn));
        if let Err(error) = write_index_file(self.shared.fs.as_ref(), &index_path, &index) {
            tracing::warn!(log = %self.shared.name, %error, "could not write a segment index; it will be rebuilt from the segment");
        }
        self.ids.seal_active(
            SealedIds {
                first_lsn: active.first_lsn,
                index_path,
            },
            &index,
        );
        Ok(())
    }

    /// Drops the cached pages of the sealed segment
    /// `cached_sealed_segments` seals before the newest one: on the
    /// preparer's thread when there is one (the fill it makes next then
    /// reuses those pages), else here.
    fn uncache_old_sealed(&self) {
        let keep = self.options.cached_sealed_segments;
        if keep == 0 {
            return;
        }
        let Some(path) = self
            .shared
            .catalog()
            .segments
            .iter()
            .rev()
            .filter(|entry| entry.sealed)
            .nth(keep)
            .map(|entry| entry.path.clone())
        else {
            return;
        };
        match &self.preparer {
            Some(preparer) => preparer.uncache(path),
            None => drop_cached(&self.shared, &path),
        }
    }

    /// Creates and preallocates the next segment. Failures leave the log as
    /// it was (the half-made file is removed), except a failed directory
    /// sync, after which the new file's durability is unknown.
    fn create_active(&mut self) -> Result<()> {
        let first_lsn = self.written_tip.lsn.next();
        let path = self
            .shared
            .wal_dir
            .join(segment::segment_file_name(first_lsn));
        let temporary = self
            .shared
            .wal_dir
            .join(format!("{}.tmp", segment::segment_file_name(first_lsn)));
        let header = SegmentHeader {
            log_id: self.shared.genesis,
            first_lsn,
            prev_hash: self.written_tip.hash,
        };
        let spare = self.preparer.as_ref().and_then(Preparer::take);
        let prepared_inline = spare.is_none();
        let prepared = match spare {
            Some((mut file, spare_path)) => file
                .write_all_at(&header.encode(), 0)
                .and_then(|()| file.sync_data())
                .map(|()| (file, spare_path))
                .map_err(|error| LogError::io("writing the header of", &path, error)),
            None => preallocate(
                &self.shared,
                &temporary,
                &header,
                self.options.segment_bytes,
                self.options.durability == Durability::Sync,
            )
            .map(|file| (file, temporary.clone())),
        };
        let (file, prepared_path) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                let _ = self.shared.fs.remove_file(&temporary);
                return Err(error);
            }
        };
        let renamed = self.shared.fs.rename(&prepared_path, &path);
        if renamed.is_err() {
            let _ = self.shared.fs.remove_file(&prepared_path);
        }
        // Only now is the spare's name free for the next one (a request
        // before the failed rename's removal would have the thread create
        // the spare there and then lose it to that removal).
        if let Some(preparer) = &self.preparer {
            preparer.request();
        }
        if let Err(error) = renamed {
            return Err(LogError::io("renaming into place", &path, error));
        }
        if let Err(error) = self.shared.fs.sync_dir(&self.shared.wal_dir) {
            return Err(self.fail_stop(format!(
                "syncing directory {}: {error}",
                self.shared.wal_dir.display()
            )));
        }
        let counters = &self.shared.counters;
        counters.segments_started.fetch_add(1, Ordering::Relaxed);
        if prepared_inline {
            counters
                .segments_prepared_inline
                .fetch_add(1, Ordering::Relaxed);
        }
        let entry = SegmentEntry {
            first_lsn,
            last_lsn: Lsn(first_lsn.0 - 1),
            path: path.clone(),
            sealed: false,
            limit: SEGMENT_HEADER_BYTES as u64,
            sparse: Vec::new(),
            prev_hash: self.written_tip.hash,
            last_hash: self.written_tip.hash,
            file_bytes: self.options.segment_bytes,
        };
        let info = entry.info();
        self.shared.catalog_mut().segments.push(entry);
        self.shared.announce(SegmentEvent::Created(info));
        self.active = Some(ActiveSegment {
            first_lsn,
            path,
            file,
            capacity: self.options.segment_bytes,
            write_offset: SEGMENT_HEADER_BYTES as u64,
            created: self.options.clock.monotonic(),
            prev_hash: self.written_tip.hash,
            sparse: Vec::new(),
            ids: Vec::new(),
        });
        Ok(())
    }
}

/// Creates the segment file: zero-filled and synced in `Sync` mode (writes
/// into preallocated, already-synced blocks make the later fdatasyncs cheap,
/// since no block allocation has to be journaled), sparse otherwise; then the
/// header, synced.
fn preallocate(
    shared: &Shared,
    path: &std::path::Path,
    header: &SegmentHeader,
    capacity: u64,
    zero_fill: bool,
) -> Result<Box<dyn WriteFile>> {
    let mut file = if zero_fill {
        zero_filled(shared, path, capacity)?
    } else {
        let mut file = shared
            .fs
            .create(path)
            .map_err(|error| LogError::io("creating", path, error))?;
        file.set_len(capacity)
            .map_err(|error| LogError::io("preallocating", path, error))?;
        file
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|error| LogError::io("writing the header of", path, error))?;
    file.sync_all()
        .map_err(|error| LogError::io("syncing", path, error))?;
    Ok(file)
}
