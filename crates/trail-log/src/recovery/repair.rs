//! The one recovery step that writes: carries out a [`Plan`]'s repairs in
//! order, on a log that planning found sound. A refused log never gets here,
//! so its files stay exactly as they were.

use std::path::Path;

use crate::clean_close::CLEAN_CLOSE_FILE_NAME;
use crate::error::{LogError, Result};
use crate::fs::{FileSystem, WriteFile};
use crate::index::write_index_file;
use crate::segment::{self, FOOTER_BYTES};

use super::plan::{Plan, RepairStep};
use crate::segment::TornTail;

/// Carries out the plan's repairs; returns the active segment opened for
/// writing, when there is one.
pub(crate) fn repair(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    plan: &Plan,
) -> Result<Option<Box<dyn WriteFile>>> {
    let mut active = None;
    for step in &plan.repairs {
        match step {
            RepairStep::FinishSeal {
                path,
                seal_offset,
                footer_offset,
            } => finish_seal(fs, path, *seal_offset, *footer_offset)?,
            RepairStep::WriteSidecar { path, index } => {
                // Best effort: a missing sidecar is rebuilt from the segment.
                if let Err(error) = write_index_file(fs, path, index) {
                    tracing::warn!(%error, "could not write a segment index");
                }
            }
            RepairStep::CutTornTail(cut) => cut_torn_tail(fs, wal_dir, cut)?,
            RepairStep::SyncActive {
                path,
                rewrite_from,
                end,
            } => {
                let mut writable = fs
                    .open_write(path)
                    .map_err(|error| LogError::io("opening for writing", path, error))?;
                rewrite(fs, writable.as_mut(), path, *rewrite_from, *end)?;
                writable
                    .sync_data()
                    .map_err(|error| LogError::io("syncing", path, error))?;
                active = Some(writable);
            }
            RepairStep::SyncSealedTail {
                path,
                rewrite_from,
                end,
            } => sync_sealed_tail(fs, path, *rewrite_from, *end)?,
            RepairStep::RemoveCleanClose => {
                let marker = wal_dir.join(CLEAN_CLOSE_FILE_NAME);
                fs.remove_file(&marker)
                    .map_err(|error| LogError::io("removing", &marker, error))?;
            }
            RepairStep::RemoveTemporaries => remove_temporaries(fs, wal_dir)?,
            RepairStep::SyncDirectories => {
                for directory in [
                    Some(wal_dir),
                    wal_dir.parent(),
                    wal_dir.parent().and_then(Path::parent),
                ]
                .into_iter()
                .flatten()
                {
                    fs.sync_dir(directory)
                        .map_err(|error| LogError::io("syncing", directory, error))?;
                }
            }
        }
    }
    Ok(active)
}

/// Writes a sealed last segment's seal frame and footer again, with the
/// bytes read, and fsyncs the file: what a process whose sync failed left
/// readable is then durable too (rewriting the same bytes is harmless if a
/// crash tears it).
fn sync_sealed_tail(fs: &dyn FileSystem, path: &Path, rewrite_from: u64, end: u64) -> Result<()> {
    let mut writable = fs
        .open_write(path)
        .map_err(|error| LogError::io("opening for writing", path, error))?;
    rewrite(fs, writable.as_mut(), path, rewrite_from, end)?;
    writable
        .sync_all()
        .map_err(|error| LogError::io("syncing the seal of", path, error))
}

/// Writes the bytes of `[from, end)` of a file again, as read, in chunks:
/// pages a failed writeback left clean but not durable are dirty again, so
/// the sync after it writes them (the same bytes, so a crash that tears
/// the rewrite changes nothing).
fn rewrite(
    fs: &dyn FileSystem,
    writable: &mut dyn WriteFile,
    path: &Path,
    from: u64,
    end: u64,
) -> Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    if from >= end {
        return Ok(());
    }
    let readable = fs
        .open_read(path)
        .map_err(|error| LogError::io("opening", path, error))?;
    let mut buffer = Vec::new();
    let mut offset = from;
    while offset < end {
        let length = (end - offset).min(CHUNK_BYTES);
        // At most CHUNK_BYTES, so it fits a usize.
        buffer.resize(usize::try_from(length).unwrap_or(usize::MAX), 0);
        readable
            .read_exact_at(&mut buffer, offset)
            .and_then(|()| writable.write_all_at(&buffer, offset))
            .map_err(|error| LogError::io("writing again the unsynced tail of", path, error))?;
        offset += length;
    }
    Ok(())
}

/// Finishes a seal that a crash interrupted after the seal frame was
/// written: footer, trimmed length, sync.
fn finish_seal(
    fs: &dyn FileSystem,
    path: &Path,
    seal_offset: u64,
    footer_offset: u64,
) -> Result<()> {
    let mut writable = fs
        .open_write(path)
        .map_err(|error| LogError::io("opening for writing", path, error))?;
    writable
        .write_all_at(&segment::encode_footer(seal_offset), footer_offset)
        .and_then(|()| writable.set_len(footer_offset + FOOTER_BYTES as u64))
        .and_then(|()| writable.sync_all())
        .map_err(|error| LogError::io("finishing the seal of", path, error))?;
    tracing::warn!(file = %path.display(), "finished a seal that a crash interrupted");
    Ok(())
}

/// Keeps the torn bytes in `<segment>.torn-<offset>`, then zeroes them.
fn cut_torn_tail(fs: &dyn FileSystem, wal_dir: &Path, cut: &TornTail) -> Result<()> {
    quarantine(fs, wal_dir, cut)?;
    let mut file = fs
        .open_write(&cut.file)
        .map_err(|error| LogError::io("opening for writing", &cut.file, error))?;
    crate::fs::write_zeros(file.as_mut(), cut.offset, cut.offset + cut.bytes)
        .and_then(|()| file.sync_data())
        .map_err(|error| LogError::io("cutting the torn tail of", &cut.file, error))?;
    if cut.cut_records > cut.dropped_batch_records {
        tracing::warn!(
            file = %cut.file.display(), offset = cut.offset, bytes = cut.bytes,
            records = cut.cut_records, kept_through_lsn = %cut.kept_lsn,
            "cut a torn tail after a crash: a torn write was never acknowledged, but if the damage hit the last group synced before the crash, up to this many acknowledged records were lost; the cut bytes are kept beside the segment"
        );
    } else {
        tracing::warn!(
            file = %cut.file.display(), offset = cut.offset, bytes = cut.bytes,
            dropped_batch_records = cut.dropped_batch_records,
            "cut a torn tail: these bytes were never acknowledged"
        );
    }
    Ok(())
}

fn remove_temporaries(fs: &dyn FileSystem, wal_dir: &Path) -> Result<()> {
    let names = fs
        .list_dir(wal_dir)
        .map_err(|error| LogError::io("listing", wal_dir, error))?;
    for name in names.iter().filter(|name| name.ends_with(".tmp")) {
        let path = wal_dir.join(name);
        fs.remove_file(&path)
            .map_err(|error| LogError::io("removing", &path, error))?;
    }
    Ok(())
}

/// Keeps the bytes a torn-tail cut removes, beside the segment, for
/// forensics: `<segment>.torn-<offset>`.
fn quarantine(fs: &dyn FileSystem, wal_dir: &Path, cut: &TornTail) -> Result<()> {
    if cut.bytes == 0 {
        return Ok(());
    }
    let segment_path = &cut.file;
    let name = format!(
        "{}.torn-{}",
        segment_path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("segment"),
        cut.offset
    );
    let path = wal_dir.join(name);
    let source = fs
        .open_read(segment_path)
        .map_err(|error| LogError::io("opening", segment_path, error))?;
    let length = usize::try_from(cut.bytes).map_err(|_| {
        LogError::corruption(
            segment_path,
            cut.offset,
            cut.kept_lsn.next(),
            "torn tail too large",
        )
    })?;
    let mut bytes = vec![0u8; length];
    source
        .read_exact_at(&mut bytes, cut.offset)
        .map_err(|error| LogError::io("reading", segment_path, error))?;
    crate::fs::write_file_durably(fs, &path, &bytes)
        .map_err(|error| LogError::io("writing", &path, error))
}
