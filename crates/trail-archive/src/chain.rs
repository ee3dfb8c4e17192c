//! A log's manifests as a chain: listed from the bucket, each decoded and
//! checked against its key, and each linked to the one before (dense LSNs,
//! the previous segment's last hash, the previous manifest's digest). A
//! manifest that is missing, swapped or altered breaks the chain.

use object_store::path::Path;
use trail_log::codec::genesis_hash;
use trail_log::{LogName, Lsn};

use crate::error::{ArchiveError, Result};
use crate::layout::{LogLayout, MANIFEST_SUFFIX};
use crate::manifest::Manifest;
use crate::objects;
use crate::target::ArchiveTarget;

/// Most objects one log's listing may hold (three per segment): at the
/// default 64 MiB segments, about 21 TiB of log.
pub const LOG_OBJECTS_MAX: usize = 1 << 20;

/// A manifest and its key.
#[derive(Clone, Debug)]
pub struct ChainLink {
    /// Where it is stored.
    pub key: Path,
    /// What it says.
    pub manifest: Manifest,
}

impl ChainLink {
    pub(crate) fn data_loss(&self, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::DataLoss {
            key: self.key.to_string(),
            first: self.manifest.first_lsn,
            last: self.manifest.last_lsn,
            reason: reason.into(),
        }
    }
}

/// The manifests of `log`, oldest first, each checked against its key and
/// the one before it. An empty archive is an empty chain.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails; [`ArchiveError::DataLoss`]
/// naming the manifest's key and LSN range for any break.
pub async fn load_chain(target: &ArchiveTarget, log: &LogName) -> Result<Vec<ChainLink>> {
    let layout = target.layout(log.as_str());
    let objects = objects::list(
        target.store.as_ref(),
        layout.segments_dir(),
        LOG_OBJECTS_MAX,
    )
    .await?;
    let mut ranges: Vec<(Lsn, Lsn, Path)> = objects
        .into_iter()
        .filter_map(|meta| {
            let (first, last) = layout.parse_manifest_key(&meta.location)?;
            Some((first, last, meta.location))
        })
        .collect();
    ranges.sort_by_key(|(first, last, _)| (*first, *last));
    let mut chain: Vec<ChainLink> = Vec::with_capacity(ranges.len());
    for (first, last, key) in ranges {
        let bytes = objects::get(target.store.as_ref(), &key).await?;
        let link = decode_link(&layout, key, first, last, bytes.as_deref())?;
        check_link(log, chain.last(), &link)?;
        chain.push(link);
    }
    Ok(chain)
}

fn decode_link(
    layout: &LogLayout,
    key: Path,
    first: Lsn,
    last: Lsn,
    bytes: Option<&[u8]>,
) -> Result<ChainLink> {
    let loss = |reason: String| ArchiveError::DataLoss {
        key: key.to_string(),
        first,
        last,
        reason,
    };
    let bytes = bytes.ok_or_else(|| loss("manifest vanished while it was being read".into()))?;
    let manifest = Manifest::decode(bytes).map_err(loss)?;
    if (manifest.first_lsn, manifest.last_lsn) != (first, last) {
        return Err(loss(format!(
            "manifest describes lsns {}..={} (swapped with another segment's?)",
            manifest.first_lsn, manifest.last_lsn
        )));
    }
    debug_assert_eq!(layout.key(first, last, MANIFEST_SUFFIX), key);
    Ok(ChainLink { key, manifest })
}

fn check_link(log: &LogName, previous: Option<&ChainLink>, link: &ChainLink) -> Result<()> {
    let manifest = &link.manifest;
    if manifest.log_id != genesis_hash(log.as_str()) {
        return Err(link.data_loss(format!("manifest belongs to another log than {log}")));
    }
    match previous {
        None => {
            if manifest.first_lsn != Lsn::FIRST {
                return Err(link.data_loss(format!(
                    "the archive starts at lsn {}: lsns 1..{} are missing",
                    manifest.first_lsn, manifest.first_lsn
                )));
            }
            if manifest.prev_manifest != [0; 32] || manifest.prev_hash != genesis_hash(log.as_str())
            {
                return Err(
                    link.data_loss("the first manifest does not start from the log's genesis")
                );
            }
        }
        Some(previous) => {
            let expected = previous.manifest.last_lsn.next();
            if manifest.first_lsn != expected {
                return Err(link.data_loss(format!(
                    "the archive jumps from lsn {} to {}: the segment holding lsns {expected}..{} is missing",
                    previous.manifest.last_lsn, manifest.first_lsn, manifest.first_lsn
                )));
            }
            if manifest.prev_hash != previous.manifest.last_hash {
                return Err(link.data_loss(format!(
                    "links to hash {} but the previous segment ({}) ends with {}",
                    manifest.prev_hash, previous.key, previous.manifest.last_hash
                )));
            }
            if manifest.prev_manifest != previous.manifest.digest() {
                return Err(link.data_loss(format!(
                    "names a previous manifest other than {} (altered or replaced)",
                    previous.key
                )));
            }
        }
    }
    Ok(())
}
