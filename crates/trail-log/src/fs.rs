//! The file seam. Every byte the log reads or writes goes through
//! [`FileSystem`], so tests can swap the real disk ([`OsFileSystem`]) for one
//! that fails on purpose ([`crate::fault::FaultyFileSystem`]) or that keeps
//! written and durable bytes apart and crashes at will (the simulation in
//! `trail-log`'s tests and fuzz targets).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A file opened for reading.
pub trait ReadFile: Send + Sync {
    /// Reads up to `buffer.len()` bytes at `offset`; returns how many were read
    /// (0 at the end of the file).
    ///
    /// # Errors
    /// Any IO error.
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The file's length in bytes.
    ///
    /// # Errors
    /// Any IO error.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file holds no bytes.
    ///
    /// # Errors
    /// Any IO error.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buffer` from `offset` or fails with `UnexpectedEof`.
    ///
    /// # Errors
    /// Any IO error, or `UnexpectedEof` past the end of the file.
    fn read_exact_at(&self, mut buffer: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buffer.is_empty() {
            match self.read_at(buffer, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the file",
                    ))
                }
                Ok(read) => {
                    buffer = &mut buffer[read..];
                    offset += read as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// A file opened for reading and writing.
pub trait WriteFile: ReadFile {
    /// Writes all of `buffer` at `offset`.
    ///
    /// # Errors
    /// Any IO error; some of the bytes may have been written.
    fn write_all_at(&mut self, buffer: &[u8], offset: u64) -> io::Result<()>;

    /// Makes written data durable (fdatasync).
    ///
    /// # Errors
    /// Any IO error. After a failed sync nothing about the written data is
    /// known: callers must stop writing (fail-stop), never retry.
    fn sync_data(&mut self) -> io::Result<()>;

    /// Makes written data and metadata (the length) durable (fsync).
    ///
    /// # Errors
    /// As [`WriteFile::sync_data`].
    fn sync_all(&mut self) -> io::Result<()>;

    /// Shrinks or extends the file.
    ///
    /// # Errors
    /// Any IO error.
    fn set_len(&mut self, length: u64) -> io::Result<()>;
}

/// Directory and file operations the log needs.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    ///
    /// # Errors
    /// Any IO error.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// The names of the entries in a directory, in no particular order.
    ///
    /// # Errors
    /// Any IO error (`NotFound` when the directory does not exist).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Opens an existing file for reading.
    ///
    /// # Errors
    /// Any IO error.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;

    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    /// Any IO error.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;

    /// Creates a file, truncating one that exists.
    ///
    /// # Errors
    /// Any IO error.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;

    /// Renames a file, replacing the target.
    ///
    /// # Errors
    /// Any IO error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// Any IO error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes a directory's entries (creations, renames, removals) durable.
    ///
    /// # Errors
    /// Any IO error.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Whether a path exists.
    ///
    /// # Errors
    /// Any IO error other than "not found".
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// A hint that the cached pages of the file at `path` will not be read
    /// soon (a sealed segment the readers are past): the kernel may drop
    /// them. The file's contents do not change. A file system without a
    /// page cache does nothing.
    fn drop_cache(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    /// Takes an exclusive lock on a file (created if needed), held until the
    /// returned guard is dropped, so two processes never write one store.
    /// File systems that live in one process need no lock.
    ///
    /// # Errors
    /// `WouldBlock` when another holder has the lock; any IO error.
    fn lock_exclusive(&self, _path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        Ok(Box::new(()))
    }
}

/// The real disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFileSystem;

struct OsFile(File);

impl ReadFile for OsFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buffer, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl WriteFile for OsFile {
    fn write_all_at(&mut self, buffer: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buffer, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        self.0.set_len(length)
    }
}

impl FileSystem for OsFileSystem {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(OsFile(File::open(path)?)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(OsFile(
            OpenOptions::new().read(true).write(true).open(path)?,
        )))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    #[cfg(target_os = "linux")]
    fn drop_cache(&self, path: &Path) -> io::Result<()> {
        let file = File::open(path)?;
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "locked by another process",
            )),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    }
}

/// Zeros are written in chunks of this size, so zeroing any range needs
/// bounded memory.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Writes zeros over `[from, to)` of a file (no sync).
///
/// # Errors
/// Any IO error; part of the range may have been written.
pub fn write_zeros(file: &mut dyn WriteFile, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![
        0u8;
        ZERO_CHUNK_BYTES
            .min(usize::try_from(to.saturating_sub(from)).unwrap_or(ZERO_CHUNK_BYTES))
    ];
    let mut offset = from;
    while offset < to {
        let length = (to - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..length], offset)?;
        offset += length as u64;
    }
    Ok(())
}

/// Replaces the file at `path` with `bytes`, atomically and durably: written
/// to `<path>.tmp` and synced, renamed into place, and the directory synced.
/// A crash leaves the old file or the new one (and perhaps a `.tmp`, which
/// recovery deletes).
///
/// # Errors
/// Any IO error; the file at `path` is then unchanged or wholly replaced.
pub fn write_file_durably(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = fs.create(&temporary)?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    fs.rename(&temporary, path)?;
    match path.parent() {
        Some(directory) => fs.sync_dir(directory),
        None => Ok(()),
    }
}
