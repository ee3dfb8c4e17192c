//! A log's derived stores: where they live, how they are opened and
//! checked against the log before anyone trusts them, and their drivers.
//!
//! Each store's watermark is checked against the log at open: a watermark
//! past the head, or naming a record whose hash is not the log's, means the
//! store was derived from another log (a restore, a copied directory), and
//! it is rebuilt from nothing. A store that does not open is rebuilt too.
//! Past that, the follower checks every link from the watermark on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use trail_log::{Head, Log, LogName};
use trail_state::{SkippedSnapshot, SnapshotInfo, StateStore};

use crate::driver::{Driver, Pace, Progress};
use crate::error::{IndexError, Result};
use crate::filter::Filter;
use crate::query_index::{LsnPage, Opened, PageRequest, QueryIndexReader, QueryIndexWriter};
use crate::state::{head_of, SnapshotPolicy, StateFollower};

/// Where a log's derived stores live: `<root>/<log>/derived/{query,state}`
/// and `<root>/<log>/snapshots/` (docs/FORMAT.md).
#[derive(Clone, Debug)]
pub struct DerivedPaths {
    /// The query index's directory.
    pub query: PathBuf,
    /// The state store's directory.
    pub state: PathBuf,
    /// The state snapshots' directory.
    pub snapshots: PathBuf,
}

impl DerivedPaths {
    /// The paths for `log` in the store at `root`.
    #[must_use]
    pub fn new(root: &Path, log: &LogName) -> DerivedPaths {
        let log_dir = root.join(log.as_str());
        DerivedPaths {
            query: log_dir.join("derived").join("query"),
            state: log_dir.join("derived").join("state"),
            snapshots: log_dir.join("snapshots"),
        }
    }
}

/// How the derived stores run.
#[derive(Clone, Copy, Debug)]
pub struct DerivedOptions {
    /// The drivers' pace.
    pub pace: Pace,
    /// When the state store snapshots itself.
    pub snapshots: SnapshotPolicy,
    /// The nice value (0..=19) of every thread the stores run on: their
    /// drivers, tantivy's indexing and merge threads, sled's flusher. A
    /// follower may lag but must not slow appends; when the cores are
    /// busy, a positive value lets the gRPC and writer threads go first
    /// and the stores catch up in the gaps (docs/DECISIONS.md #40).
    pub nice: i32,
    /// Whether those threads also run in the idle scheduling class (Linux
    /// `SCHED_IDLE`): they get a core only when no append work wants it,
    /// and a waking gRPC or writer thread takes it from them at once,
    /// where a nice value only shares the core unevenly
    /// (docs/DECISIONS.md #42).
    pub idle: bool,
}

impl Default for DerivedOptions {
    fn default() -> DerivedOptions {
        DerivedOptions {
            pace: Pace::default(),
            snapshots: SnapshotPolicy::default(),
            nice: DERIVED_NICE_DEFAULT,
            idle: DERIVED_IDLE_DEFAULT,
        }
    }
}

/// The default [`DerivedOptions::nice`].
pub const DERIVED_NICE_DEFAULT: i32 = 10;

/// The default [`DerivedOptions::idle`].
pub const DERIVED_IDLE_DEFAULT: bool = true;

/// A log's running derived stores.
pub struct DerivedLog {
    name: LogName,
    query_reader: Arc<QueryIndexReader>,
    state_store: Arc<StateStore>,
    // Each driver holds its own handle on its store; dropping a driver
    // stops its thread after a last commit and joins it.
    query: Driver<QueryIndexWriter>,
    state: Driver<StateFollower>,
}

/// Whether `watermark` names a record of `log` with the same hash; the
/// reason when it does not. A watermark before the local part of the log
/// (archived) cannot be read here: the follower checks the next link.
fn check_watermark(log: &Log, watermark: Head) -> Result<(), String> {
    let head = log.head();
    if watermark.lsn > head.lsn {
        return Err(format!(
            "its watermark (lsn {}) is past the log's head {}",
            watermark.lsn, head.lsn
        ));
    }
    if watermark.lsn < log.first_local_lsn() {
        return Ok(());
    }
    match log.read(watermark.lsn, watermark.lsn).next() {
        Some(Ok(stored)) if stored.hash == watermark.hash => Ok(()),
        Some(Ok(_)) => Err(format!(
            "its watermark's hash is not the hash of the log's record {}",
            watermark.lsn
        )),
        Some(Err(error)) => Err(format!("its watermark's record does not read: {error}")),
        None => Err(format!("the log has no record {}", watermark.lsn)),
    }
}

/// Opens the query index, rebuilding it when it cannot be trusted.
fn open_query(log: &Log, path: &Path) -> Result<(QueryIndexWriter, Option<Head>)> {
    let (mut writer, opened) = QueryIndexWriter::open(path)?;
    let watermark = match opened {
        Opened::Created(reason) => {
            tracing::warn!(log = %log.name(), path = %path.display(), %reason, "query index rebuilt from the log");
            None
        }
        Opened::Existing(None) => None,
        Opened::Existing(Some(watermark)) => match check_watermark(log, watermark) {
            Ok(()) => Some(watermark),
            Err(reason) => {
                tracing::warn!(log = %log.name(), path = %path.display(), %reason, "query index rebuilt from the log");
                writer.clear()?;
                None
            }
        },
    };
    Ok((writer, watermark))
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(IndexError::io("removing", path)(error)),
    }
}

/// Opens the state store. One that does not open, or whose watermark is
/// not the log's, is removed; then the newest valid snapshot whose
/// watermark is the log's is loaded (damaged ones are reported and
/// skipped), or the store starts empty.
fn open_state(log: &Log, paths: &DerivedPaths) -> Result<(StateStore, Option<Head>)> {
    let distrust = |reason: String| {
        tracing::warn!(log = %log.name(), path = %paths.state.display(), %reason, "state store not trusted: rebuilt");
    };
    match StateStore::open(&paths.state) {
        Ok(store) => match store.watermark()?.map(head_of) {
            None if !paths.snapshots.exists() => return Ok((store, None)),
            None => {}
            Some(watermark) => match check_watermark(log, watermark) {
                Ok(()) => return Ok((store, Some(watermark))),
                Err(reason) => distrust(reason),
            },
        },
        Err(trail_state::StateError::Damaged { detail, .. }) => distrust(detail),
        Err(error) => return Err(error.into()),
    }
    remove_dir(&paths.state)?;
    let (loaded, skipped) = trail_state::load_newest_snapshot(&paths.snapshots, &paths.state)?;
    for SkippedSnapshot { path, reason } in skipped {
        tracing::error!(log = %log.name(), snapshot = %path.display(), %reason, "damaged snapshot skipped");
    }
    if let Some(info) = loaded {
        let store = StateStore::open(&paths.state)?;
        let watermark = head_of(info.watermark);
        match check_watermark(log, watermark) {
            Ok(()) => {
                tracing::info!(log = %log.name(), lsn = info.watermark.lsn, "state store loaded from a snapshot; replaying the tail");
                return Ok((store, Some(watermark)));
            }
            Err(reason) => {
                tracing::warn!(log = %log.name(), snapshot = %info.path.display(), %reason, "snapshot is of another log: not used");
                drop(store);
                remove_dir(&paths.state)?;
            }
        }
    }
    Ok((StateStore::open(&paths.state)?, None))
}

impl DerivedLog {
    /// Opens `log`'s derived stores under `root`, checks them against the
    /// log, and starts their drivers. Blocking IO.
    ///
    /// The stores are opened on a thread of their own that first lowers
    /// its priority to [`DerivedOptions::nice`] and [`DerivedOptions::idle`]:
    /// every thread they start (drivers, tantivy's, sled's) inherits it.
    ///
    /// # Errors
    /// A store that cannot be created or written.
    pub fn open(root: &Path, log: Arc<Log>, options: DerivedOptions) -> Result<DerivedLog> {
        if options.nice == 0 && !options.idle {
            return Self::open_here(root, log, options);
        }
        let name = format!("trail-open-{}", log.name());
        std::thread::scope(|scope| {
            let opener = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    lower_priority(options, &log);
                    Self::open_here(root, log, options)
                })
                .map_err(IndexError::io(
                    "starting a thread to open the stores in",
                    root,
                ))?;
            opener
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn open_here(root: &Path, log: Arc<Log>, options: DerivedOptions) -> Result<DerivedLog> {
        let paths = DerivedPaths::new(root, log.name());
        let (query_writer, query_from) = open_query(&log, &paths.query)?;
        let query_reader = query_writer.reader();
        let (state_store, state_from) = open_state(&log, &paths)?;
        let state_store = Arc::new(state_store);
        let state_follower = StateFollower::new(
            Arc::clone(&state_store),
            &paths.snapshots,
            options.snapshots,
        );
        let query = Driver::start(Arc::clone(&log), query_writer, query_from, options.pace)?;
        let state = Driver::start(Arc::clone(&log), state_follower, state_from, options.pace)?;
        Ok(DerivedLog {
            name: log.name().clone(),
            query_reader,
            state_store,
            query,
            state,
        })
    }

    /// The log these stores follow.
    #[must_use]
    pub fn name(&self) -> &LogName {
        &self.name
    }

    /// How far the query index has come.
    #[must_use]
    pub fn query_progress(&self) -> watch::Receiver<Progress> {
        self.query.progress()
    }

    /// How far the state store has come.
    #[must_use]
    pub fn state_progress(&self) -> watch::Receiver<Progress> {
        self.state.progress()
    }

    /// A reader waits until the query index has `lsn`: commit it soon.
    pub fn want_query(&self, lsn: u64) {
        self.query.want(lsn);
    }

    /// A reader waits until the state store has `lsn`: commit it soon.
    pub fn want_state(&self, lsn: u64) {
        self.state.want(lsn);
    }

    /// One page of LSNs matching `filter`. Blocking (index reads).
    ///
    /// # Errors
    /// Index failures.
    pub fn search(&self, filter: &Filter, page: PageRequest) -> Result<LsnPage> {
        self.query_reader.search(filter, page)
    }

    /// The state store, for reads.
    #[must_use]
    pub fn state(&self) -> &StateStore {
        &self.state_store
    }

    /// Asks the state driver for a snapshot at its next consistent point.
    ///
    /// # Errors
    /// [`IndexError::Stopped`] when the driver is not running.
    pub fn snapshot(&self) -> Result<oneshot::Receiver<Result<SnapshotInfo>>> {
        let (reply, answer) = oneshot::channel();
        self.state
            .run(Box::new(move |follower: &mut StateFollower| {
                let _ = reply.send(follower.snapshot());
            }))?;
        Ok(answer)
    }
}

/// Lowers the calling thread's priority as `options` say; a failure is
/// reported and the stores run at the priority they have.
fn lower_priority(options: DerivedOptions, log: &Log) {
    // The class first: entering it may reset the nice value.
    if options.idle {
        if let Err(error) = trail_log::priority::make_current_thread_idle() {
            tracing::warn!(log = %log.name(), %error, "derived stores run in the normal scheduling class: could not enter the idle one");
        }
    }
    let nice = options.nice;
    if let Err(error) = trail_log::priority::lower_current_thread(nice) {
        tracing::warn!(log = %log.name(), nice, %error, "derived stores run at normal priority: could not lower it");
    }
}
