//! The one loop every derived store runs: a thread of its own follows the
//! log from the store's watermark, hands each batch of records to the
//! store, commits (entries and watermark together) at its own pace, and
//! publishes how far it has come. It never touches the writer: it reads
//! durable records only, so a slow store lags instead of slowing appends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};
use trail_log::{Follower, Head, Log, RetentionHold, StoredRecord};

use crate::error::{IndexError, Result};

/// A store that follows a log.
pub trait DerivedStore: Send + 'static {
    /// Its name in logs, metrics and errors ("query index").
    const NAME: &'static str;

    /// Takes in records (in LSN order, directly after the last ones); they
    /// become durable and visible at the next [`DerivedStore::commit`].
    ///
    /// # Errors
    /// The store's failures.
    fn apply(&mut self, records: &[StoredRecord]) -> Result<()>;

    /// Makes what was applied durable and visible, with `through` as the
    /// watermark in the same atomic write.
    ///
    /// # Errors
    /// The store's failures.
    fn commit(&mut self, through: Head) -> Result<()>;
}

/// How a driver paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Records read from the log per step.
    pub batch_records: usize,
    /// Body bytes read per step (past the first record).
    pub batch_bytes: usize,
    /// Longest time records taken in stay uncommitted (invisible).
    pub commit_interval: Duration,
    /// Records taken in that force a commit sooner.
    pub commit_records: usize,
    /// The commit interval while the store is more than `commit_records`
    /// behind the head (catching up): fewer, larger commits, so it catches
    /// up faster (each commit is a new index segment to merge later).
    pub catch_up_commit_interval: Duration,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            batch_records: 4096,
            batch_bytes: 4 << 20,
            commit_interval: Duration::from_millis(100),
            commit_records: 100_000,
            catch_up_commit_interval: Duration::from_secs(1),
        }
    }
}

/// How far a store has come, as its driver publishes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last record committed (`None`: none yet).
    pub applied: Option<Head>,
    /// Why the driver stopped, when it did.
    pub error: Option<String>,
}

impl Progress {
    /// The last LSN committed (0: none).
    #[must_use]
    pub fn lsn(&self) -> u64 {
        self.applied.map_or(0, |head| head.lsn.0)
    }
}

/// Work handed to the driver's thread, run between batches with everything
/// taken in so far committed (a consistent point: snapshots).
pub type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A running driver: its progress, its jobs queue, and its thread, which
/// stops (committing what it took in) when the handle is dropped.
pub struct Driver<S: DerivedStore> {
    log: String,
    progress: watch::Receiver<Progress>,
    wanted: Arc<Wanted>,
    jobs: Option<mpsc::UnboundedSender<Job<S>>>,
    thread: Option<JoinHandle<()>>,
}

impl<S: DerivedStore> Driver<S> {
    /// Starts following `log` with `store`, whose watermark is `from` (the
    /// record it took in last; `None` for an empty store). The caller has
    /// checked `from` against the log.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(log: Arc<Log>, mut store: S, from: Option<Head>, pace: Pace) -> Result<Driver<S>> {
        let (progress_sender, progress) = watch::channel(Progress {
            applied: from,
            error: None,
        });
        let (jobs, job_receiver) = mpsc::unbounded_channel();
        let follower = match from {
            Some(head) => log.follow_from(head.lsn.next(), head.hash),
            None => log.follow(log.first_local_lsn()),
        };
        let log_name = log.name().to_string();
        // Segments the store has not taken in stay on the local disk: the
        // archive removes only what every holder released.
        let hold = log.hold_segments(S::NAME);
        if let Some(from) = from {
            hold.release_through(from.lsn);
        }
        let wanted = Arc::new(Wanted::default());
        let run_wanted = Arc::clone(&wanted);
        let name = format!("trail-{}-{}", short_name(S::NAME), log.name());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut run = Run {
                    follower,
                    hold,
                    pace,
                    progress: progress_sender,
                    jobs: job_receiver,
                    pending: None,
                    pending_records: 0,
                    oldest_pending: None,
                    wanted: run_wanted,
                    last_commit: Instant::now(),
                };
                if let Err(error) = run.run(&mut store) {
                    tracing::error!(log = %log.name(), store = S::NAME, %error, "derived store stopped following the log");
                    run.progress.send_modify(|progress| {
                        progress.error = Some(error.to_string());
                    });
                }
            })
            .map_err(IndexError::io("starting a thread for", std::path::Path::new(S::NAME)))?;
        Ok(Driver {
            log: log_name,
            progress,
            wanted,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// How far the store has come, as a watch to wait on.
    #[must_use]
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Someone waits for `lsn` (read-your-writes, a compensation planning
    /// on it): once the store has taken it in, commit soon (at most every
    /// [`WANTED_COMMIT_GAP`]) instead of at the end of the commit interval.
    pub fn want(&self, lsn: u64) {
        if self.progress.borrow().lsn() >= lsn {
            return;
        }
        self.wanted.lsn.fetch_max(lsn, Ordering::Relaxed);
        self.wanted.notify.notify_one();
    }

    /// Runs `job` on the driver's thread at its next consistent point.
    ///
    /// # Errors
    /// [`IndexError::Stopped`] when the driver is not running.
    pub fn run(&self, job: Job<S>) -> Result<()> {
        let stopped = || IndexError::Stopped {
            store: S::NAME,
            log: self.log.clone(),
            reason: self
                .progress
                .borrow()
                .error
                .clone()
                .unwrap_or_else(|| "it is shutting down".to_owned()),
        };
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(job).map_err(|_| stopped())
    }
}

impl<S: DerivedStore> Drop for Driver<S> {
    fn drop(&mut self) {
        // Closing the queue is the stop signal.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn short_name(name: &str) -> String {
    name.split(' ').next().unwrap_or(name).to_owned()
}

/// The shortest time between two commits made because a reader waits
/// ([`Driver::want`]): under a stream of such readers a store still
/// commits in batches (each tantivy commit is a segment to merge).
pub const WANTED_COMMIT_GAP: Duration = Duration::from_millis(5);

/// The highest LSN a reader waits for, and the driver's wake-up for it.
#[derive(Default)]
struct Wanted {
    lsn: AtomicU64,
    notify: Notify,
}

/// The driver thread's state.
struct Run<S: DerivedStore> {
    follower: Follower,
    /// Released through each commit's watermark.
    hold: RetentionHold,
    pace: Pace,
    progress: watch::Sender<Progress>,
    jobs: mpsc::UnboundedReceiver<Job<S>>,
    /// The last record applied but not yet committed.
    pending: Option<Head>,
    pending_records: usize,
    oldest_pending: Option<Instant>,
    wanted: Arc<Wanted>,
    last_commit: Instant,
}

/// What woke the driver while it waited.
enum Woke<S> {
    Records,
    Wanted,
    Job(Job<S>),
    Timeout,
    Stop,
}

impl<S: DerivedStore> Run<S> {
    fn run(&mut self, store: &mut S) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(IndexError::io(
                "starting a timer for",
                std::path::Path::new(S::NAME),
            ))?;
        loop {
            // Jobs first: they wait on a consistent point, which is now. A
            // closed queue is the stop signal, also under load.
            loop {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        self.commit(store)?;
                        job(store);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return self.commit(store),
                }
            }
            let records = self
                .follower
                .read_available(self.pace.batch_records, self.pace.batch_bytes)?;
            if let Some(last) = records.last() {
                store.apply(&records)?;
                self.pending = Some(Head {
                    lsn: last.record.lsn,
                    hash: last.hash,
                });
                self.pending_records += records.len();
                self.oldest_pending.get_or_insert_with(Instant::now);
                if self.pending_records >= self.pace.commit_records
                    || self.commit_due()
                    || self.wanted_due()
                {
                    self.commit(store)?;
                }
                continue;
            }
            // At the head: wait for records, a job, the commit deadline, a
            // reader waiting for what is pending, or the stop signal. With
            // records pending, new ones wait for the commit deadline (or a
            // reader who wants them): taking them in one group at a time
            // would wake this thread for every group the writer commits,
            // CPU the appenders need, and show nothing sooner (only a
            // commit makes records visible).
            let mut timeout = match self.oldest_pending {
                Some(oldest) => self.pace.commit_interval.saturating_sub(oldest.elapsed()),
                None => Duration::from_secs(3600),
            };
            if self.wanted_pending() {
                timeout = timeout.min(WANTED_COMMIT_GAP.saturating_sub(self.last_commit.elapsed()));
            }
            let take_records = self.oldest_pending.is_none() || self.wanted_beyond_pending();
            let follower = &mut self.follower;
            let jobs = &mut self.jobs;
            let wanted = Arc::clone(&self.wanted);
            let woke = runtime.block_on(async {
                tokio::select! {
                    waited = follower.wait(), if take_records => waited.map(|()| Woke::Records),
                    job = jobs.recv() => Ok(job.map_or(Woke::Stop, Woke::Job)),
                    () = wanted.notify.notified() => Ok(Woke::Wanted),
                    () = tokio::time::sleep(timeout) => Ok(Woke::Timeout),
                }
            });
            match woke {
                // A wanted LSN may be past what was taken in: the loop's
                // top reads what is there and commits when it is due.
                Ok(Woke::Records | Woke::Wanted) => {}
                Ok(Woke::Timeout) => self.commit(store)?,
                Ok(Woke::Job(job)) => {
                    self.commit(store)?;
                    job(store);
                }
                Ok(Woke::Stop) => return self.commit(store),
                // The log closed: keep what was taken in.
                Err(trail_log::LogError::Closed(_)) => return self.commit(store),
                Err(error) => {
                    self.commit(store)?;
                    return Err(error.into());
                }
            }
        }
    }

    /// A reader waits for an LSN that is taken in but not committed.
    fn wanted_pending(&self) -> bool {
        self.pending
            .is_some_and(|pending| pending.lsn.0 >= self.wanted.lsn.load(Ordering::Relaxed))
            && self.wanted.lsn.load(Ordering::Relaxed) > self.progress.borrow().lsn()
    }

    /// A reader waits for an LSN past the last one taken in.
    fn wanted_beyond_pending(&self) -> bool {
        let wanted = self.wanted.lsn.load(Ordering::Relaxed);
        wanted > self.progress.borrow().lsn()
            && self.pending.is_none_or(|pending| wanted > pending.lsn.0)
    }

    /// [`Run::wanted_pending`], and the last commit is long enough ago.
    fn wanted_due(&self) -> bool {
        self.wanted_pending() && self.last_commit.elapsed() >= WANTED_COMMIT_GAP
    }

    fn commit_due(&self) -> bool {
        let far_behind = self.follower.lag() > self.pace.commit_records as u64;
        let interval = if far_behind {
            self.pace.catch_up_commit_interval
        } else {
            self.pace.commit_interval
        };
        self.oldest_pending
            .is_some_and(|oldest| oldest.elapsed() >= interval)
    }

    fn commit(&mut self, store: &mut S) -> Result<()> {
        let Some(through) = self.pending.take() else {
            return Ok(());
        };
        store.commit(through)?;
        self.hold.release_through(through.lsn);
        self.pending_records = 0;
        self.oldest_pending = None;
        self.last_commit = Instant::now();
        self.progress.send_modify(|progress| {
            progress.applied = Some(through);
        });
        Ok(())
    }
}
