//! Object names (DESIGN.md "Tiered storage", FORMAT.md §14.1):
//! `<prefix>/<log>/segments/<first:020>-<last:020>.{seg,idx,manifest}`,
//! and state snapshots (FORMAT.md §14.6)
//! `<prefix>/<log>/snapshots/<watermark:020>.{snap,manifest}`.
//! Zero-padded decimal LSNs make names sort in LSN order.

use object_store::path::Path;
use trail_log::Lsn;

/// Suffix of a compressed segment object.
pub const SEGMENT_SUFFIX: &str = "seg";
/// Suffix of a compressed sidecar object.
pub const INDEX_SUFFIX: &str = "idx";
/// Suffix of a manifest object.
pub const MANIFEST_SUFFIX: &str = "manifest";
/// Suffix of a (possibly compressed) state snapshot object.
pub const SNAPSHOT_SUFFIX: &str = "snap";

/// Where one log's objects live inside a target.
#[derive(Clone, Debug)]
pub struct LogLayout {
    segments_dir: Path,
    snapshots_dir: Path,
}

impl LogLayout {
    /// The layout of `log` under `prefix` (empty for none).
    #[must_use]
    pub fn new(prefix: &Path, log: &str) -> LogLayout {
        LogLayout {
            segments_dir: prefix.clone().join(log).join("segments"),
            snapshots_dir: prefix.clone().join(log).join("snapshots"),
        }
    }

    /// The directory listed to find a log's manifests.
    #[must_use]
    pub fn segments_dir(&self) -> &Path {
        &self.segments_dir
    }

    /// The directory listed to find a log's archived state snapshots.
    #[must_use]
    pub fn snapshots_dir(&self) -> &Path {
        &self.snapshots_dir
    }

    /// The key of one object of the state snapshot whose watermark is
    /// `lsn` ([`SNAPSHOT_SUFFIX`] or [`MANIFEST_SUFFIX`]).
    #[must_use]
    pub fn snapshot_key(&self, lsn: Lsn, suffix: &str) -> Path {
        self.snapshots_dir
            .clone()
            .join(format!("{:020}.{suffix}", lsn.0))
    }

    /// The watermark LSN when `key` is one of this log's snapshot
    /// manifests.
    #[must_use]
    pub fn parse_snapshot_manifest_key(&self, key: &Path) -> Option<Lsn> {
        let stem = key.filename()?.strip_suffix(".manifest")?;
        (stem.len() == 20 && stem.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| stem.parse::<u64>().ok().map(Lsn))
            .flatten()
    }

    /// The key of one object of the segment `first..=last`.
    #[must_use]
    pub fn key(&self, first: Lsn, last: Lsn, suffix: &str) -> Path {
        self.segments_dir
            .clone()
            .join(format!("{:020}-{:020}.{suffix}", first.0, last.0))
    }

    /// The segment's LSN range when `key` is one of this log's manifests.
    #[must_use]
    pub fn parse_manifest_key(&self, key: &Path) -> Option<(Lsn, Lsn)> {
        let name = key.filename()?;
        let stem = name.strip_suffix(".manifest")?;
        let (first, last) = stem.split_once('-')?;
        let digits = |text: &str| {
            (text.len() == 20 && text.bytes().all(|byte| byte.is_ascii_digit()))
                .then(|| text.parse::<u64>().ok())
                .flatten()
        };
        Some((Lsn(digits(first)?), Lsn(digits(last)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse() {
        let layout = LogLayout::new(&Path::from("trail/prod"), "payments");
        let key = layout.key(Lsn(1), Lsn(4710), MANIFEST_SUFFIX);
        assert_eq!(
            key.as_ref(),
            "trail/prod/payments/segments/00000000000000000001-00000000000000004710.manifest"
        );
        assert_eq!(layout.parse_manifest_key(&key), Some((Lsn(1), Lsn(4710))));
        assert_eq!(
            layout.parse_manifest_key(&layout.key(Lsn(1), Lsn(2), SEGMENT_SUFFIX)),
            None
        );
        let snapshot = layout.snapshot_key(Lsn(4711), MANIFEST_SUFFIX);
        assert_eq!(
            snapshot.as_ref(),
            "trail/prod/payments/snapshots/00000000000000004711.manifest"
        );
        assert_eq!(
            layout.parse_snapshot_manifest_key(&snapshot),
            Some(Lsn(4711))
        );
        assert_eq!(layout.parse_snapshot_manifest_key(&key), None);
        assert_eq!(
            layout.parse_snapshot_manifest_key(&layout.snapshot_key(Lsn(1), SNAPSHOT_SUFFIX)),
            None
        );
        let empty = LogLayout::new(&Path::default(), "a");
        assert_eq!(
            empty.key(Lsn(3), Lsn(9), SEGMENT_SUFFIX).as_ref(),
            "a/segments/00000000000000000003-00000000000000000009.seg"
        );
    }
}
