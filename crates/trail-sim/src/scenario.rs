//! A model checker for the log: runs a sequence of operations (appends,
//! atomic batches, crashes at chosen points, process restarts, injected IO
//! failures, reads, idempotent retries) against the real [`Log`] on a
//! [`SimFileSystem`], and after every reopen compares what the log holds with
//! a simple reference model.
//!
//! What must hold after every reopen:
//! - every acknowledged record is there, at its LSN, with its hash (and every
//!   record before an acknowledged one, or seen before a clean close);
//! - the log is one dense, chain-valid prefix (`verify` finds nothing), and
//!   every record reads back;
//! - beyond what must survive there is only what some unacknowledged append
//!   attempted, in the order attempted, each atomic batch whole or absent;
//! - an acknowledged event id retried with the same content is answered with
//!   its original receipt, with other content refused as `AlreadyExists`.
//!
//! The same [`Op`] list drives the seeded property test (operations drawn from
//! [`SimRng`]) and the `log_model` fuzz target (operations from `arbitrary`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use trail_log::codec::Record;
use trail_log::{
    Clock, Durability, ErrorKind, EventInput, Log, LogError, LogName, LogOptions, Lsn, Receipt,
    RecordHash, Store,
};

use crate::fs::{OpClass, SimFileSystem, SimOptions};
use crate::rng::SimRng;

/// Segment size for simulation: the smallest the log accepts, so that a few
/// hundred appends seal several segments.
pub const SEGMENT_BYTES: u64 = 64 * 1024;
/// Largest event the scenario appends (a few fill a segment quickly).
pub const EVENT_BYTES_MAX: usize = 4096;
/// Most events in one scenario append.
pub const EVENTS_PER_APPEND_MAX: usize = 6;
/// Reopen attempts in a row before a scenario gives up (each failed one
/// crashes the disk first); bounded so a bug cannot loop forever.
const OPEN_ATTEMPTS_MAX: usize = 8;

/// One step of a scenario. Numbers are taken modulo their useful range, so
/// any value is valid (the fuzzer picks them freely).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Append `count % 6 + 1` events of sizes drawn from `size`.
    Append {
        /// Number of events (modulo).
        count: u8,
        /// Size seed of the events.
        size: u16,
        /// All-or-nothing.
        atomic: bool,
    },
    /// Appends large events until about a segment's worth is written.
    Fill,
    /// The machine crashes now (between operations).
    Crash,
    /// The disk freezes at the sync after the next `after % 8` syncs; the
    /// scenario notices at the next failing append and crashes the machine.
    FreezeAtSync {
        /// Syncs that still succeed.
        after: u8,
    },
    /// The disk freezes at the write after the next `after % 16` writes (the
    /// frozen write lands a random sector-aligned part).
    FreezeAtWrite {
        /// Writes that still succeed.
        after: u8,
    },
    /// One write or sync fails with EIO after the next `after % 8` of its
    /// kind; the log must fail-stop and lose nothing acknowledged.
    FailOnce {
        /// Fail a write (true) or a sync (false).
        write: bool,
        /// Operations of that kind that still succeed.
        after: u8,
    },
    /// The process is killed and restarted; the machine keeps running (what
    /// was written but not synced stays, as in the page cache).
    Restart,
    /// Clean close and reopen.
    Reopen,
    /// Crash, then crash again at the `after % 64`th file operation of the
    /// recovery that follows, then recover again.
    CrashDuringRecovery {
        /// Operations of the first recovery that still succeed.
        after: u8,
    },
    /// Reads `len % 64 + 1` records from `from` (modulo the head) and compares.
    Read {
        /// First LSN (modulo the head).
        from: u16,
        /// Records to read (modulo).
        len: u16,
    },
    /// Re-appends an acknowledged event with the same content: must return
    /// the original receipt.
    RetryAcknowledged {
        /// Which one (modulo the acknowledged count).
        index: u16,
    },
    /// Appends an acknowledged event id with other content: must be refused.
    ConflictAcknowledged {
        /// Which one (modulo the acknowledged count).
        index: u16,
    },
}

impl Op {
    /// A random operation, weighted towards appends.
    pub fn random(rng: &mut SimRng) -> Op {
        let small = |rng: &mut SimRng| u8::try_from(rng.below(256)).unwrap_or(0);
        let wide = |rng: &mut SimRng| u16::try_from(rng.below(65_536)).unwrap_or(0);
        match rng.below(100) {
            0..=49 => Op::Append {
                count: small(rng),
                size: wide(rng),
                atomic: rng.percent(40),
            },
            50..=52 => Op::Fill,
            53..=57 => Op::Crash,
            58..=64 => Op::FreezeAtSync { after: small(rng) },
            65..=68 => Op::FreezeAtWrite { after: small(rng) },
            69..=71 => Op::FailOnce {
                write: rng.percent(50),
                after: small(rng),
            },
            72..=75 => Op::Restart,
            76..=78 => Op::Reopen,
            79..=81 => Op::CrashDuringRecovery { after: small(rng) },
            82..=91 => Op::Read {
                from: wide(rng),
                len: wide(rng),
            },
            92..=97 => Op::RetryAcknowledged { index: wide(rng) },
            _ => Op::ConflictAcknowledged { index: wide(rng) },
        }
    }
}

/// A property of the log that did not hold.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// An acknowledged (or otherwise must-survive) record is gone or different.
    #[error("lost durable record at lsn {lsn} (event {event_id:?}): {detail}")]
    LostDurable {
        /// Where.
        lsn: u64,
        /// Its event id.
        event_id: String,
        /// What was found instead.
        detail: String,
    },
    /// A record the model cannot explain, or records in an impossible order.
    #[error("unexpected record at lsn {lsn}: {detail}")]
    Unexpected {
        /// Where.
        lsn: u64,
        /// Why it is impossible.
        detail: String,
    },
    /// An atomic batch is present in part.
    #[error("atomic batch torn: {detail}")]
    TornBatch {
        /// Which batch, which records.
        detail: String,
    },
    /// `verify` found damage in a log that should be clean.
    #[error("verify reported damage after recovery: {detail}")]
    Verify {
        /// The failure.
        detail: String,
    },
    /// A receipt, head or read result disagrees with the model.
    #[error("wrong answer from {operation}: {detail}")]
    WrongAnswer {
        /// The operation.
        operation: &'static str,
        /// Expected vs found.
        detail: String,
    },
    /// The log returned an error when no fault was injected.
    #[error("unexpected error from {operation}: {error}")]
    UnexpectedError {
        /// The operation.
        operation: &'static str,
        /// The error.
        error: LogError,
    },
    /// The log does not open again after a crash (with no fault pending).
    #[error("log does not reopen after {attempts} attempts: {error}")]
    DoesNotReopen {
        /// Attempts made.
        attempts: usize,
        /// The last error.
        error: LogError,
    },
}

/// What a scenario did, for the test's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records acknowledged.
    pub acknowledged: u64,
    /// Appends that failed (faults, crashes).
    pub failed_appends: u64,
    /// Machine crashes.
    pub crashes: u64,
    /// Reopens (after crashes, restarts, closes).
    pub reopens: u64,
    /// Records in the log at the end.
    pub final_head: u64,
}

/// A failed scenario: the violation plus the trace of operations that led to it.
#[derive(Debug, thiserror::Error)]
#[error("{violation}\n--- trace (last {} steps) ---\n{trace}", TRACE_LINES_MAX)]
pub struct Failure {
    /// What went wrong.
    pub violation: Violation,
    /// The last operations and what they returned.
    pub trace: String,
}

const TRACE_LINES_MAX: usize = 60;

/// A clock that advances 1 ms per reading: deterministic, never decreasing.
#[derive(Debug)]
pub struct StepClock(AtomicI64);

impl StepClock {
    /// Starts at an arbitrary fixed instant.
    #[must_use]
    pub fn new() -> StepClock {
        StepClock(AtomicI64::new(1_800_000_000_000_000_000))
    }
}

impl Default for StepClock {
    fn default() -> Self {
        StepClock::new()
    }
}

impl Clock for StepClock {
    fn now_unix_nanos(&self) -> i64 {
        self.0.fetch_add(1_000_000, Ordering::Relaxed)
    }

    fn monotonic(&self) -> std::time::Duration {
        // No timers run in the scenario (no age-based sealing, Sync mode).
        std::time::Duration::ZERO
    }
}

/// Options the scenario opens its log with.
#[must_use]
pub fn sim_log_options() -> LogOptions {
    LogOptions {
        durability: Durability::Sync,
        segment_bytes: SEGMENT_BYTES,
        segment_age_max: None,
        queue_depth: 16,
        group_bytes_max: 16 * 1024,
        append: trail_log::AppendLimits {
            events_per_request_max: 64,
            event_bytes_max: EVENT_BYTES_MAX,
            event_id_bytes_max: 64,
        },
        verify_on_open: true,
        verify_in_background: false,
        prepare_segments_ahead: false,
        // No preparer here, so no roll waits for one.
        spare_wait: std::time::Duration::from_secs(30),
        // Deterministic: the writer never polls on a clock of its own.
        writer_spin: std::time::Duration::ZERO,
        cached_sealed_segments: 4,
        clock: Arc::new(StepClock::new()),
        same_content: Arc::new(trail_log::SameBytes),
    }
}

#[derive(Debug, Clone)]
struct ModelRecord {
    event_id: String,
    event: Vec<u8>,
    hash: RecordHash,
    /// Must be there after any crash (acknowledged, before an acknowledged
    /// one, or present at a clean close).
    durable: bool,
    /// The append it came from (for atomic batches).
    append: u64,
    atomic: bool,
    /// Events in its append.
    append_len: usize,
}

#[derive(Debug, Clone)]
struct Attempt {
    /// Sequence number of the append.
    append: u64,
    events: Vec<EventInput>,
    atomic: bool,
}

/// The reference model plus the system under test.
struct Runner {
    fs: SimFileSystem,
    /// When false, a restart is a machine crash instead.
    process_restarts: bool,
    root: PathBuf,
    name: LogName,
    rng: SimRng,
    store: Option<Store>,
    log: Option<Arc<Log>>,
    /// The log as the model knows it, LSN 1 first.
    records: Vec<ModelRecord>,
    /// Appends whose outcome is unknown since the last reopen.
    attempts: Vec<Attempt>,
    next_event: u64,
    next_append: u64,
    /// The current log refuses writes (an append failed): it must be
    /// restarted or the machine crashed before going on.
    broken: bool,
    /// Injected failures counted when the log last opened: any beyond it
    /// explain an IO error.
    failures_at_open: u64,
    summary: Summary,
    trace: Vec<String>,
}

/// Which kinds of trouble a scenario includes (all by default; narrowing
/// them helps to tell one bug from another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trouble {
    /// Crashes keep a random part of what was not durable (torn writes).
    pub tearing: bool,
    /// Process restarts that keep unsynced data (the page cache).
    pub process_restarts: bool,
    /// A failed sync behaves as Linux's page cache after a failed
    /// writeback: the bytes stay readable but no later sync writes them
    /// (`SimFileSystem::set_failed_sync_forgets`). On by default; off, a
    /// later sync makes them durable (the gentler disk of earlier runs).
    pub failed_sync_forgets: bool,
}

impl Default for Trouble {
    fn default() -> Self {
        Trouble {
            tearing: true,
            process_restarts: true,
            failed_sync_forgets: true,
        }
    }
}

/// Runs a scenario of `op_count` random operations drawn from `seed`.
///
/// # Errors
/// The first [`Violation`], with a trace.
pub fn run_seed(seed: u64, op_count: usize) -> Result<Summary, Failure> {
    run_seed_with(seed, op_count, Trouble::default())
}

/// As [`run_seed`], with only some kinds of trouble.
///
/// # Errors
/// The first [`Violation`], with a trace.
pub fn run_seed_with(seed: u64, op_count: usize, trouble: Trouble) -> Result<Summary, Failure> {
    let mut rng = SimRng::new(seed);
    let ops: Vec<Op> = (0..op_count)
        .map(|_| Op::random(&mut rng))
        .map(|op| {
            if op == Op::Restart && !trouble.process_restarts {
                Op::Crash
            } else {
                op
            }
        })
        .collect();
    run_ops_with(seed, &ops, trouble)
}

/// Runs the given operations on a fresh simulated disk seeded with `seed`.
///
/// # Errors
/// The first [`Violation`], with a trace.
pub fn run_ops(seed: u64, ops: &[Op]) -> Result<Summary, Failure> {
    run_ops_with(seed, ops, Trouble::default())
}

/// As [`run_ops`], with only some kinds of trouble.
///
/// # Errors
/// The first [`Violation`], with a trace.
pub fn run_ops_with(seed: u64, ops: &[Op], trouble: Trouble) -> Result<Summary, Failure> {
    let mut runner = Runner::new(seed, trouble);
    let outcome = runner.run(ops);
    runner.shut_down();
    match outcome {
        Ok(()) => Ok(runner.summary),
        Err(violation) => {
            let mut trace = runner.trace_text();
            trace.push_str("\n--- files (length as read / as durable) ---");
            for path in runner.fs.files() {
                let written = runner.fs.contents(&path).map_or(0, |bytes| bytes.len());
                let durable = runner
                    .fs
                    .durable_contents(&path)
                    .map_or(0, |bytes| bytes.len());
                let _ = write!(trace, "\n{} {written} / {durable}", path.display());
            }
            Err(Failure { violation, trace })
        }
    }
}

impl Runner {
    fn new(seed: u64, trouble: Trouble) -> Runner {
        let mut rng = SimRng::new(seed ^ 0x005E_ED0F_7EA1);
        let runner = Runner {
            fs: SimFileSystem::with_options(SimOptions {
                tear: trouble.tearing,
                ..SimOptions::seeded(rng.next_u64())
            }),
            process_restarts: trouble.process_restarts,
            root: PathBuf::from("/data"),
            name: LogName::new("sim").expect("\"sim\" is a valid log name"),
            rng,
            store: None,
            log: None,
            records: Vec::new(),
            attempts: Vec::new(),
            next_event: 0,
            next_append: 0,
            broken: false,
            failures_at_open: 0,
            summary: Summary::default(),
            trace: Vec::new(),
        };
        runner
            .fs
            .set_failed_sync_forgets(trouble.failed_sync_forgets);
        runner
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LINES_MAX {
            self.trace.remove(0);
        }
        self.trace.push(line);
    }

    fn trace_text(&self) -> String {
        self.trace.join("\n")
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), Violation> {
        // The data directory exists before the store, as an operator made it.
        if let Err(error) = self.fs.install_directory(&self.root) {
            return Err(Violation::Unexpected {
                lsn: 0,
                detail: format!("cannot set up the root: {error}"),
            });
        }
        self.open()?;
        for (step, op) in ops.iter().enumerate() {
            self.note(format!("#{step} {op:?}"));
            self.step(op)?;
        }
        // End with a crash and a full check, then a clean close and another.
        self.crash();
        self.open()?;
        self.reopen_cleanly()?;
        self.summary.final_head = self.records.len() as u64;
        Ok(())
    }

    fn shut_down(&mut self) {
        // Invalidate handles first so a writer thread left behind cannot
        // touch anything, then drop.
        self.fs.restart_process();
        self.log = None;
        self.store = None;
    }

    fn step(&mut self, op: &Op) -> Result<(), Violation> {
        match op {
            Op::Append {
                count,
                size,
                atomic,
            } => {
                let count = usize::from(*count) % EVENTS_PER_APPEND_MAX + 1;
                let sizes: Vec<usize> = (0..count).map(|index| event_size(*size, index)).collect();
                self.append(&sizes, *atomic)
            }
            Op::Fill => {
                let mut written = 0u64;
                while written < SEGMENT_BYTES && !self.broken {
                    self.append(&[EVENT_BYTES_MAX / 2, EVENT_BYTES_MAX / 2], false)?;
                    written += EVENT_BYTES_MAX as u64;
                }
                Ok(())
            }
            Op::Crash => {
                self.crash();
                self.open()
            }
            Op::FreezeAtSync { after } => {
                self.fs.freeze_after(OpClass::Sync, u64::from(*after % 8));
                Ok(())
            }
            Op::FreezeAtWrite { after } => {
                self.fs.freeze_after(OpClass::Write, u64::from(*after % 16));
                Ok(())
            }
            Op::FailOnce { write, after } => {
                let class = if *write {
                    OpClass::Write
                } else {
                    OpClass::Sync
                };
                self.fs.fail_after(class, u64::from(*after % 8));
                Ok(())
            }
            Op::Restart => {
                self.restart();
                self.open()
            }
            Op::Reopen => self.reopen_cleanly(),
            Op::CrashDuringRecovery { after } => {
                self.crash();
                self.open_freezing(Some(u64::from(*after % 64)))
            }
            Op::Read { from, len } => self.read(*from, *len),
            Op::RetryAcknowledged { index } => self.retry(*index, false),
            Op::ConflictAcknowledged { index } => self.retry(*index, true),
        }
    }

    /// The machine crashes: handles die, what was not durable goes.
    fn crash(&mut self) {
        let report = self.fs.crash();
        self.note(format!("  crash: {report:?}"));
        self.summary.crashes += 1;
        self.log = None;
        self.store = None;
        self.broken = false;
    }

    /// The process dies; the machine keeps what was written.
    fn restart(&mut self) {
        if self.fs.is_frozen() || !self.process_restarts {
            self.crash();
            return;
        }
        self.fs.restart_process();
        self.log = None;
        self.store = None;
        self.broken = false;
    }

    fn reopen_cleanly(&mut self) -> Result<(), Violation> {
        self.recover_if_broken()?;
        if let Some(store) = self.store.take() {
            let closed = store.close();
            self.log = None;
            match closed {
                Ok(()) => {
                    // Closed cleanly: everything it holds is durable.
                    for record in &mut self.records {
                        record.durable = true;
                    }
                }
                Err(error) => {
                    self.note(format!("  close failed: {error}"));
                    self.expect_injected("close", error)?;
                    self.restart();
                }
            }
        }
        self.open()
    }

    /// A log that refused a write must be restarted (or the machine crashed
    /// when the disk froze) before it takes writes again.
    fn recover_if_broken(&mut self) -> Result<(), Violation> {
        if self.broken || self.fs.is_frozen() {
            if self.fs.is_frozen() {
                self.crash();
            } else {
                self.restart();
            }
            self.open()?;
        }
        Ok(())
    }

    /// Whether a fault was injected since the log opened (an IO error is then expected).
    fn fault_since_open(&self) -> bool {
        self.fs.injected_failures() > self.failures_at_open || self.fs.is_frozen()
    }

    /// Whether an error is explained by an injected fault.
    fn expect_injected(&self, operation: &'static str, error: LogError) -> Result<(), Violation> {
        if self.fault_since_open() {
            Ok(())
        } else {
            Err(Violation::UnexpectedError { operation, error })
        }
    }

    fn open(&mut self) -> Result<(), Violation> {
        self.open_freezing(None)
    }

    /// Opens the store and the log, recovering; with `freeze_after`, the disk
    /// freezes at that operation of the first attempt (a crash during
    /// recovery), and recovery starts over after the crash.
    fn open_freezing(&mut self, freeze_after: Option<u64>) -> Result<(), Violation> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts == 1 {
                if let Some(after) = freeze_after {
                    self.fs.freeze_after(OpClass::Any, after);
                }
            }
            let failures_before = self.fs.injected_failures();
            let opened =
                Store::open_with_fs(Arc::new(self.fs.clone()), &self.root, sim_log_options())
                    .and_then(|store| store.get_or_create(&self.name).map(|log| (store, log)));
            if freeze_after.is_some() {
                self.fs.disarm();
            }
            match opened {
                Ok((store, log)) if !self.fs.is_frozen() => {
                    self.store = Some(store);
                    self.log = Some(log);
                    break;
                }
                Ok(_) => {
                    // Opened although the disk froze under it (an IO error
                    // was not fatal to recovery): crash and start over.
                    self.note("  opened on a frozen disk; crashing again".into());
                    if attempts >= OPEN_ATTEMPTS_MAX {
                        return Err(Violation::Unexpected {
                            lsn: 0,
                            detail: "opened on a frozen disk every time".into(),
                        });
                    }
                    self.crash();
                }
                Err(error) => {
                    let injected =
                        self.fs.injected_failures() > failures_before || self.fs.is_frozen();
                    self.note(format!(
                        "  open failed (injected fault: {injected}): {error}"
                    ));
                    if !injected || attempts >= OPEN_ATTEMPTS_MAX {
                        return Err(Violation::DoesNotReopen { attempts, error });
                    }
                    self.crash();
                }
            }
        }
        self.failures_at_open = self.fs.injected_failures();
        self.summary.reopens += 1;
        self.check_recovered()
    }

    fn log(&self) -> Result<Arc<Log>, Violation> {
        self.log.clone().ok_or(Violation::Unexpected {
            lsn: 0,
            detail: "no open log (scenario bug)".into(),
        })
    }

    /// After a reopen: the must-survive prefix is intact, the rest is
    /// explained by attempted appends, and the log verifies clean.
    fn check_recovered(&mut self) -> Result<(), Violation> {
        let log = self.log()?;
        let head = log.head().lsn.0;
        let mut found = Vec::with_capacity(usize::try_from(head).unwrap_or(0));
        for item in log.read(Lsn::FIRST, Lsn(head)) {
            match item {
                Ok(stored) => found.push((stored.record, stored.hash)),
                Err(error) => {
                    return Err(Violation::UnexpectedError {
                        operation: "read after recovery",
                        error,
                    })
                }
            }
        }
        if found.len() as u64 != head {
            return Err(Violation::WrongAnswer {
                operation: "read after recovery",
                detail: format!(
                    "head is {head} but reading 1..={head} returned {} records",
                    found.len()
                ),
            });
        }
        let report = log
            .verify(Lsn::FIRST, Lsn(head), &mut |_| {})
            .map_err(|error| Violation::UnexpectedError {
                operation: "verify after recovery",
                error,
            })?;
        if let Some(failure) = report.failure {
            return Err(Violation::Verify {
                detail: format!("{failure:?}"),
            });
        }
        if report.verified != head {
            return Err(Violation::Verify {
                detail: format!("verified {} of {head} records", report.verified),
            });
        }
        self.note(format!(
            "  recovered head {head} (model: {} records, {} attempts)",
            self.records.len(),
            self.attempts.len()
        ));
        self.reconcile(&found)?;
        // Everything is reconciled: pending attempts are resolved for good.
        self.attempts.clear();
        let head_now = log.head().lsn.0;
        if head_now != self.records.len() as u64 {
            return Err(Violation::WrongAnswer {
                operation: "head",
                detail: format!("head {head_now}, model {}", self.records.len()),
            });
        }
        Ok(())
    }

    fn reconcile(&mut self, found: &[(Record, RecordHash)]) -> Result<(), Violation> {
        let durable = self
            .records
            .iter()
            .take_while(|record| record.durable)
            .count();
        // 1. The durable prefix, exactly.
        for (index, expected) in self.records[..durable].iter().enumerate() {
            let lsn = index as u64 + 1;
            let Some((record, hash)) = found.get(index) else {
                return Err(Violation::LostDurable {
                    lsn,
                    event_id: expected.event_id.clone(),
                    detail: format!("the log ends at {}", found.len()),
                });
            };
            if let Some(detail) = differs(expected, record, *hash) {
                return Err(Violation::LostDurable {
                    lsn,
                    event_id: expected.event_id.clone(),
                    detail,
                });
            }
        }
        // 2. Beyond it: a prefix of the records seen before (not yet durable),
        //    then, only if all of those are there, records of attempted appends.
        let mut index = durable;
        let mut seen_all = true;
        while index < self.records.len() {
            match found.get(index) {
                Some((record, hash)) if differs(&self.records[index], record, *hash).is_none() => {
                    index += 1
                }
                Some((record, _)) => {
                    return Err(Violation::Unexpected {
                        lsn: index as u64 + 1,
                        detail: format!(
                            "expected the previously seen {:?} or nothing, found {:?}",
                            self.records[index].event_id, record.event_id
                        ),
                    })
                }
                None => {
                    seen_all = false;
                    break;
                }
            }
        }
        let kept = index;
        self.records.truncate(kept);
        check_batches_whole(&self.records)?;
        if !seen_all {
            if found.len() > kept {
                return Err(Violation::Unexpected {
                    lsn: kept as u64 + 1,
                    detail: "records after a lost one".into(),
                });
            }
            return Ok(());
        }
        // 3. Attempted appends, in order, each atomic one whole.
        let mut by_id: HashMap<&str, (usize, usize)> = HashMap::new();
        for (attempt_index, attempt) in self.attempts.iter().enumerate() {
            for (position, event) in attempt.events.iter().enumerate() {
                by_id.insert(event.event_id.as_str(), (attempt_index, position));
            }
        }
        let mut previous: Option<(usize, usize)> = None;
        let mut adopted = Vec::new();
        for (offset, (record, hash)) in found[kept..].iter().enumerate() {
            let lsn = (kept + offset) as u64 + 1;
            let Some(&(attempt_index, position)) = by_id.get(record.event_id.as_str()) else {
                return Err(Violation::Unexpected {
                    lsn,
                    detail: format!(
                        "event {:?} was never appended since the last reopen",
                        record.event_id
                    ),
                });
            };
            let attempt = &self.attempts[attempt_index];
            if attempt.events[position].encoded_event != record.event {
                return Err(Violation::Unexpected {
                    lsn,
                    detail: format!("event {:?} has other bytes", record.event_id),
                });
            }
            let in_order = match previous {
                None => position == 0,
                Some((last_attempt, last_position)) => {
                    (attempt_index == last_attempt && position == last_position + 1)
                        || (attempt_index > last_attempt
                            && position == 0
                            && last_position + 1 == self.attempts[last_attempt].events.len())
                }
            };
            if !in_order {
                return Err(Violation::Unexpected {
                    lsn,
                    detail: format!(
                        "event {:?} (append {attempt_index}, position {position}) out of order after {previous:?}",
                        record.event_id
                    ),
                });
            }
            previous = Some((attempt_index, position));
            adopted.push(ModelRecord {
                event_id: record.event_id.clone(),
                event: record.event.clone(),
                hash: *hash,
                durable: false,
                append: attempt.append,
                atomic: attempt.atomic,
                append_len: attempt.events.len(),
            });
        }
        self.records.extend(adopted);
        check_batches_whole(&self.records)?;
        self.note(format!(
            "  reconciled: kept {kept} of the model, adopted {}",
            self.records.len() - kept
        ));
        Ok(())
    }

    fn new_events(&mut self, sizes: &[usize]) -> Vec<EventInput> {
        sizes
            .iter()
            .map(|&size| {
                self.next_event += 1;
                let mut event = vec![0u8; size];
                self.rng.fill(&mut event);
                EventInput::new(format!("ev-{}", self.next_event), event)
            })
            .collect()
    }

    fn append(&mut self, sizes: &[usize], atomic: bool) -> Result<(), Violation> {
        self.recover_if_broken()?;
        let events = self.new_events(sizes);
        self.next_append += 1;
        let append = self.next_append;
        let log = self.log()?;
        match log.append_blocking(events.clone(), atomic) {
            Ok(receipts) => self.acknowledged(append, &events, atomic, &receipts),
            Err(error) => {
                self.summary.failed_appends += 1;
                self.note(format!("  append {append} failed: {error}"));
                if !self.fault_since_open()
                    || error.kind() == ErrorKind::InvalidArgument
                    || error.kind() == ErrorKind::AlreadyExists
                {
                    return Err(Violation::UnexpectedError {
                        operation: "append",
                        error,
                    });
                }
                self.attempts.push(Attempt {
                    append,
                    events,
                    atomic,
                });
                self.broken = true;
                Ok(())
            }
        }
    }

    fn acknowledged(
        &mut self,
        append: u64,
        events: &[EventInput],
        atomic: bool,
        receipts: &[Receipt],
    ) -> Result<(), Violation> {
        if receipts.len() != events.len() {
            return Err(Violation::WrongAnswer {
                operation: "append",
                detail: format!("{} receipts for {} events", receipts.len(), events.len()),
            });
        }
        for (offset, (event, receipt)) in events.iter().zip(receipts).enumerate() {
            let expected_lsn = (self.records.len() + 1) as u64;
            if receipt.duplicate || receipt.lsn.0 != expected_lsn {
                return Err(Violation::WrongAnswer {
                    operation: "append",
                    detail: format!("event {offset} of append {append}: receipt {receipt:?}, expected a new record at lsn {expected_lsn}"),
                });
            }
            self.records.push(ModelRecord {
                event_id: event.event_id.clone(),
                event: event.encoded_event.clone(),
                hash: receipt.hash,
                durable: true,
                append,
                atomic,
                append_len: events.len(),
            });
        }
        // Durability::Sync: an acknowledged record makes every record before it durable.
        for record in &mut self.records {
            record.durable = true;
        }
        self.summary.acknowledged += receipts.len() as u64;
        let head = self.log()?.head();
        let last = receipts.last().map(|receipt| (receipt.lsn, receipt.hash));
        if last != Some((head.lsn, head.hash)) {
            return Err(Violation::WrongAnswer {
                operation: "head after append",
                detail: format!("head {head:?}, last receipt {last:?}"),
            });
        }
        Ok(())
    }

    fn read(&mut self, from: u16, len: u16) -> Result<(), Violation> {
        self.recover_if_broken()?;
        if self.records.is_empty() {
            return Ok(());
        }
        let count = self.records.len() as u64;
        let first = u64::from(from) % count + 1;
        let last = (first + u64::from(len % 64)).min(count);
        let log = self.log()?;
        let mut lsn = first;
        for item in log.read(Lsn(first), Lsn(last)) {
            let stored = match item {
                Ok(stored) => stored,
                Err(error) if self.fault_since_open() => {
                    self.note(format!("  read failed after an injected fault: {error}"));
                    return Ok(());
                }
                Err(error) => {
                    return Err(Violation::UnexpectedError {
                        operation: "read",
                        error,
                    })
                }
            };
            let index = usize::try_from(lsn - 1).unwrap_or(usize::MAX);
            let Some(expected) = self.records.get(index) else {
                return Err(Violation::WrongAnswer {
                    operation: "read",
                    detail: format!("lsn {lsn} beyond the model"),
                });
            };
            if stored.record.lsn.0 != lsn {
                return Err(Violation::WrongAnswer {
                    operation: "read",
                    detail: format!("asked for lsn {lsn}, got {}", stored.record.lsn),
                });
            }
            if let Some(detail) = differs(expected, &stored.record, stored.hash) {
                return Err(Violation::WrongAnswer {
                    operation: "read",
                    detail: format!("lsn {lsn}: {detail}"),
                });
            }
            lsn += 1;
        }
        if lsn != last + 1 && !self.fault_since_open() {
            return Err(Violation::WrongAnswer {
                operation: "read",
                detail: format!("asked for {first}..={last}, the iterator stopped before {lsn}"),
            });
        }
        Ok(())
    }

    fn retry(&mut self, index: u16, conflict: bool) -> Result<(), Violation> {
        self.recover_if_broken()?;
        let durable = self
            .records
            .iter()
            .take_while(|record| record.durable)
            .count();
        if durable == 0 {
            return Ok(());
        }
        let index = usize::from(index) % durable;
        let expected = self.records[index].clone();
        let mut event = expected.event.clone();
        if conflict {
            event.push(0xA5);
        }
        let log = self.log()?;
        let outcome = log.append_blocking(
            vec![EventInput::new(expected.event_id.clone(), event)],
            false,
        );
        let injected = self.fault_since_open();
        let lsn = index as u64 + 1;
        match (conflict, outcome) {
            (false, Ok(receipts)) => {
                let good = receipts.len() == 1
                    && receipts[0].duplicate
                    && receipts[0].lsn.0 == lsn
                    && receipts[0].hash == expected.hash;
                if !good {
                    return Err(Violation::WrongAnswer {
                        operation: "idempotent retry",
                        detail: format!(
                            "retry of {:?} (lsn {lsn}) answered {receipts:?}",
                            expected.event_id
                        ),
                    });
                }
                Ok(())
            }
            (true, Err(error)) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
            (true, Ok(receipts)) => Err(Violation::WrongAnswer {
                operation: "conflicting retry",
                detail: format!(
                    "{:?} with other content was accepted: {receipts:?}",
                    expected.event_id
                ),
            }),
            (_, Err(error)) if injected => {
                self.note(format!("  retry failed after an injected fault: {error}"));
                self.broken = true;
                Ok(())
            }
            (_, Err(error)) => Err(Violation::UnexpectedError {
                operation: "retry",
                error,
            }),
        }
    }
}

/// Why a stored record is not the model's, if it is not.
fn differs(expected: &ModelRecord, record: &Record, hash: RecordHash) -> Option<String> {
    if record.event_id != expected.event_id {
        return Some(format!(
            "event id {:?}, expected {:?}",
            record.event_id, expected.event_id
        ));
    }
    if record.event != expected.event {
        return Some(format!(
            "event bytes differ ({} vs {} bytes)",
            record.event.len(),
            expected.event.len()
        ));
    }
    if hash != expected.hash {
        return Some(format!("hash {hash}, expected {}", expected.hash));
    }
    None
}

/// Every atomic append in the model is whole.
fn check_batches_whole(records: &[ModelRecord]) -> Result<(), Violation> {
    let mut index = 0;
    while index < records.len() {
        let record = &records[index];
        let run = records[index..]
            .iter()
            .take_while(|other| other.append == record.append)
            .count();
        if record.atomic && run != record.append_len {
            let mut detail = String::new();
            let _ = write!(
                detail,
                "append {} had {} events, {} are in the log from lsn {}",
                record.append,
                record.append_len,
                run,
                index + 1
            );
            return Err(Violation::TornBatch { detail });
        }
        index += run;
    }
    Ok(())
}

/// Event sizes: mostly small, some large, one in a while empty.
fn event_size(seed: u16, index: usize) -> usize {
    let mixed = (u64::from(seed) * 2_654_435_761 + index as u64 * 40_503) % 1000;
    match mixed {
        0..=19 => 0,
        20..=899 => usize::try_from(mixed % 300).unwrap_or(0) + 1,
        _ => usize::try_from((mixed * 37) % EVENT_BYTES_MAX as u64).unwrap_or(0) + 1,
    }
}
