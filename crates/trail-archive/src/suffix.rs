//! Suffix restore (`trail restore --from-snapshot`): a data directory
//! rebuilt from the newest archived state snapshot plus the log's tail,
//! instead of every segment.
//!
//! From the bucket: the whole manifest chain (manifests only, cheap), the
//! newest snapshot's manifest and object against it
//! ([`crate::snapshots::load_newest_archived_snapshot`]), then the segments
//! from the one holding the snapshot's watermark to the end, each fetched
//! and checked as `verify_archive` checks it (objects, every record and
//! link, time carried across each boundary from the chain), the watermark's
//! hash against the holder segment, the compensation links of the restored
//! segments. Written: those segments and sidecars in `<dir>/<log>/wal/`,
//! the sidecars of the earlier segments too (so retries of their event ids
//! are still recognised), `wal/PREFIX` naming where the local log starts
//! (its voucher the digest of the manifest of the last segment not
//! restored), and the snapshot in `<dir>/<log>/snapshots/`, checked with
//! the state store's own `verify_snapshot`. `traild` then opens the log
//! from `PREFIX`, serves earlier LSNs through the archive (read-through),
//! and its state store loads the snapshot and replays only the tail.

use std::path::Path;

use trail_log::fs::OsFileSystem;
use trail_log::index::SegmentIndex;
use trail_log::segment::{index_file_name, segment_file_name};
use trail_log::{ArchivedPrefix, LogName, Lsn, RecordHash, WAL_DIR_NAME};

use crate::chain::{load_chain, ChainLink};
use crate::error::{ArchiveError, Result};
use crate::layout::INDEX_SUFFIX;
use crate::objects;
use crate::restore::{sync_dir, write_durably};
use crate::snapshots::{check_watermark_in, load_newest_archived_snapshot};
use crate::target::ArchiveTarget;
use crate::verify::{check_compensations, decode_checked, fetch_segment, Progress};

/// The directory under a log's directory the state store loads snapshots
/// from (`trail_index::DerivedPaths::snapshots`, FORMAT.md §13).
pub const LOCAL_SNAPSHOTS_DIR: &str = "snapshots";

/// What a suffix restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuffixReport {
    /// Segments in the archive's chain.
    pub chain_segments: u64,
    /// Segments restored (from the one holding the snapshot's watermark).
    pub segments: u64,
    /// Records in them.
    pub records: u64,
    /// The first restored LSN: the local log starts here.
    pub first_lsn: Lsn,
    /// The last restored LSN (the archive's last).
    pub last_lsn: Lsn,
    /// Its hash.
    pub last_hash: RecordHash,
    /// Sidecars of earlier (not restored) segments written for idempotency.
    pub earlier_sidecars: u64,
    /// The snapshot's watermark LSN...
    pub snapshot_lsn: Lsn,
    /// ...and hash.
    pub snapshot_hash: RecordHash,
    /// The snapshot object's key.
    pub snapshot_key: String,
    /// The snapshot file's size.
    pub snapshot_bytes: u64,
    /// The `wal/PREFIX` voucher written (empty when the suffix starts at
    /// LSN 1 and no prefix is needed).
    pub voucher: String,
    /// Stored bytes fetched (segments, sidecars, the snapshot).
    pub stored_bytes: u64,
    /// Compensation links checked in the restored segments.
    pub compensations_checked: u64,
}

/// Restores `log` from `target` into `data_dir` starting from the newest
/// archived state snapshot. Refuses a log directory that holds files, as
/// [`crate::restore_log`] does, and removes what it wrote when anything
/// fails.
///
/// # Errors
/// [`ArchiveError::DataLoss`] naming the object key for a broken chain, a
/// damaged or missing object, or a snapshot whose watermark is not the
/// chain's; [`ArchiveError::Config`] for an existing log directory, or an
/// archive without segments or snapshots of this log;
/// [`ArchiveError::Store`] when the store fails; [`ArchiveError::Local`]
/// for IO.
pub async fn restore_log_from_snapshot(
    target: &ArchiveTarget,
    log: &LogName,
    data_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<SuffixReport> {
    let log_dir = data_dir.join(log.as_str());
    if std::fs::read_dir(&log_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ArchiveError::Config(format!(
            "{} already exists and is not empty; restore into a fresh data directory",
            log_dir.display()
        )));
    }
    // Everything read before anything is written: the chain and the
    // snapshot (both cheap).
    let chain = load_chain(target, log).await?;
    if chain.is_empty() {
        return Err(ArchiveError::Config(format!(
            "the archive holds no segment of log {log}: nothing to restore (check the url and --log)"
        )));
    }
    let Some(snapshot) = load_newest_archived_snapshot(target, log, &chain).await? else {
        return Err(ArchiveError::Config(format!(
            "the archive holds no state snapshot of log {log}; restore without --from-snapshot"
        )));
    };
    let outcome = write_suffix(target, log, data_dir, &chain, &snapshot, progress).await;
    if outcome.is_err() {
        // A partial log would open as a shorter, valid log: remove it.
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    outcome
}

async fn write_suffix(
    target: &ArchiveTarget,
    log: &LogName,
    data_dir: &Path,
    chain: &[ChainLink],
    snapshot: &crate::snapshots::ArchivedSnapshot,
    progress: &mut dyn FnMut(Progress),
) -> Result<SuffixReport> {
    let log_dir = data_dir.join(log.as_str());
    let wal_dir = log_dir.join(WAL_DIR_NAME);
    let snapshot_dir = log_dir.join(LOCAL_SNAPSHOTS_DIR);
    for dir in [&wal_dir, &snapshot_dir] {
        std::fs::create_dir_all(dir).map_err(|error| ArchiveError::local(dir, error))?;
    }
    let start = snapshot.holder;
    let (earlier, suffix) = chain.split_at(start);
    let mut state = Progress {
        total_bytes: snapshot.manifest.object.bytes
            + earlier
                .iter()
                .map(|link| link.manifest.index_object.bytes)
                .sum::<u64>()
            + suffix
                .iter()
                .map(|link| link.manifest.segment_object.bytes + link.manifest.index_object.bytes)
                .sum::<u64>(),
        ..Progress::default()
    };
    progress(state);
    let mut report = SuffixReport {
        chain_segments: chain.len() as u64,
        segments: 0,
        records: 0,
        first_lsn: suffix
            .first()
            .map_or(Lsn::ZERO, |link| link.manifest.first_lsn),
        last_lsn: Lsn::ZERO,
        last_hash: RecordHash([0; 32]),
        earlier_sidecars: 0,
        snapshot_lsn: snapshot.manifest.watermark_lsn,
        snapshot_hash: snapshot.manifest.watermark_hash,
        snapshot_key: snapshot.key.to_string(),
        snapshot_bytes: snapshot.manifest.file.bytes,
        voucher: String::new(),
        stored_bytes: 0,
        compensations_checked: 0,
    };

    // The sidecars of the segments not restored: their event ids keep
    // answering for idempotency (FORMAT.md §8.3).
    for link in earlier {
        let index = fetch_sidecar(target, log, link).await?;
        write_durably(
            &wal_dir.join(index_file_name(link.manifest.first_lsn)),
            &index,
        )?;
        report.earlier_sidecars += 1;
        report.stored_bytes += link.manifest.index_object.bytes;
        state.done_bytes = report.stored_bytes;
        progress(state);
    }

    // The suffix, each segment checked with time carried from the one
    // before it (the chain ties the manifests).
    let mut links = Vec::new();
    let mut recorded_at_floor = earlier
        .last()
        .map_or(i64::MIN, |link| link.manifest.last_recorded_at_unix_nanos);
    for (offset, link) in suffix.iter().enumerate() {
        let fetched = fetch_segment(target, log, link, recorded_at_floor).await?;
        let manifest = &link.manifest;
        if offset == 0 {
            // The holder: the snapshot's watermark must be the chain's.
            check_watermark_in(
                link,
                Some(&fetched.segment),
                snapshot.manifest.watermark_lsn,
                snapshot.manifest.watermark_hash,
                &snapshot.key,
            )?;
        }
        recorded_at_floor = manifest.last_recorded_at_unix_nanos;
        links.extend(
            fetched
                .compensations
                .iter()
                .map(|found| (start + offset, *found)),
        );
        write_durably(
            &wal_dir.join(segment_file_name(manifest.first_lsn)),
            &fetched.segment,
        )?;
        write_durably(
            &wal_dir.join(index_file_name(manifest.first_lsn)),
            &fetched.index,
        )?;
        report.segments += 1;
        report.records += manifest.record_count;
        report.last_lsn = manifest.last_lsn;
        report.last_hash = manifest.last_hash;
        report.stored_bytes += manifest.segment_object.bytes + manifest.index_object.bytes;
        state.done_bytes = report.stored_bytes;
        state.lsn = manifest.last_lsn;
        progress(state);
    }
    report.compensations_checked = check_compensations(target, log, &links).await?;

    // Where the local log starts, vouched for by the last segment not
    // restored.
    if let (Some(before), Some(first)) = (earlier.last(), suffix.first()) {
        let prefix = ArchivedPrefix {
            first_lsn: first.manifest.first_lsn,
            prev_hash: first.manifest.prev_hash,
            prev_recorded_at_unix_nanos: before.manifest.last_recorded_at_unix_nanos,
            voucher: before.manifest.voucher(),
        };
        prefix.write(&OsFileSystem, &wal_dir)?;
        report.voucher = prefix.voucher;
    }

    // The snapshot, where the state store loads it from; checked entry by
    // entry as the state store will before it is left there.
    let snapshot_path = snapshot_dir.join(format!("{:020}.snap", report.snapshot_lsn.0));
    write_durably(&snapshot_path, &snapshot.file)?;
    match trail_state::verify_snapshot(&snapshot_path) {
        Ok(info)
            if info.watermark.lsn == report.snapshot_lsn.0
                && info.watermark.hash == report.snapshot_hash.0 => {}
        Ok(_) => {
            return Err(snapshot_data_loss(
                snapshot,
                "the restored file names another watermark".into(),
            ))
        }
        Err(defect) => {
            return Err(snapshot_data_loss(
                snapshot,
                format!("the snapshot file fails the state store's check: {defect}"),
            ))
        }
    }
    report.stored_bytes += snapshot.manifest.object.bytes;
    state.done_bytes = report.stored_bytes;
    progress(state);
    for dir in [&wal_dir, &snapshot_dir, &log_dir, &data_dir.to_path_buf()] {
        sync_dir(dir)?;
    }
    Ok(report)
}

fn snapshot_data_loss(
    snapshot: &crate::snapshots::ArchivedSnapshot,
    reason: String,
) -> ArchiveError {
    ArchiveError::DataLoss {
        key: snapshot.key.to_string(),
        first: snapshot.manifest.watermark_lsn,
        last: snapshot.manifest.watermark_lsn,
        reason,
    }
}

/// One archived segment's sidecar, checked against its manifest (both
/// digests, and that it decodes for the segment's range and length).
async fn fetch_sidecar(target: &ArchiveTarget, log: &LogName, link: &ChainLink) -> Result<Vec<u8>> {
    let manifest = &link.manifest;
    let (first, last) = (manifest.first_lsn, manifest.last_lsn);
    let key = target.layout(log.as_str()).key(first, last, INDEX_SUFFIX);
    let loss = |reason: String| ArchiveError::DataLoss {
        key: key.to_string(),
        first,
        last,
        reason,
    };
    let object = objects::get(target.store.as_ref(), &key)
        .await?
        .ok_or_else(|| loss("sidecar object is missing".into()))?;
    let index = decode_checked(
        &object,
        manifest.index_object,
        manifest.index,
        manifest.compression,
    )
    .map_err(loss)?;
    match SegmentIndex::decode(&index) {
        Ok(decoded)
            if decoded.first_lsn == first
                && decoded.last_lsn == last
                && decoded.segment_bytes == manifest.segment.bytes =>
        {
            Ok(index)
        }
        Ok(_) => Err(loss("sidecar describes another segment".into())),
        Err(reason) => Err(loss(format!("sidecar does not decode: {reason}"))),
    }
}
