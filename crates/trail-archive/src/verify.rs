//! Offline verification of a log's archive from the bucket alone: the
//! manifest chain ([`crate::chain::load_chain`]), then every object against
//! its manifest (size, blake3 of the stored object, of the decoded file),
//! and every segment's records re-checked with the chain carried across
//! each segment boundary.

use bytes::Bytes;
use trail_log::codec::genesis_hash;
use trail_log::index::SegmentIndex;
use trail_log::verify::CompensationRules;
use trail_log::{LogName, Lsn, RecordHash};

use crate::chain::{load_chain, ChainLink};
use crate::check::{check_sealed_segment, record_hashes, CompensationLink};
use crate::compress;
use crate::error::Result;
use crate::layout::{INDEX_SUFFIX, SEGMENT_SUFFIX};
use crate::manifest::Digest;
use crate::objects;
use crate::target::ArchiveTarget;

/// What a verified archive holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Segments checked.
    pub segments: u64,
    /// Records in them.
    pub records: u64,
    /// The last archived LSN (0 for an empty archive).
    pub last_lsn: Lsn,
    /// Its hash (the genesis value for an empty archive).
    pub last_hash: RecordHash,
    /// Bytes of the segment files.
    pub segment_bytes: u64,
    /// Bytes stored for them (objects of segments and sidecars).
    pub stored_bytes: u64,
    /// The voucher an archived-prefix record carries for this archive's
    /// last segment (empty for an empty archive).
    pub voucher: String,
    /// Compensation records whose link was checked (FORMAT.md 6.3): each
    /// undoes an earlier archived record, once, naming its hash.
    pub compensations_checked: u64,
}

/// A segment and its sidecar fetched and checked.
pub(crate) struct FetchedSegment {
    pub segment: Vec<u8>,
    pub index: Vec<u8>,
    /// Its compensation records' links.
    pub compensations: Vec<CompensationLink>,
}

/// Progress of a verify or a restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Stored bytes fetched and checked so far.
    pub done_bytes: u64,
    /// Stored bytes in all.
    pub total_bytes: u64,
    /// The last LSN checked.
    pub lsn: Lsn,
}

/// Verifies every archived segment of `log`.
///
/// # Errors
/// [`crate::ArchiveError::DataLoss`] naming the object key and LSN range of
/// the first missing, altered or swapped object or broken link;
/// [`crate::ArchiveError::Store`] when the store fails.
pub async fn verify_archive(
    target: &ArchiveTarget,
    log: &LogName,
    progress: &mut dyn FnMut(Progress),
) -> Result<ArchiveReport> {
    walk_checked(target, log, progress, &mut |_, _| Ok(())).await
}

/// [`walk`], then the compensation links across the whole archive
/// ([`check_compensations`]): what verify and restore both check.
pub(crate) async fn walk_checked(
    target: &ArchiveTarget,
    log: &LogName,
    progress: &mut dyn FnMut(Progress),
    visit: &mut dyn FnMut(&ChainLink, FetchedSegment) -> Result<()>,
) -> Result<ArchiveReport> {
    // Links, with the segment (its chain position) each compensation is in.
    let mut links: Vec<(usize, CompensationLink)> = Vec::new();
    let mut position = 0;
    let mut report = walk(target, log, progress, &mut |link, fetched| {
        links.extend(fetched.compensations.iter().map(|found| (position, *found)));
        position += 1;
        visit(link, fetched)
    })
    .await?;
    report.compensations_checked = check_compensations(target, log, &links).await?;
    Ok(report)
}

/// The compensation rules over the whole archive: every compensation undoes
/// an earlier record, no record is undone twice, and the hash it names is
/// that record's. Each segment holding a target is fetched (and checked)
/// once more; compensations are rare, so that is a few downloads.
pub(crate) async fn check_compensations(
    target: &ArchiveTarget,
    log: &LogName,
    links: &[(usize, CompensationLink)],
) -> Result<u64> {
    if links.is_empty() {
        return Ok(0);
    }
    let chain = load_chain(target, log).await?;
    let layout = target.layout(log.as_str());
    let loss = |at: usize, reason: String| {
        let manifest = &chain[at.min(chain.len() - 1)].manifest;
        crate::ArchiveError::DataLoss {
            key: layout
                .key(manifest.first_lsn, manifest.last_lsn, SEGMENT_SUFFIX)
                .to_string(),
            first: manifest.first_lsn,
            last: manifest.last_lsn,
            reason,
        }
    };
    let mut rules = CompensationRules::default();
    // Per segment of the chain, the target LSNs to look up in it.
    let mut wanted: std::collections::BTreeMap<usize, std::collections::BTreeSet<Lsn>> =
        std::collections::BTreeMap::new();
    for (at, link) in links {
        rules
            .admit(link.lsn, link.target)
            .map_err(|reason| loss(*at, reason))?;
        if link.target_hash.is_some() {
            let holder = chain.partition_point(|held| held.manifest.last_lsn < link.target);
            wanted.entry(holder).or_default().insert(link.target);
        }
    }
    let mut hashes = std::collections::HashMap::new();
    for (holder, lsns) in &wanted {
        let Some(link) = chain.get(*holder) else {
            continue;
        };
        let fetched = fetch_segment(target, log, link, i64::MIN).await?;
        let manifest = &link.manifest;
        let key = layout.key(manifest.first_lsn, manifest.last_lsn, SEGMENT_SUFFIX);
        let found = record_hashes(
            &fetched.segment,
            std::path::Path::new(key.as_ref()),
            manifest.log_id,
            manifest.first_lsn,
            manifest.prev_hash,
            lsns,
        )
        .map_err(|reason| loss(*holder, reason))?;
        hashes.extend(found);
    }
    let mut checked = 0;
    for (at, link) in links {
        if let Some(expected) = link.target_hash {
            match hashes.get(&link.target) {
                Some(actual) if *actual == expected => {}
                Some(actual) => {
                    return Err(loss(
                        *at,
                        CompensationRules::wrong_hash(link.lsn, link.target, expected, *actual),
                    ))
                }
                None => {
                    return Err(loss(
                        *at,
                        format!(
                            "compensation at lsn {} undoes lsn {}, which the archive does not hold",
                            link.lsn, link.target
                        ),
                    ))
                }
            }
        }
        checked += 1;
    }
    Ok(checked)
}

/// Loads the chain, then fetches and checks each segment in order, handing
/// each to `visit`.
pub(crate) async fn walk(
    target: &ArchiveTarget,
    log: &LogName,
    progress: &mut dyn FnMut(Progress),
    visit: &mut dyn FnMut(&ChainLink, FetchedSegment) -> Result<()>,
) -> Result<ArchiveReport> {
    let chain = load_chain(target, log).await?;
    let mut report = ArchiveReport {
        segments: 0,
        records: 0,
        last_lsn: Lsn::ZERO,
        last_hash: genesis_hash(log.as_str()),
        segment_bytes: 0,
        stored_bytes: 0,
        voucher: String::new(),
        compensations_checked: 0,
    };
    let mut state = Progress {
        total_bytes: chain
            .iter()
            .map(|link| link.manifest.segment_object.bytes + link.manifest.index_object.bytes)
            .sum(),
        ..Progress::default()
    };
    progress(state);
    let mut recorded_at_floor = i64::MIN;
    for link in &chain {
        let fetched = fetch_segment(target, log, link, recorded_at_floor).await?;
        let manifest = &link.manifest;
        recorded_at_floor = manifest.last_recorded_at_unix_nanos;
        report.segments += 1;
        report.records += manifest.record_count;
        report.last_lsn = manifest.last_lsn;
        report.last_hash = manifest.last_hash;
        report.segment_bytes += manifest.segment.bytes;
        report.stored_bytes += manifest.segment_object.bytes + manifest.index_object.bytes;
        report.voucher = manifest.voucher();
        state.done_bytes = report.stored_bytes;
        state.lsn = manifest.last_lsn;
        visit(link, fetched)?;
        progress(state);
    }
    Ok(report)
}

/// What [`verify_archived_range`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeReport {
    /// Archived segments fetched and checked (each in full).
    pub segments: u64,
    /// Records of the range checked (`to - from + 1`).
    pub verified: u64,
    /// The last LSN of the range.
    pub last: Lsn,
    /// Its hash: what the record after it must link to.
    pub last_hash: RecordHash,
}

/// Verifies the archived LSNs `from..=to` of `log` from the bucket: the
/// manifest chain from LSN 1 (so the range is tied to the log's genesis),
/// then every segment holding part of the range in full, as
/// [`verify_archive`] checks it (objects against their manifest, every
/// record and link, the seal), with time checked across segments. What a
/// server's `Verify` runs for LSNs before its log's first local one; the
/// caller checks that [`RangeReport::last_hash`] is what the local log
/// links to.
///
/// # Errors
/// [`crate::ArchiveError::DataLoss`] naming the object key and LSN range of
/// the first missing, altered or swapped object or broken link, or the
/// archive's end when it stops before `to`; [`crate::ArchiveError::Store`]
/// when the store fails.
pub async fn verify_archived_range(
    target: &ArchiveTarget,
    log: &LogName,
    from: Lsn,
    to: Lsn,
) -> Result<RangeReport> {
    let from = from.max(Lsn::FIRST);
    let chain = load_chain(target, log).await?;
    let end = chain
        .last()
        .map_or(Lsn::ZERO, |link| link.manifest.last_lsn);
    if to > end || from > to {
        let key = target.layout(log.as_str()).segments_dir().to_string();
        return Err(crate::ArchiveError::DataLoss {
            key,
            first: from,
            last: to,
            reason: format!(
                "the archive of log {log} ends at lsn {end}: it does not hold lsns {from}..={to}"
            ),
        });
    }
    let mut report = RangeReport {
        segments: 0,
        verified: 0,
        last: to,
        last_hash: genesis_hash(log.as_str()),
    };
    let start = chain.partition_point(|link| link.manifest.last_lsn < from);
    let mut recorded_at_floor = start
        .checked_sub(1)
        .and_then(|before| chain.get(before))
        .map_or(i64::MIN, |link| link.manifest.last_recorded_at_unix_nanos);
    // Bounded by the chain's length.
    for link in chain.iter().skip(start) {
        let manifest = &link.manifest;
        if manifest.first_lsn > to {
            break;
        }
        let fetched = fetch_segment(target, log, link, recorded_at_floor).await?;
        recorded_at_floor = manifest.last_recorded_at_unix_nanos;
        report.segments += 1;
        let (first, last) = (manifest.first_lsn.max(from), manifest.last_lsn.min(to));
        report.verified += last.0 + 1 - first.0;
        report.last_hash = if last == manifest.last_lsn {
            manifest.last_hash
        } else {
            hash_at(link, &fetched.segment, last)?
        };
    }
    Ok(report)
}

/// The hash of `lsn` in a segment [`fetch_segment`] has checked.
pub(crate) fn hash_at(link: &ChainLink, segment: &[u8], lsn: Lsn) -> Result<RecordHash> {
    let manifest = &link.manifest;
    let expected = trail_log::segment::SegmentHeader {
        log_id: manifest.log_id,
        first_lsn: manifest.first_lsn,
        prev_hash: manifest.prev_hash,
    };
    let mut found = None;
    let mut visit = |scanned: &trail_log::segment::ScannedRecord<'_>| {
        if scanned.record.lsn == lsn {
            found = Some(scanned.hash);
        }
    };
    trail_log::segment::scan_segment(
        &crate::check::MemoryFile(segment),
        std::path::Path::new(link.key.as_ref()),
        &expected,
        None,
        i64::MIN,
        &mut visit,
    )
    .map_err(|error| link.data_loss(crate::check::error_chain(&error)))?;
    found.ok_or_else(|| link.data_loss(format!("lsn {lsn} is not in the segment")))
}

/// Fetches one segment's objects and checks them against the manifest:
/// sizes and digests of the objects and of the decoded files, every record
/// of the segment (from the manifest's `prev_hash`, which the chain already
/// tied to the previous segment), the seal, and the sidecar's range.
pub(crate) async fn fetch_segment(
    target: &ArchiveTarget,
    log: &LogName,
    link: &ChainLink,
    recorded_at_floor: i64,
) -> Result<FetchedSegment> {
    let manifest = &link.manifest;
    let layout = target.layout(log.as_str());
    let (first, last) = (manifest.first_lsn, manifest.last_lsn);
    let store = target.store.as_ref();
    let loss = |key: &object_store::path::Path, reason: String| crate::ArchiveError::DataLoss {
        key: key.to_string(),
        first,
        last,
        reason,
    };

    let segment_key = layout.key(first, last, SEGMENT_SUFFIX);
    let object = objects::get(store, &segment_key)
        .await?
        .ok_or_else(|| loss(&segment_key, "segment object is missing".into()))?;
    let segment = decode_checked(
        &object,
        manifest.segment_object,
        manifest.segment,
        manifest.compression,
    )
    .map_err(|reason| loss(&segment_key, reason))?;
    let facts = check_sealed_segment(
        &segment,
        std::path::Path::new(segment_key.as_ref()),
        manifest.log_id,
        first,
        manifest.prev_hash,
        recorded_at_floor,
    )
    .map_err(|reason| loss(&segment_key, reason))?;
    if (
        facts.last_lsn,
        facts.last_hash,
        facts.record_count,
        facts.last_recorded_at_unix_nanos,
    ) != (
        last,
        manifest.last_hash,
        manifest.record_count,
        manifest.last_recorded_at_unix_nanos,
    ) {
        return Err(loss(
            &segment_key,
            format!(
                "segment holds lsns {first}..={} ending with {}, not what its manifest says",
                facts.last_lsn, facts.last_hash
            ),
        ));
    }

    let index_key = layout.key(first, last, INDEX_SUFFIX);
    let object = objects::get(store, &index_key)
        .await?
        .ok_or_else(|| loss(&index_key, "sidecar object is missing".into()))?;
    let index = decode_checked(
        &object,
        manifest.index_object,
        manifest.index,
        manifest.compression,
    )
    .map_err(|reason| loss(&index_key, reason))?;
    match SegmentIndex::decode(&index) {
        Ok(decoded)
            if decoded.first_lsn == first
                && decoded.last_lsn == last
                && decoded.segment_bytes == manifest.segment.bytes => {}
        Ok(_) => return Err(loss(&index_key, "sidecar describes another segment".into())),
        Err(reason) => {
            return Err(loss(
                &index_key,
                format!("sidecar does not decode: {reason}"),
            ))
        }
    }
    Ok(FetchedSegment {
        segment,
        index,
        compensations: facts.compensations,
    })
}

pub(crate) fn decode_checked(
    object: &Bytes,
    stored: Digest,
    file: Digest,
    compression: crate::manifest::Compression,
) -> Result<Vec<u8>, String> {
    if Digest::of(object) != stored {
        return Err(format!(
            "stored object ({} bytes) does not match its manifest's digest ({} bytes): altered or swapped",
            object.len(),
            stored.bytes
        ));
    }
    let bytes = compress::decode(object, compression, file.bytes)?;
    if Digest::of(&bytes) != file {
        return Err("decoded file does not match its manifest's digest".into());
    }
    Ok(bytes)
}
