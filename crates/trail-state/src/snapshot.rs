//! Snapshot files: the whole store as of its watermark in one verifiable file,
//! so a restore starts from the newest good snapshot plus the log's tail.
//! Byte layout: docs/FORMAT.md, "Derived state store", snapshot file.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, SnapshotDefect, StateError};
use crate::input::Watermark;
use crate::layout::{self, validate_entry, LAYOUT_VERSION, VERSION_KEY, WATERMARK_KEY};
use crate::store::{hex, read_lock, sled_error, StateStore};

/// ASCII `TRAILSNP`.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TRAILSNP";
/// Version of the snapshot file layout (the entries inside follow the store
/// layout version, which the header carries separately).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 64;
const DIGEST_LEN: u64 = 32;
/// Entries per sled batch while loading; bounds memory, not correctness (the
/// store is built in a temporary directory and renamed into place).
const LOAD_BATCH: usize = 8192;

/// A snapshot that was written or loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// The store's watermark: the last LSN in the snapshot and its chain hash.
    pub watermark: Watermark,
    pub entries: u64,
    pub bytes: u64,
}

/// A snapshot file found by name; not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub lsn: u64,
}

/// A snapshot that `load_newest_snapshot` did not trust, and why.
#[derive(Debug)]
pub struct SkippedSnapshot {
    pub path: PathBuf,
    pub reason: SnapshotDefect,
}

impl fmt::Display for SkippedSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot {} skipped: {}",
            self.path.display(),
            self.reason
        )
    }
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes through a buffer and hashes everything it writes.
struct HashingWriter {
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    written: u64,
}

impl HashingWriter {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.out.write_all(bytes)
    }
}

fn len_u32(n: usize, path: &Path) -> Result<u32> {
    u32::try_from(n).map_err(|_| StateError::Io {
        op: "write snapshot entry",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "key or value over 4 GiB"),
    })
}

impl StateStore {
    /// Write the whole store as of its watermark to
    /// `snapshot_dir/<lsn:020>.snap`: a temporary file, fsynced, renamed, and
    /// the directory fsynced. Applies wait while it runs (the snapshot must be
    /// one consistent cut); reads do not.
    pub fn write_snapshot(&self, snapshot_dir: impl AsRef<Path>) -> Result<SnapshotInfo> {
        let dir = snapshot_dir.as_ref();
        let _read = read_lock(&self.commit);
        let watermark = self
            .read_watermark()?
            .ok_or_else(|| StateError::NothingToSnapshot {
                dir: self.dir.clone(),
            })?;
        fs::create_dir_all(dir).map_err(io_error("create snapshot directory", dir))?;
        let name = format!("{:020}.snap", watermark.lsn);
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));

        // Count first: the header carries the count and the digest covers the
        // header. Nothing commits in between (the read lock).
        let is_entry = |k: &[u8]| k != VERSION_KEY && k != WATERMARK_KEY;
        let mut count = 0u64;
        for kv in self.db.iter() {
            let (k, _) = kv.map_err(|e| self.sled_error("scan for a snapshot", e))?;
            if is_entry(&k) {
                count += 1;
            }
        }

        let file = File::create(&tmp).map_err(io_error("create", &tmp))?;
        let mut w = HashingWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            written: 0,
        };
        let write_err = io_error("write", &tmp);
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(&SNAPSHOT_MAGIC);
        header.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
        header.extend_from_slice(&watermark.lsn.to_le_bytes());
        header.extend_from_slice(&watermark.hash);
        header.extend_from_slice(&count.to_le_bytes());
        let mut result = w.put(&header);
        let mut written_entries = 0u64;
        for kv in self.db.iter() {
            if result.is_err() {
                break;
            }
            let (k, v) = kv.map_err(|e| self.sled_error("scan for a snapshot", e))?;
            if !is_entry(&k) {
                continue;
            }
            let (kl, vl) = (len_u32(k.len(), &tmp)?, len_u32(v.len(), &tmp)?);
            result = w
                .put(&kl.to_le_bytes())
                .and_then(|()| w.put(&k))
                .and_then(|()| w.put(&vl.to_le_bytes()))
                .and_then(|()| w.put(&v));
            written_entries += 1;
        }
        result.map_err(write_err)?;
        if written_entries != count {
            // Cannot happen under the lock; refuse to leave a file that would
            // fail its own check.
            let _ = fs::remove_file(&tmp);
            return Err(StateError::Io {
                op: "write snapshot",
                path: tmp,
                source: io::Error::other(format!(
                    "store changed during the snapshot: counted {count}, wrote {written_entries}"
                )),
            });
        }
        let digest = w.hasher.finalize();
        w.out
            .write_all(digest.as_bytes())
            .map_err(io_error("write", &tmp))?;
        let bytes = w.written + DIGEST_LEN;
        let file = w.out.into_inner().map_err(|e| StateError::Io {
            op: "write",
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_error("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_error("rename into place", &path))?;
        sync_dir(dir)?;
        tracing::info!(path = %path.display(), lsn = watermark.lsn, entries = count, bytes, "state snapshot written");
        Ok(SnapshotInfo {
            path,
            watermark,
            entries: count,
            bytes,
        })
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

fn snapshot_lsn(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Snapshot files in `dir` by name (`<lsn:020>.snap`), oldest first. A missing
/// directory has none.
pub fn list_snapshots(dir: impl AsRef<Path>) -> Result<Vec<SnapshotFile>> {
    let dir = dir.as_ref();
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(io_error("list", dir))?;
        let name = entry.file_name();
        if let Some(lsn) = name.to_str().and_then(snapshot_lsn) {
            out.push(SnapshotFile {
                path: entry.path(),
                lsn,
            });
        }
    }
    out.sort_by_key(|s| s.lsn);
    Ok(out)
}

/// Keep the newest `keep` snapshots (by name) and delete the rest, plus
/// leftover `.snap.tmp` files older than the newest snapshot (a newer one may
/// be a write in progress). Returns what it deleted.
pub fn prune_snapshots(dir: impl AsRef<Path>, keep: usize) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let snaps = list_snapshots(dir)?;
    let newest = snaps.last().map(|s| s.lsn);
    let mut removed = Vec::new();
    let excess = snaps.len().saturating_sub(keep);
    for s in snaps.into_iter().take(excess) {
        fs::remove_file(&s.path).map_err(io_error("remove", &s.path))?;
        removed.push(s.path);
    }
    if let Some(newest) = newest {
        for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
            let entry = entry.map_err(io_error("list", dir))?;
            let name = entry.file_name();
            let stale = name
                .to_str()
                .and_then(|n| n.strip_suffix(".tmp"))
                .and_then(snapshot_lsn)
                .is_some_and(|lsn| lsn < newest);
            if stale {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_error("remove", &path))?;
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

/// What a full pass over a snapshot found.
struct Scanned {
    watermark: Watermark,
    entries: u64,
    bytes: u64,
    digest: [u8; 32],
}

/// Reads the part of the file the digest covers, hashing as it goes, and never
/// reads (or allocates) past it.
struct BodyReader {
    r: BufReader<File>,
    offset: u64,
    body_len: u64,
    hasher: blake3::Hasher,
}

impl BodyReader {
    fn remaining(&self) -> u64 {
        self.body_len - self.offset
    }

    fn take(&mut self, n: u64) -> std::result::Result<Vec<u8>, SnapshotDefect> {
        debug_assert!(n <= self.remaining());
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|source| SnapshotDefect::Read {
                offset: self.offset,
                source,
            })?;
        self.hasher.update(&buf);
        self.offset += n;
        Ok(buf)
    }

    fn take_array<const N: usize>(&mut self) -> std::result::Result<[u8; N], SnapshotDefect> {
        let v = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    /// Hash whatever is left of the body, so a structure error can still be
    /// told apart from damage by the digest.
    fn drain(&mut self) -> std::result::Result<(), SnapshotDefect> {
        let mut buf = vec![0u8; 1 << 16];
        while self.remaining() > 0 {
            let n = self.remaining().min(buf.len() as u64) as usize;
            self.r
                .read_exact(&mut buf[..n])
                .map_err(|source| SnapshotDefect::Read {
                    offset: self.offset,
                    source,
                })?;
            self.hasher.update(&buf[..n]);
            self.offset += n as u64;
        }
        Ok(())
    }
}

/// Read a whole snapshot: header, every entry (bounds, order, that each value
/// decodes as its key says) and the digest, calling `sink` for each entry.
/// A damaged file is `Ok(Err(defect))`; `Err` is only the sink's own failure.
/// When an entry and the digest both fail, the digest is reported: the bytes
/// are damaged, and the entry error is a consequence.
fn scan(
    path: &Path,
    mut sink: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<std::result::Result<Scanned, SnapshotDefect>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(source) => return Ok(Err(SnapshotDefect::Read { offset: 0, source })),
    };
    let len = match file.metadata() {
        Ok(m) => m.len(),
        Err(source) => return Ok(Err(SnapshotDefect::Read { offset: 0, source })),
    };
    if len < HEADER_LEN + DIGEST_LEN {
        return Ok(Err(SnapshotDefect::TooShort {
            len,
            min: HEADER_LEN + DIGEST_LEN,
        }));
    }
    let mut r = BodyReader {
        r: BufReader::with_capacity(1 << 20, file),
        offset: 0,
        body_len: len - DIGEST_LEN,
        hasher: blake3::Hasher::new(),
    };
    let structure = scan_body(path, &mut r, &mut sink)?;
    let structure = match structure {
        Ok(s) => Ok(s),
        // A read error ends the scan; a wrong magic or version says what the
        // file is (not a snapshot, or another version's) better than a digest.
        Err(
            defect @ (SnapshotDefect::Read { .. }
            | SnapshotDefect::BadMagic { .. }
            | SnapshotDefect::UnsupportedVersion { .. }
            | SnapshotDefect::UnsupportedLayout { .. }),
        ) => return Ok(Err(defect)),
        Err(defect) => {
            if let Err(read) = r.drain() {
                return Ok(Err(read));
            }
            Err(defect)
        }
    };
    let offset = r.offset;
    let mut stored = [0u8; 32];
    if let Err(source) = r.r.read_exact(&mut stored) {
        return Ok(Err(SnapshotDefect::Read { offset, source }));
    }
    let computed = *r.hasher.finalize().as_bytes();
    if stored != computed {
        return Ok(Err(SnapshotDefect::DigestMismatch {
            offset,
            stored: hex(&stored),
            computed: hex(&computed),
        }));
    }
    Ok(structure.map(|(watermark, entries)| Scanned {
        watermark,
        entries,
        bytes: len,
        digest: computed,
    }))
}

type BodyResult = std::result::Result<(Watermark, u64), SnapshotDefect>;

fn scan_body(
    path: &Path,
    r: &mut BodyReader,
    sink: &mut impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<BodyResult> {
    macro_rules! tri {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(d) => return Ok(Err(d)),
            }
        };
    }
    let magic: [u8; 8] = tri!(r.take_array());
    if magic != SNAPSHOT_MAGIC {
        return Ok(Err(SnapshotDefect::BadMagic { found: magic }));
    }
    let version = u32::from_le_bytes(tri!(r.take_array()));
    if version != SNAPSHOT_FORMAT_VERSION {
        return Ok(Err(SnapshotDefect::UnsupportedVersion { version }));
    }
    let layout = u32::from_le_bytes(tri!(r.take_array()));
    if layout != LAYOUT_VERSION {
        return Ok(Err(SnapshotDefect::UnsupportedLayout { layout }));
    }
    let lsn = u64::from_le_bytes(tri!(r.take_array()));
    let hash: [u8; 32] = tri!(r.take_array());
    let count = u64::from_le_bytes(tri!(r.take_array()));
    if let Some(name_lsn) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(snapshot_lsn)
    {
        if name_lsn != lsn {
            return Ok(Err(SnapshotDefect::NameMismatch {
                name_lsn,
                header_lsn: lsn,
            }));
        }
    }
    let mut previous: Option<Vec<u8>> = None;
    for index in 0..count {
        let offset = r.offset;
        let entry_err = |problem: String| SnapshotDefect::Entry {
            index,
            offset,
            problem,
        };
        let field = |r: &mut BodyReader, what: &str| {
            if r.remaining() < 4 {
                return Err(entry_err(format!(
                    "{what} length runs past the end of the entries (entry {index} of {count})"
                )));
            }
            let n = u64::from(u32::from_le_bytes(r.take_array()?));
            if n > r.remaining() {
                return Err(entry_err(format!(
                    "{what} of {n} bytes runs past the end of the entries ({} bytes left)",
                    r.remaining()
                )));
            }
            r.take(n)
        };
        let key = tri!(field(r, "key"));
        let value = tri!(field(r, "value"));
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Ok(Err(entry_err("keys out of order or repeated".to_owned())));
        }
        if let Err(problem) = validate_entry(&key, &value) {
            return Ok(Err(entry_err(problem)));
        }
        sink(&key, &value)?;
        previous = Some(key);
    }
    if r.remaining() != 0 {
        return Ok(Err(SnapshotDefect::TrailingBytes {
            expected: count,
            offset: r.offset,
            extra: r.remaining(),
        }));
    }
    Ok(Ok((Watermark { lsn, hash }, count)))
}

/// Check a snapshot file completely without loading it.
pub fn verify_snapshot(
    path: impl AsRef<Path>,
) -> std::result::Result<SnapshotInfo, SnapshotDefect> {
    let path = path.as_ref();
    match scan(path, |_, _| Ok(())) {
        Ok(Ok(s)) => Ok(SnapshotInfo {
            path: path.to_path_buf(),
            watermark: s.watermark,
            entries: s.entries,
            bytes: s.bytes,
        }),
        Ok(Err(defect)) => Err(defect),
        // The no-op sink never fails.
        Err(e) => Err(SnapshotDefect::Read {
            offset: 0,
            source: io::Error::other(e.to_string()),
        }),
    }
}

/// Build a store in `store_dir` (which must not exist, or be an empty
/// directory) from the newest snapshot in `snapshot_dir` that passes every
/// check. Damaged snapshots are skipped and reported, newest first. Returns
/// `None` (and leaves `store_dir` alone) when no snapshot is good: rebuild
/// from the log then. Open the result with [`StateStore::open`].
pub fn load_newest_snapshot(
    snapshot_dir: impl AsRef<Path>,
    store_dir: impl AsRef<Path>,
) -> Result<(Option<SnapshotInfo>, Vec<SkippedSnapshot>)> {
    let store_dir = store_dir.as_ref();
    match fs::read_dir(store_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StateError::StoreDirNotEmpty {
                    path: store_dir.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {
            return Err(StateError::StoreDirNotEmpty {
                path: store_dir.to_path_buf(),
            })
        }
    }
    let mut skipped = Vec::new();
    for snap in list_snapshots(snapshot_dir)?.into_iter().rev() {
        let checked = match scan(&snap.path, |_, _| Ok(()))? {
            Ok(s) => s,
            Err(reason) => {
                skip(&mut skipped, snap.path, reason);
                continue;
            }
        };
        match build(&snap.path, store_dir, &checked)? {
            Ok(()) => {
                tracing::info!(path = %snap.path.display(), lsn = checked.watermark.lsn, "state store loaded from snapshot");
                let info = SnapshotInfo {
                    path: snap.path,
                    watermark: checked.watermark,
                    entries: checked.entries,
                    bytes: checked.bytes,
                };
                return Ok((Some(info), skipped));
            }
            Err(reason) => skip(&mut skipped, snap.path, reason),
        }
    }
    Ok((None, skipped))
}

fn skip(skipped: &mut Vec<SkippedSnapshot>, path: PathBuf, reason: SnapshotDefect) {
    let s = SkippedSnapshot { path, reason };
    tracing::warn!("{s}");
    skipped.push(s);
}

/// Load a checked snapshot into a temporary directory beside `store_dir`,
/// then rename it into place, so a crash never leaves a half-built store
/// where the driver would open it.
fn build(
    path: &Path,
    store_dir: &Path,
    checked: &Scanned,
) -> Result<std::result::Result<(), SnapshotDefect>> {
    let mut tmp_name = store_dir.as_os_str().to_owned();
    tmp_name.push(".loading");
    let tmp = PathBuf::from(tmp_name);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_error("remove", &tmp))?;
    }
    let db = sled::Config::new()
        .path(&tmp)
        .mode(sled::Mode::HighThroughput)
        // No background flusher: the driver flushes at its own pace, and
        // the flusher thread would keep the directory locked for up to a
        // flush interval after the store is dropped, so a reopen (or the
        // driver's delete-and-rebuild) right after a drop would fail.
        .flush_every_ms(None)
        .open()
        .map_err(|e| sled_error(&tmp, "create", e))?;
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    let scanned = scan(path, |k, v| {
        batch.insert(k, v);
        pending += 1;
        if pending == LOAD_BATCH {
            pending = 0;
            db.apply_batch(std::mem::take(&mut batch))
                .map_err(|e| sled_error(&tmp, "load a batch", e))?;
        }
        Ok(())
    })?;
    let defect = match scanned {
        Ok(s) if s.digest == checked.digest => None,
        Ok(s) => Some(SnapshotDefect::ChangedWhileLoading {
            first: hex(&checked.digest),
            second: hex(&s.digest),
        }),
        Err(d) => Some(d),
    };
    if let Some(defect) = defect {
        drop(db);
        fs::remove_dir_all(&tmp).map_err(io_error("remove", &tmp))?;
        return Ok(Err(defect));
    }
    batch.insert(VERSION_KEY, &LAYOUT_VERSION.to_le_bytes()[..]);
    batch.insert(
        WATERMARK_KEY,
        &layout::encode_watermark(&checked.watermark)[..],
    );
    db.apply_batch(batch)
        .map_err(|e| sled_error(&tmp, "load a batch", e))?;
    db.flush().map_err(|e| sled_error(&tmp, "flush", e))?;
    drop(db);
    if store_dir.exists() {
        fs::remove_dir(store_dir).map_err(io_error("remove empty directory", store_dir))?;
    }
    fs::rename(&tmp, store_dir).map_err(io_error("rename into place", store_dir))?;
    if let Some(parent) = store_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(Ok(()))
}
