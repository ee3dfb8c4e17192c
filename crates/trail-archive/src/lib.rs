//! Trail's segment archive: sealed segments of a log, their sidecars and a
//! manifest per segment in an object store (`file://` or any S3-compatible
//! store), verified on upload, chained by their manifests, and restorable
//! end to end. `docs/FORMAT.md` §14 has the object layout and the manifest's
//! bytes; DESIGN.md "Tiered storage" the rules.
//!
//! - [`ArchiveTarget`] (`target.rs`): where objects go, from a URL.
//! - [`prepare_segment`] + [`upload_segment`] (`upload.rs`): archive one
//!   sealed segment (check it, compress, create-only puts read back).
//! - [`Archiver`] (`archiver.rs`): one log's archiving in a server (hold,
//!   upload when due, release, drop local copies); [`Backoff`] between
//!   failed rounds.
//! - [`load_chain`] (`chain.rs`): a log's manifests, checked as a chain.
//! - [`verify_archive`] (`verify.rs`) and [`restore_log`] (`restore.rs`):
//!   from the bucket alone.
//! - [`SnapshotArchiver`] (`snapshots.rs`): state snapshots archived once
//!   the segment holding their watermark is, checked against the chain;
//!   [`restore_log_from_snapshot`] (`suffix.rs`): the newest snapshot plus
//!   the log's tail.
//! - [`ArchiveReader`] (`read_through.rs`): archived records through a
//!   bounded cache, one download per segment however many readers.
//! - [`ObjectLockClient`] (`lock.rs`): S3 Object Lock (WORM) retention and
//!   legal holds on archived objects, and the start-up probe of whether the
//!   target enforces them.
//!
//! ```
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use trail_archive::{ArchiveTarget, TargetConfig};
//! let directory = tempfile::tempdir()?;
//! let target = ArchiveTarget::open(&TargetConfig {
//!     url: format!("file://{}", directory.path().display()),
//!     ..TargetConfig::default()
//! })?;
//! let report = trail_archive::verify_archive(&target, &trail_log::LogName::new("payments")?, &mut |_| {}).await?;
//! assert_eq!(report.segments, 0);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod archiver;
pub mod backoff;
pub mod chain;
pub mod check;
pub mod compress;
pub mod error;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod objects;
pub mod read_through;
pub mod restore;
pub mod snapshots;
pub mod suffix;
pub mod target;
pub mod upload;
pub mod verify;

pub use archiver::{
    ArchiveStatus, Archiver, ArchiverConfig, HoldDone, UploadDone, ARCHIVE_NICE_DEFAULT,
    UPLOADS_KEPT_MAX,
};
pub use backoff::Backoff;
pub use chain::{load_chain, ChainLink};
pub use compress::{Encoding, ZSTD_LEVEL_DEFAULT};
pub use error::{ArchiveError, LockFailure, Result};
pub use lock::{LockMode, LockPolicy, LockProbe, ObjectLockClient, Retention};
pub use manifest::{Compression, Manifest};
pub use read_through::{ArchiveRead, ArchiveReader, CacheStats, READ_RECORDS_MAX};
pub use restore::restore_log;
pub use snapshots::{SnapshotArchiver, SnapshotManifest, SnapshotStatus};
pub use suffix::{restore_log_from_snapshot, SuffixReport};
pub use target::{
    ArchiveTarget, Multipart, TargetConfig, MULTIPART_PARTS_MAX, MULTIPART_PART_BYTES_MAX,
    MULTIPART_PART_BYTES_MIN,
};
pub use upload::{prepare_segment, upload_segment, PreparedSegment};
pub use verify::{verify_archive, verify_archived_range, ArchiveReport, Progress, RangeReport};
