//! Background verification: the sealed segments a log trusted at open (by
//! header, seal, footer and sidecar, without re-hashing them) are re-hashed
//! on a thread of their own after the log opened, with progress the server
//! reports as a metric. Damage found there is reported, never repaired: the
//! reads of that segment fail on the same check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::catalog::SegmentEntry;
use crate::fs::FileSystem;
use crate::prefix::ArchivedPrefix;
use crate::types::{LogName, Lsn, RecordHash};
use crate::verify::{verify_range, VerifyFailure};

/// How far background verification has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackgroundStatus {
    /// Sealed segments it has to re-hash.
    pub segments_total: u64,
    /// Segments re-hashed and found sound.
    pub segments_verified: u64,
    /// Records in those segments.
    pub records_verified: u64,
    /// True while it runs.
    pub running: bool,
    /// The first damage it found; it stops there.
    pub failure: Option<VerifyFailure>,
}

/// A log's background verification state.
#[derive(Debug, Default)]
pub(crate) struct BackgroundVerification {
    status: Mutex<BackgroundStatus>,
    stop: AtomicBool,
    /// Set with `status.failure`: the check every request may make is an
    /// atomic load, not a lock.
    damaged: AtomicBool,
}

impl BackgroundVerification {
    pub fn status(&self) -> BackgroundStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut BackgroundStatus)) {
        change(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The damage found, if any (cheap when there is none).
    pub fn damage(&self) -> Option<VerifyFailure> {
        if !self.damaged.load(Ordering::Acquire) {
            return None;
        }
        self.status().failure
    }

    /// Asks the thread to stop after the segment it is on.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What the verifier reads the log through: the catalog is the writer's,
/// so the verifier asks for a snapshot of it before each segment.
pub(crate) struct VerifierInputs {
    pub name: LogName,
    pub fs: Arc<dyn FileSystem>,
    pub genesis: RecordHash,
    pub state: Arc<BackgroundVerification>,
    pub catalog: Box<dyn Fn() -> (Vec<SegmentEntry>, Option<ArchivedPrefix>) + Send>,
}

/// Starts re-hashing `segments` (first LSNs, oldest first) on a thread.
pub(crate) fn start(inputs: VerifierInputs, segments: Vec<Lsn>) -> Option<JoinHandle<()>> {
    if segments.is_empty() {
        return None;
    }
    inputs.state.update(|status| {
        status.segments_total = segments.len() as u64;
        status.running = true;
    });
    let name = format!("trail-verify-{}", inputs.name);
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&inputs, &segments));
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "could not start background verification");
            None
        }
    }
}

fn run(inputs: &VerifierInputs, segments: &[Lsn]) {
    let state = &inputs.state;
    for first_lsn in segments {
        if state.stop.load(Ordering::Acquire) {
            break;
        }
        let (catalog_segments, prefix) = (inputs.catalog)();
        let Some(entry) = catalog_segments
            .iter()
            .find(|entry| entry.first_lsn == *first_lsn)
        else {
            continue;
        };
        let outcome = verify_range(
            inputs.fs.as_ref(),
            inputs.genesis,
            &catalog_segments,
            prefix.as_ref(),
            entry.first_lsn,
            entry.last_lsn,
            &mut |_| {},
        );
        match outcome {
            Ok(report) if report.failure.is_none() => state.update(|status| {
                status.segments_verified += 1;
                status.records_verified += report.verified;
            }),
            Ok(report) => {
                if let Some(failure) = &report.failure {
                    tracing::error!(
                        log = %inputs.name, file = %failure.file.display(), offset = failure.offset,
                        lsn = %failure.lsn, reason = %failure.reason,
                        "background verification found damage in a sealed segment; reads of it fail"
                    );
                }
                state.update(|status| status.failure = report.failure);
                state.damaged.store(true, Ordering::Release);
                break;
            }
            Err(error) => {
                tracing::warn!(log = %inputs.name, %error, "background verification stopped");
                break;
            }
        }
    }
    state.update(|status| status.running = false);
}
