//! A store: a directory holding many independent logs, one subdirectory
//! each (`<root>/<log>/wal/`). Log names are validated before they reach a
//! path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::{broadcast, watch};

use crate::background::{BackgroundVerification, VerifierInputs};
use crate::catalog::SEGMENT_EVENTS_CAPACITY;
use crate::codec::genesis_hash;
use crate::error::{LogError, Result};
use crate::fs::{FileSystem, OsFileSystem};
use crate::log::Log;
use crate::options::LogOptions;
use crate::recovery::{analyze, repair, Depth};
use crate::retention::RetentionGate;
use crate::shared::{Counters, Shared};
use crate::types::{Head, LogName};
use crate::writer::{Writer, WriterStart};

/// Name of the directory inside a log's directory that holds its segments.
pub const WAL_DIR_NAME: &str = "wal";

/// Many logs under one root directory.
#[derive(Debug)]
pub struct Store {
    fs: Arc<dyn FileSystem>,
    root: PathBuf,
    options: LogOptions,
    logs: Mutex<HashMap<LogName, Arc<Log>>>,
    /// Held for the store's life: one process per data directory.
    _lock: Box<dyn std::any::Any + Send + Sync>,
}

/// The lock file in a store's root.
pub const LOCK_FILE_NAME: &str = "LOCK";

impl Store {
    /// Opens (creating if needed) a store on the real disk. Logs open lazily.
    ///
    /// # Errors
    /// Invalid options, or the root cannot be created.
    pub fn open(root: &Path, options: LogOptions) -> Result<Store> {
        Store::open_with_fs(Arc::new(OsFileSystem), root, options)
    }

    /// Opens a store through another file system (tests, simulation).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_fs(
        fs: Arc<dyn FileSystem>,
        root: &Path,
        options: LogOptions,
    ) -> Result<Store> {
        options.validate()?;
        fs.create_dir_all(root)
            .map_err(|error| LogError::io("creating", root, error))?;
        let lock_path = root.join(LOCK_FILE_NAME);
        let lock = fs.lock_exclusive(&lock_path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::WouldBlock {
                LogError::StoreLocked {
                    root: root.to_path_buf(),
                    lock: lock_path.clone(),
                }
            } else {
                LogError::io("locking", &lock_path, error)
            }
        })?;
        Ok(Store {
            fs,
            root: root.to_path_buf(),
            options,
            logs: Mutex::new(HashMap::new()),
            _lock: lock,
        })
    }

    /// The store's root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn wal_dir(&self, name: &LogName) -> PathBuf {
        self.root.join(name.as_str()).join(WAL_DIR_NAME)
    }

    /// The log, opened (and recovered) on first use; `None` when it does not
    /// exist.
    ///
    /// # Errors
    /// Corruption found while opening, IO errors.
    pub fn get(&self, name: &LogName) -> Result<Option<Arc<Log>>> {
        self.get_inner(name, false)
    }

    /// The log, created if it does not exist.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub fn get_or_create(&self, name: &LogName) -> Result<Arc<Log>> {
        self.get_inner(name, true)?
            .ok_or_else(|| LogError::LogNotFound(name.to_string()))
    }

    fn get_inner(&self, name: &LogName, create: bool) -> Result<Option<Arc<Log>>> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = logs.get(name) {
            return Ok(Some(Arc::clone(log)));
        }
        let wal_dir = self.wal_dir(name);
        let exists = self
            .fs
            .exists(&wal_dir)
            .map_err(|error| LogError::io("looking for", &wal_dir, error))?;
        if !exists {
            if !create {
                return Ok(None);
            }
            self.fs
                .create_dir_all(&wal_dir)
                .map_err(|error| LogError::io("creating", &wal_dir, error))?;
            let log_dir = self.root.join(name.as_str());
            for directory in [&log_dir, &self.root] {
                self.fs
                    .sync_dir(directory)
                    .map_err(|error| LogError::io("syncing", directory, error))?;
            }
        }
        let log = Arc::new(open_log(
            Arc::clone(&self.fs),
            wal_dir,
            name.clone(),
            self.options.clone(),
        )?);
        logs.insert(name.clone(), Arc::clone(&log));
        Ok(Some(log))
    }

    /// Names of the logs in the store, sorted.
    ///
    /// # Errors
    /// IO errors listing the root.
    pub fn list(&self) -> Result<Vec<LogName>> {
        let names = self
            .fs
            .list_dir(&self.root)
            .map_err(|error| LogError::io("listing", &self.root, error))?;
        let mut logs: Vec<LogName> = names
            .iter()
            .filter_map(|name| LogName::new(name).ok().filter(|log| log.as_str() == name))
            .filter(|log| self.fs.exists(&self.wal_dir(log)).unwrap_or(false))
            .collect();
        logs.sort();
        Ok(logs)
    }

    /// Closes every open log: queued appends finish and are made durable.
    ///
    /// # Errors
    /// The first log whose close failed.
    pub fn close(&self) -> Result<()> {
        let logs: Vec<Arc<Log>> = self
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, log)| log)
            .collect();
        let mut outcome = Ok(());
        for log in logs {
            if let Err(error) = log.close() {
                outcome = outcome.and(Err(error));
            }
        }
        outcome
    }
}

/// Opens a log: plan (read and decide), repair (the only writes), then
/// hand the log to its writer, and start re-hashing in the background the
/// sealed segments the plan trusted.
fn open_log(
    fs: Arc<dyn FileSystem>,
    wal_dir: PathBuf,
    name: LogName,
    options: LogOptions,
) -> Result<Log> {
    let genesis = genesis_hash(name.as_str());
    let depth = if options.verify_on_open {
        Depth::Full
    } else {
        Depth::Quick
    };
    let mut plan = analyze(fs.as_ref(), &wal_dir, genesis, depth, &mut |_| {})?;
    let active_file = repair(fs.as_ref(), &wal_dir, &plan)?;
    let tip = plan.tip;
    let (head, _) = watch::channel(Head {
        lsn: tip.lsn,
        hash: tip.hash,
    });
    let (segment_events, _) = broadcast::channel(SEGMENT_EVENTS_CAPACITY);
    let active = match (plan.active.take(), active_file) {
        (Some(tail), Some(file)) => Some((tail, file)),
        _ => None,
    };
    let unverified = std::mem::take(&mut plan.unverified);
    let torn_tail = plan.torn_tail.take();
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        name: name.clone(),
        wal_dir,
        fs,
        genesis,
        catalog: RwLock::new(plan.catalog),
        head,
        segment_events,
        retention: Arc::new(RetentionGate::default()),
        background: Arc::new(BackgroundVerification::default()),
        closed: std::sync::atomic::AtomicBool::new(false),
    });
    let start = WriterStart {
        active,
        tip,
        ids: plan.ids,
    };
    let (sender, receiver) = flume::bounded(options.queue_depth);
    let writer = Writer::new(Arc::clone(&shared), options.clone(), start);
    let thread = std::thread::Builder::new()
        .name(format!("trail-writer-{name}"))
        .spawn(move || writer.run(&receiver))
        .map_err(|error| {
            LogError::io(
                "starting the writer thread of",
                shared.wal_dir.clone(),
                error,
            )
        })?;
    let verifier = if options.verify_in_background {
        let catalog = Arc::clone(&shared);
        let inputs = VerifierInputs {
            name: shared.name.clone(),
            fs: Arc::clone(&shared.fs),
            genesis: shared.genesis,
            state: Arc::clone(&shared.background),
            catalog: Box::new(move || {
                let catalog = catalog.catalog();
                (catalog.segments.clone(), catalog.prefix.clone())
            }),
        };
        crate::background::start(inputs, unverified)
    } else {
        None
    };
    Ok(Log {
        shared,
        options,
        sender: Mutex::new(Some(sender)),
        writer: Mutex::new(Some(thread)),
        verifier: Mutex::new(verifier),
        torn_tail,
    })
}
