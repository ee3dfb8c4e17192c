//! [`SimFileSystem`]: an in-memory [`FileSystem`] that keeps what was written
//! apart from what is durable, and can crash, tear, freeze and fail on purpose.
//!
//! The model of a disk it implements (stricter than most real file systems,
//! so that it finds what they would forgive only most of the time):
//! - a file's bytes and length become durable only at `sync_data`/`sync_all`
//!   on a handle of that file;
//! - a directory entry (a created, renamed or removed name, including a new
//!   sub-directory) becomes durable only at `sync_dir` of its parent;
//! - at a crash, everything not durable is lost, except that a *tearing*
//!   crash keeps a random subset of the not-yet-durable sectors of each file
//!   (and possibly its new length), and a random prefix of each directory's
//!   not-yet-durable entry changes, as a real disk and journal may;
//! - a crash invalidates every handle opened before it: they fail with EIO
//!   forever, so a writer thread left over from before the crash can never
//!   touch the files of the next generation;
//! - the disk can *freeze* at the Nth operation of a class (the moment the
//!   machine dies): that operation (a write possibly half done) and every one
//!   after it fails with EIO until [`SimFileSystem::crash`];
//! - a single operation can fail with EIO, and a capacity makes anything that
//!   needs new space fail with ENOSPC.
//!
//! Everything random comes from one seeded generator, so a seed replays
//! exactly (given the same sequence of calls).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use trail_log::fs::{FileSystem, ReadFile, WriteFile};

use crate::rng::SimRng;

const EIO: i32 = 5;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const ENOSPC: i32 = 28;

/// The sector size a tearing crash works in unless told otherwise: the unit
/// a disk writes atomically.
pub const SECTOR_BYTES_DEFAULT: usize = 512;

/// How the simulated disk behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Seeds every random choice (tearing, partial writes).
    pub seed: u64,
    /// The unit of tearing: a crash keeps or drops whole sectors.
    pub sector_bytes: usize,
    /// Whether [`SimFileSystem::crash`] may keep some not-yet-durable sectors
    /// and directory changes (true) or drops all of them (false).
    pub tear: bool,
}

impl SimOptions {
    /// Tearing crashes, 512-byte sectors.
    #[must_use]
    pub fn seeded(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            sector_bytes: SECTOR_BYTES_DEFAULT,
            tear: true,
        }
    }
}

/// Which operations a fault trigger counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// Every operation below.
    Any,
    /// `read_at`, `len`, `list_dir`, `exists`, `open_read`.
    Read,
    /// `write_all_at`, `set_len`.
    Write,
    /// `sync_data`, `sync_all`, `sync_dir`.
    Sync,
    /// `create_dir_all`, `create`, `open_write`, `rename`, `remove_file`.
    Metadata,
}

/// How many operations of each class the file system has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// All operations.
    pub any: u64,
    /// Reads (see [`OpClass::Read`]).
    pub reads: u64,
    /// Writes (see [`OpClass::Write`]).
    pub writes: u64,
    /// Syncs (see [`OpClass::Sync`]).
    pub syncs: u64,
    /// Metadata operations (see [`OpClass::Metadata`]).
    pub metadata: u64,
}

impl OpCounts {
    fn bump(&mut self, class: OpClass) {
        self.any += 1;
        match class {
            OpClass::Any => {}
            OpClass::Read => self.reads += 1,
            OpClass::Write => self.writes += 1,
            OpClass::Sync => self.syncs += 1,
            OpClass::Metadata => self.metadata += 1,
        }
    }
}

/// What a crash did, for tests that want to know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Not-yet-durable sectors that survived (tearing).
    pub sectors_kept: u64,
    /// Not-yet-durable sectors that were lost.
    pub sectors_dropped: u64,
    /// Not-yet-durable directory changes that survived.
    pub directory_changes_kept: u64,
    /// Not-yet-durable directory changes that were lost.
    pub directory_changes_dropped: u64,
}

type InodeId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(InodeId),
    Directory,
}

#[derive(Debug, Clone)]
enum DirectoryChange {
    Insert(String, Entry),
    Remove(String),
    /// A rename inside one directory: atomic, as POSIX promises.
    Rename {
        from: String,
        to: String,
    },
}

impl DirectoryChange {
    fn apply(&self, entries: &mut BTreeMap<String, Entry>) {
        match self {
            DirectoryChange::Insert(name, entry) => {
                entries.insert(name.clone(), *entry);
            }
            DirectoryChange::Remove(name) => {
                entries.remove(name);
            }
            DirectoryChange::Rename { from, to } => {
                if let Some(entry) = entries.remove(from) {
                    entries.insert(to.clone(), entry);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Directory {
    /// What the running process sees.
    entries: BTreeMap<String, Entry>,
    /// What survives a crash.
    durable: BTreeMap<String, Entry>,
    /// Changes since the last `sync_dir`, in order.
    pending: Vec<DirectoryChange>,
}

#[derive(Debug, Default)]
struct Inode {
    /// What the running process reads back.
    written: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Byte ranges a failed sync left readable but never to be synced
    /// until written again ([`SimFileSystem::set_failed_sync_forgets`]).
    unpersisted: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, Copy)]
struct Trigger {
    class: OpClass,
    remaining: u64,
}

impl Trigger {
    /// Counts one operation; true when this is the one that fires.
    fn fires(&mut self, class: OpClass) -> bool {
        if self.class != OpClass::Any && self.class != class {
            return false;
        }
        if self.remaining == 0 {
            return true;
        }
        self.remaining -= 1;
        false
    }
}

enum Fault {
    /// The disk was already frozen.
    Frozen,
    /// The disk froze at this operation.
    Freeze,
    /// This one operation fails.
    Fail,
}

impl Fault {
    fn error() -> io::Error {
        io::Error::from_raw_os_error(EIO)
    }
}

struct State {
    options: SimOptions,
    rng: SimRng,
    generation: u64,
    directories: BTreeMap<PathBuf, Directory>,
    inodes: BTreeMap<InodeId, Inode>,
    next_inode: InodeId,
    counts: OpCounts,
    frozen: bool,
    freeze_trigger: Option<Trigger>,
    fail_trigger: Option<Trigger>,
    capacity_bytes: Option<u64>,
    crashes: u64,
    injected_failures: u64,
    /// [`SimFileSystem::set_failed_sync_forgets`].
    failed_sync_forgets: bool,
}

impl State {
    fn new(options: SimOptions) -> State {
        let mut directories = BTreeMap::new();
        directories.insert(PathBuf::from("/"), Directory::default());
        State {
            rng: SimRng::new(options.seed),
            options,
            generation: 0,
            directories,
            inodes: BTreeMap::new(),
            next_inode: 1,
            counts: OpCounts::default(),
            frozen: false,
            freeze_trigger: None,
            fail_trigger: None,
            failed_sync_forgets: false,
            capacity_bytes: None,
            crashes: 0,
            injected_failures: 0,
        }
    }

    /// Counts an operation and decides whether it fails.
    fn begin(&mut self, class: OpClass) -> Result<(), Fault> {
        if self.frozen {
            return Err(Fault::Frozen);
        }
        self.counts.bump(class);
        if let Some(trigger) = &mut self.freeze_trigger {
            if trigger.fires(class) {
                self.freeze_trigger = None;
                self.frozen = true;
                self.injected_failures += 1;
                return Err(Fault::Freeze);
            }
        }
        if let Some(trigger) = &mut self.fail_trigger {
            if trigger.fires(class) {
                self.fail_trigger = None;
                self.injected_failures += 1;
                return Err(Fault::Fail);
            }
        }
        Ok(())
    }

    fn begin_io(&mut self, class: OpClass) -> io::Result<()> {
        self.begin(class).map_err(|_| Fault::error())
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| inode.written.len() as u64)
            .sum()
    }

    /// Fails with ENOSPC when growing by `additional` bytes would pass the capacity.
    fn reserve(&self, additional: u64) -> io::Result<()> {
        if let Some(capacity) = self.capacity_bytes {
            if additional > 0 && self.used_bytes().saturating_add(additional) > capacity {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
        }
        Ok(())
    }

    fn directory(&self, path: &Path) -> io::Result<&Directory> {
        self.directories.get(path).ok_or_else(|| not_found(path))
    }

    fn directory_mut(&mut self, path: &Path) -> io::Result<&mut Directory> {
        self.directories
            .get_mut(path)
            .ok_or_else(|| not_found(path))
    }

    fn lookup(&self, path: &Path) -> io::Result<Option<Entry>> {
        let (parent, name) = split(path)?;
        match self.directories.get(&parent) {
            Some(directory) => Ok(directory.entries.get(&name).copied()),
            None => Ok(None),
        }
    }

    fn file(&self, path: &Path) -> io::Result<InodeId> {
        match self.lookup(path)? {
            Some(Entry::File(inode)) => Ok(inode),
            Some(Entry::Directory) => Err(io::Error::from_raw_os_error(EISDIR)),
            None => Err(not_found(path)),
        }
    }

    fn change(&mut self, directory: &Path, change: DirectoryChange) -> io::Result<()> {
        let directory = self.directory_mut(directory)?;
        change.apply(&mut directory.entries);
        directory.pending.push(change);
        Ok(())
    }

    fn inode(&self, inode: InodeId) -> io::Result<&Inode> {
        self.inodes.get(&inode).ok_or_else(Fault::error)
    }

    fn inode_mut(&mut self, inode: InodeId) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&inode).ok_or_else(Fault::error)
    }

    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        let mut current = PathBuf::from("/");
        for name in normal_components(path)? {
            let next = current.join(&name);
            let existing = self.directory(&current)?.entries.get(&name).copied();
            match existing {
                Some(Entry::Directory) => {}
                Some(Entry::File(_)) => return Err(io::Error::from_raw_os_error(ENOTDIR)),
                None => {
                    self.change(&current, DirectoryChange::Insert(name, Entry::Directory))?;
                    self.directories.insert(next.clone(), Directory::default());
                }
            }
            current = next;
        }
        Ok(())
    }

    fn create(&mut self, path: &Path) -> io::Result<InodeId> {
        let (parent, name) = split(path)?;
        match self.directory(&parent)?.entries.get(&name).copied() {
            Some(Entry::File(inode)) => {
                self.inode_mut(inode)?.written.clear();
                Ok(inode)
            }
            Some(Entry::Directory) => Err(io::Error::from_raw_os_error(EISDIR)),
            None => {
                self.reserve(1)?;
                let inode = self.next_inode;
                self.next_inode += 1;
                self.inodes.insert(inode, Inode::default());
                self.change(&parent, DirectoryChange::Insert(name, Entry::File(inode)))?;
                Ok(inode)
            }
        }
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let inode = self.file(from)?;
        let (from_parent, from_name) = split(from)?;
        let (to_parent, to_name) = split(to)?;
        match self.directory(&to_parent)?.entries.get(&to_name) {
            Some(Entry::Directory) => return Err(io::Error::from_raw_os_error(EISDIR)),
            Some(Entry::File(_)) | None => {}
        }
        if from_parent == to_parent {
            if from_name != to_name {
                self.change(
                    &from_parent,
                    DirectoryChange::Rename {
                        from: from_name,
                        to: to_name,
                    },
                )?;
            }
        } else {
            self.change(
                &to_parent,
                DirectoryChange::Insert(to_name, Entry::File(inode)),
            )?;
            self.change(&from_parent, DirectoryChange::Remove(from_name))?;
        }
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        self.file(path)?;
        let (parent, name) = split(path)?;
        self.change(&parent, DirectoryChange::Remove(name))
    }

    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        let directory = self.directory_mut(&normalize(path)?)?;
        for change in std::mem::take(&mut directory.pending) {
            change.apply(&mut directory.durable);
        }
        Ok(())
    }

    fn crash(&mut self) -> CrashReport {
        let mut report = CrashReport::default();
        let tear = self.options.tear;
        // How much of what was not durable survives varies from crash to crash.
        let keep_percent = if tear {
            [0, 10, 50, 90, 100][self.rng.index(5)]
        } else {
            0
        };
        for directory in self.directories.values_mut() {
            let pending = std::mem::take(&mut directory.pending);
            let kept = if tear {
                self.rng.index(pending.len() + 1)
            } else {
                0
            };
            for change in &pending[..kept] {
                change.apply(&mut directory.durable);
            }
            report.directory_changes_kept += kept as u64;
            report.directory_changes_dropped += (pending.len() - kept) as u64;
            directory.entries = directory.durable.clone();
        }
        // Only what is reachable from the root through durable entries survives.
        let mut reachable_directories = BTreeSet::new();
        let mut reachable_inodes = BTreeSet::new();
        let mut stack = vec![PathBuf::from("/")];
        while let Some(path) = stack.pop() {
            if let Some(directory) = self.directories.get(&path) {
                for (name, entry) in &directory.entries {
                    match entry {
                        Entry::Directory => stack.push(path.join(name)),
                        Entry::File(inode) => {
                            reachable_inodes.insert(*inode);
                        }
                    }
                }
                reachable_directories.insert(path);
            }
        }
        self.directories
            .retain(|path, _| reachable_directories.contains(path));
        self.inodes
            .retain(|inode, _| reachable_inodes.contains(inode));
        let sector_bytes = self.options.sector_bytes.max(1);
        for inode in self.inodes.values_mut() {
            let content = survivor(
                inode,
                &mut self.rng,
                keep_percent,
                sector_bytes,
                &mut report,
            );
            inode.written.clone_from(&content);
            inode.durable = content;
            inode.unpersisted.clear();
        }
        self.generation += 1;
        self.crashes += 1;
        self.frozen = false;
        self.freeze_trigger = None;
        self.fail_trigger = None;
        report
    }
}

/// What of a file survives a crash: its durable bytes, plus (when tearing)
/// a random subset of the sectors written since, and maybe its new length.
fn survivor(
    inode: &Inode,
    rng: &mut SimRng,
    keep_percent: u64,
    sector_bytes: usize,
    report: &mut CrashReport,
) -> Vec<u8> {
    let mut content = inode.durable.clone();
    if inode.written == inode.durable {
        return content;
    }
    if keep_percent == 0 {
        report.sectors_dropped += inode.written.len().div_ceil(sector_bytes) as u64;
        return content;
    }
    if inode.written.len() != inode.durable.len() && rng.percent(keep_percent) {
        content.resize(inode.written.len(), 0);
    }
    let mut start = 0;
    while start < content.len() {
        let end = (start + sector_bytes).min(content.len());
        let written_end = end.min(inode.written.len());
        if start < written_end && inode.written[start..written_end] != content[start..written_end] {
            if rng.percent(keep_percent) {
                content[start..written_end].copy_from_slice(&inode.written[start..written_end]);
                report.sectors_kept += 1;
            } else {
                report.sectors_dropped += 1;
            }
        }
        start = end;
    }
    content
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{} does not exist in the simulated file system",
            path.display()
        ),
    )
}

/// The normal components of a path (`.` skipped, `..` applied), relative to the root.
fn normal_components(path: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "path prefixes are not supported",
                ))
            }
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                names.pop();
            }
            Component::Normal(name) => match name.to_str() {
                Some(name) => names.push(name.to_owned()),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "path is not UTF-8",
                    ))
                }
            },
        }
    }
    Ok(names)
}

fn normalize(path: &Path) -> io::Result<PathBuf> {
    let mut normalized = PathBuf::from("/");
    for name in normal_components(path)? {
        normalized.push(name);
    }
    Ok(normalized)
}

/// The parent directory and file name of a path; the root has none.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let mut names = normal_components(path)?;
    let name = names
        .pop()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root has no name"))?;
    let mut parent = PathBuf::from("/");
    for component in names {
        parent.push(component);
    }
    Ok((parent, name))
}

/// The simulated disk. Clones share it: a test keeps one clone to crash and
/// inspect, and hands another (as `Arc<dyn FileSystem>`) to the store.
#[derive(Clone)]
pub struct SimFileSystem {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimFileSystem")
            .field("seed", &state.options.seed)
            .field("generation", &state.generation)
            .field("files", &state.inodes.len())
            .field("frozen", &state.frozen)
            .finish_non_exhaustive()
    }
}

impl SimFileSystem {
    /// An empty disk with tearing crashes and 512-byte sectors.
    #[must_use]
    pub fn new(seed: u64) -> SimFileSystem {
        SimFileSystem::with_options(SimOptions::seeded(seed))
    }

    /// An empty disk.
    #[must_use]
    pub fn with_options(options: SimOptions) -> SimFileSystem {
        SimFileSystem {
            state: Arc::new(Mutex::new(State::new(options))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a failing test) leaves a state that
        // is still consistent for inspection: every mutation is done in place
        // before any fallible step that could panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The machine dies and restarts: everything not durable is lost (or,
    /// with tearing, partly kept), every open handle fails with EIO from now
    /// on, and a freeze or pending failure is cleared.
    pub fn crash(&self) -> CrashReport {
        self.lock().crash()
    }

    /// Freezes the disk at the operation of `class` after the next `count`
    /// such operations: it fails with EIO (a write may be half done, as when
    /// power fails during it), and so does every operation after it, from any
    /// handle, until [`SimFileSystem::crash`].
    pub fn freeze_after(&self, class: OpClass, count: u64) {
        self.lock().freeze_trigger = Some(Trigger {
            class,
            remaining: count,
        });
    }

    /// The process dies and restarts, the machine does not: every open
    /// handle fails with EIO from now on, but everything written (durable or
    /// not) stays, as in the OS page cache. A pending failure is cleared; a
    /// frozen disk stays frozen (only [`SimFileSystem::crash`] thaws it).
    pub fn restart_process(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.fail_trigger = None;
    }

    /// Failures injected so far (fired freezes and single failures): a test
    /// tells an expected IO error from a bug by whether this moved.
    #[must_use]
    pub fn injected_failures(&self) -> u64 {
        self.lock().injected_failures
    }

    /// Clears any armed freeze or single failure that has not fired.
    pub fn disarm(&self) {
        let mut state = self.lock();
        state.freeze_trigger = None;
        state.fail_trigger = None;
    }

    /// Test set-up: creates a directory and its parents, durably.
    ///
    /// # Errors
    /// When a component is a file.
    pub fn install_directory(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let path = normalize(path)?;
        state.create_dir_all(&path)?;
        let mut directory = Some(path.as_path());
        while let Some(path) = directory {
            state.sync_dir(path)?;
            directory = path.parent();
        }
        Ok(())
    }

    /// Whether the disk is frozen.
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        self.lock().frozen
    }

    /// Freezes the disk now.
    pub fn freeze(&self) {
        self.lock().frozen = true;
    }

    /// The operation of `class` after the next `count` such operations fails
    /// with EIO, once (a failed write writes a random part of its buffer, a
    /// failed sync makes nothing durable).
    pub fn fail_after(&self, class: OpClass, count: u64) {
        self.lock().fail_trigger = Some(Trigger {
            class,
            remaining: count,
        });
    }

    /// Linux's page cache after a failed writeback: with `forgets`, a sync
    /// that fails leaves the bytes it did not make durable readable, but
    /// marked clean, so later syncs of the file do not write them either;
    /// only writing them again does (until then a crash loses them). Off
    /// by default: a failed sync then only makes nothing durable, and a
    /// later sync makes everything durable.
    pub fn set_failed_sync_forgets(&self, forgets: bool) {
        self.lock().failed_sync_forgets = forgets;
    }

    /// Limits the bytes all files may hold together; `None` for no limit.
    /// Creating a file or growing one past the limit fails with ENOSPC;
    /// writes into space a file already has succeed.
    pub fn set_capacity_bytes(&self, capacity: Option<u64>) {
        self.lock().capacity_bytes = capacity;
    }

    /// Bytes all files hold now (written view).
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Operations seen so far.
    #[must_use]
    pub fn counts(&self) -> OpCounts {
        self.lock().counts
    }

    /// Crashes so far.
    #[must_use]
    pub fn crashes(&self) -> u64 {
        self.lock().crashes
    }

    /// Every file path the running process would see, sorted.
    #[must_use]
    pub fn files(&self) -> Vec<PathBuf> {
        let state = self.lock();
        let mut files = Vec::new();
        for (path, directory) in &state.directories {
            for (name, entry) in &directory.entries {
                if let Entry::File(_) = entry {
                    files.push(path.join(name));
                }
            }
        }
        files
    }

    /// A file's bytes as the running process reads them.
    ///
    /// # Errors
    /// `NotFound` when there is no such file.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let inode = state.file(path)?;
        Ok(state.inode(inode)?.written.clone())
    }

    /// A file's bytes as they would survive a crash without tearing (the
    /// file itself survives only if its directory entry is durable).
    ///
    /// # Errors
    /// `NotFound` when there is no such file.
    pub fn durable_contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let inode = state.file(path)?;
        Ok(state.inode(inode)?.durable.clone())
    }

    /// Test set-up: creates (or replaces) a file with `bytes`, durably,
    /// together with its parent directories. Counts no operation and ignores
    /// faults and capacity.
    ///
    /// # Errors
    /// When a parent is a file.
    pub fn install_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let (parent, _) = split(path)?;
        state.create_dir_all(&parent)?;
        let inode = state.create(path)?;
        let inode = state.inode_mut(inode)?;
        inode.written = bytes.to_vec();
        inode.durable = bytes.to_vec();
        // Make the whole chain of directory entries durable.
        let mut directory = Some(parent.as_path());
        while let Some(path) = directory {
            state.sync_dir(path)?;
            directory = path.parent();
        }
        Ok(())
    }

    /// Damage: changes a file's bytes in place, both as read and as durable
    /// (bit rot, or an attacker with the disk). The closure may also resize.
    ///
    /// # Errors
    /// `NotFound` when there is no such file.
    pub fn corrupt(&self, path: &Path, change: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state.file(path)?;
        let inode = state.inode_mut(inode)?;
        change(&mut inode.written);
        inode.durable.clone_from(&inode.written);
        Ok(())
    }

    fn handle(&self, inode: InodeId, generation: u64) -> SimFile {
        SimFile {
            state: Arc::clone(&self.state),
            inode,
            generation,
        }
    }
}

impl FileSystem for SimFileSystem {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_io(OpClass::Metadata)?;
        state.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut state = self.lock();
        state.begin_io(OpClass::Read)?;
        let path = normalize(path)?;
        if let Some(Entry::File(_)) = state.lookup(&path).ok().flatten() {
            return Err(io::Error::from_raw_os_error(ENOTDIR));
        }
        Ok(state.directory(&path)?.entries.keys().cloned().collect())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let mut state = self.lock();
        state.begin_io(OpClass::Read)?;
        let inode = state.file(path)?;
        let generation = state.generation;
        drop(state);
        Ok(Box::new(self.handle(inode, generation)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let mut state = self.lock();
        state.begin_io(OpClass::Metadata)?;
        let inode = state.file(path)?;
        let generation = state.generation;
        drop(state);
        Ok(Box::new(self.handle(inode, generation)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let mut state = self.lock();
        state.begin_io(OpClass::Metadata)?;
        let inode = state.create(path)?;
        let generation = state.generation;
        drop(state);
        Ok(Box::new(self.handle(inode, generation)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_io(OpClass::Metadata)?;
        state.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_io(OpClass::Metadata)?;
        state.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_io(OpClass::Sync)?;
        state.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let mut state = self.lock();
        state.begin_io(OpClass::Read)?;
        let path = normalize(path)?;
        if path == Path::new("/") {
            return Ok(true);
        }
        Ok(state.lookup(&path)?.is_some())
    }
}

/// A handle on one file of one generation of the simulated disk.
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: InodeId,
    generation: u64,
}

impl SimFile {
    /// The state, or EIO when the handle is from before a crash.
    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.generation != self.generation {
            return Err(Fault::error());
        }
        Ok(state)
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.lock()?;
        let forgets = state.failed_sync_forgets;
        if let Err(fault) = state.begin(OpClass::Sync) {
            if forgets && matches!(fault, Fault::Fail) {
                let inode = state.inode_mut(self.inode)?;
                let ranges = differing_ranges(&inode.written, &inode.durable);
                inode.unpersisted.extend(ranges);
            }
            return Err(Fault::error());
        }
        let inode = state.inode_mut(self.inode)?;
        if inode.unpersisted.is_empty() {
            inode.durable.clone_from(&inode.written);
            return Ok(());
        }
        // Bytes a failed sync forgot keep what the disk had (zeros past
        // its old end).
        let mut durable = inode.written.clone();
        for &(start, end) in &inode.unpersisted {
            let end = end.min(durable.len());
            let start = start.min(end);
            let kept = inode.durable.len().clamp(start, end);
            durable[start..kept].copy_from_slice(&inode.durable[start..kept]);
            durable[kept..end].fill(0);
        }
        inode.durable = durable;
        Ok(())
    }
}

impl ReadFile for SimFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.lock()?;
        state.begin_io(OpClass::Read)?;
        let written = &state.inode(self.inode)?.written;
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= written.len() {
            return Ok(0);
        }
        let count = buffer.len().min(written.len() - start);
        buffer[..count].copy_from_slice(&written[start..start + count]);
        Ok(count)
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.lock()?;
        state.begin_io(OpClass::Read)?;
        Ok(state.inode(self.inode)?.written.len() as u64)
    }
}

impl WriteFile for SimFile {
    fn write_all_at(&mut self, buffer: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.lock()?;
        let fault = state.begin(OpClass::Write);
        // A write cut short by a fault or a freeze lands a random sector-aligned part.
        let count = match fault {
            Ok(()) => buffer.len(),
            Err(Fault::Frozen) => 0,
            Err(Fault::Freeze | Fault::Fail) => {
                let sectors = buffer.len().div_ceil(state.options.sector_bytes.max(1));
                let kept = state.rng.index(sectors + 1) * state.options.sector_bytes.max(1);
                kept.min(buffer.len())
            }
        };
        let start = usize::try_from(offset).map_err(|_| io::Error::from_raw_os_error(ENOSPC))?;
        let end = start
            .checked_add(count)
            .ok_or_else(|| io::Error::from_raw_os_error(ENOSPC))?;
        let current = state.inode(self.inode)?.written.len();
        if end > current {
            state.reserve((end - current) as u64)?;
        }
        if count > 0 {
            let inode = state.inode_mut(self.inode)?;
            if end > inode.written.len() {
                inode.written.resize(end, 0);
            }
            inode.written[start..end].copy_from_slice(&buffer[..count]);
            inode.unpersisted = without_range(&inode.unpersisted, start, end);
        }
        if fault.is_err() {
            return Err(Fault::error());
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        let mut state = self.lock()?;
        state.begin_io(OpClass::Write)?;
        let length = usize::try_from(length).map_err(|_| io::Error::from_raw_os_error(ENOSPC))?;
        let current = state.inode(self.inode)?.written.len();
        if length > current {
            state.reserve((length - current) as u64)?;
        }
        state.inode_mut(self.inode)?.written.resize(length, 0);
        Ok(())
    }
}

/// The maximal byte ranges where `written` differs from `durable` (bytes
/// past `durable`'s end count as differing).
fn differing_ranges(written: &[u8], durable: &[u8]) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut open: Option<usize> = None;
    for (index, byte) in written.iter().enumerate() {
        let differs = durable.get(index) != Some(byte);
        match (differs, open) {
            (true, None) => open = Some(index),
            (false, Some(start)) => {
                ranges.push((start, index));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        ranges.push((start, written.len()));
    }
    ranges
}

/// `ranges` with `[start, end)` taken out.
fn without_range(ranges: &[(usize, usize)], start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut kept = Vec::with_capacity(ranges.len() + 1);
    for &(from, to) in ranges {
        if to <= start || from >= end {
            kept.push((from, to));
            continue;
        }
        if from < start {
            kept.push((from, start));
        }
        if to > end {
            kept.push((end, to));
        }
    }
    kept
}
