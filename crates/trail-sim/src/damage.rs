//! Damaged logs: segment files built by hand (a valid prefix plus any tail)
//! and valid logs with one bit flipped, opened on a [`SimFileSystem`], with
//! the checks that recovery must pass on them. Shared by the tests and the
//! `segment_recover` and `bit_flip` fuzz targets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use trail_log::codec::{self, genesis_hash, Body, Record, RecordRef};
use trail_log::segment::{SegmentHeader, SEGMENT_HEADER_BYTES};
use trail_log::{
    ErrorKind, EventInput, Head, LogError, LogName, Lsn, RecordHash, RecordKind, Store,
};

use crate::fs::{SimFileSystem, SimOptions};
use crate::scenario::sim_log_options;

/// The store root of every damaged log.
pub const ROOT: &str = "/data";
/// The log's name.
pub const LOG_NAME: &str = "damaged";

/// What opening a damaged log did that it must not do.
#[derive(Debug, thiserror::Error)]
pub enum DamageViolation {
    /// Open failed with something other than a located corruption error.
    #[error("open failed with {kind:?} instead of DATA_LOSS with a location: {error}")]
    WrongError {
        /// Its kind.
        kind: ErrorKind,
        /// The error.
        error: LogError,
    },
    /// The log opened but does not verify, or a record does not read back.
    #[error("opened a log that is not clean: {detail}")]
    NotClean {
        /// What was wrong.
        detail: String,
    },
    /// The log opened with records that were never valid ones.
    #[error("recovered records that were not written: {detail}")]
    Invented {
        /// What was wrong.
        detail: String,
    },
    /// A flipped bit went unnoticed.
    #[error("bit flip not detected: {detail}")]
    Undetected {
        /// Where the bit was, what the log said.
        detail: String,
    },
}

/// How a damaged log was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Opened; the head it recovered to.
    Opened(Head),
    /// Refused with a located corruption error.
    Refused(String),
}

fn log_name() -> LogName {
    LogName::new(LOG_NAME).expect("the damaged log's name is valid")
}

/// The path of segment `first_lsn` of the damaged log.
#[must_use]
pub fn segment_path(first_lsn: u64) -> PathBuf {
    Path::new(ROOT)
        .join(LOG_NAME)
        .join("wal")
        .join(trail_log::segment::segment_file_name(Lsn(first_lsn)))
}

/// A segment file that starts at LSN 1: a valid header, `records` valid
/// record frames chained from genesis (each record's event from `event`),
/// then `tail`. Returns the bytes and each record with its hash.
#[must_use]
pub fn build_segment(
    records: usize,
    event: &[u8],
    tail: &[u8],
) -> (Vec<u8>, Vec<(Record, RecordHash)>) {
    let genesis = genesis_hash(LOG_NAME);
    let header = SegmentHeader {
        log_id: genesis,
        first_lsn: Lsn::FIRST,
        prev_hash: genesis,
    };
    let mut bytes = header.encode().to_vec();
    let mut written = Vec::with_capacity(records);
    let mut prev_hash = genesis;
    for index in 0..records as u64 {
        let lsn = Lsn(index + 1);
        let event_id = format!("event-{}", lsn.0);
        let event = &event[..event
            .len()
            .min(usize::try_from(index).unwrap_or(0) * 7 % 97)];
        let record = RecordRef {
            lsn,
            recorded_at_unix_nanos: 1_800_000_000_000_000_000 + i64::try_from(index).unwrap_or(0),
            prev_hash,
            kind: RecordKind::Event,
            batch_last_lsn: lsn,
            durable_lsn: Lsn(index),
            event_id: &event_id,
            event,
        };
        let Ok(hash) = codec::encode_record_frame(&mut bytes, &record) else {
            break;
        };
        written.push((
            Record {
                lsn,
                recorded_at_unix_nanos: record.recorded_at_unix_nanos,
                prev_hash,
                kind: RecordKind::Event,
                batch_last_lsn: lsn,
                durable_lsn: record.durable_lsn,
                event_id: event_id.clone(),
                event: event.to_vec(),
            },
            hash,
        ));
        prev_hash = hash;
    }
    bytes.extend_from_slice(tail);
    (bytes, written)
}

/// Opens the damaged log on a disk holding `files` and checks it: either it
/// refuses with DATA_LOSS naming a file, or it opens, verifies clean, and
/// every record up to its head reads back, checked against `expected`
/// where given (the records that are known to be valid, in LSN order).
///
/// # Errors
/// The first [`DamageViolation`].
pub fn open_and_check(
    files: &[(PathBuf, Vec<u8>)],
    expected: Option<&[(Record, RecordHash)]>,
) -> Result<Outcome, DamageViolation> {
    let fs = SimFileSystem::with_options(SimOptions {
        tear: false,
        ..SimOptions::seeded(0)
    });
    for (path, bytes) in files {
        fs.install_file(path, bytes)
            .map_err(|error| DamageViolation::NotClean {
                detail: format!("set-up: {error}"),
            })?;
    }
    let opened = Store::open_with_fs(Arc::new(fs.clone()), Path::new(ROOT), sim_log_options())
        .and_then(|store| store.get(&log_name()).map(|log| (store, log)));
    let outcome = match opened {
        Err(error) => {
            if error.kind() == ErrorKind::DataLoss {
                if let LogError::Corruption { file, .. } = &error {
                    if file.as_os_str().is_empty() {
                        return Err(DamageViolation::WrongError {
                            kind: error.kind(),
                            error,
                        });
                    }
                }
                Ok(Outcome::Refused(error.to_string()))
            } else {
                Err(DamageViolation::WrongError {
                    kind: error.kind(),
                    error,
                })
            }
        }
        Ok((_store, None)) => Ok(Outcome::Opened(Head {
            lsn: Lsn::ZERO,
            hash: genesis_hash(LOG_NAME),
        })),
        Ok((_store, Some(log))) => {
            let head = log.head();
            let report = log
                .verify(Lsn::FIRST, head.lsn, &mut |_| {})
                .map_err(|error| DamageViolation::NotClean {
                    detail: format!("verify failed: {error}"),
                })?;
            if let Some(failure) = report.failure {
                return Err(DamageViolation::NotClean {
                    detail: format!("verify after open: {failure:?}"),
                });
            }
            if report.verified != head.lsn.0 || (head.lsn.0 > 0 && report.head_hash != head.hash) {
                return Err(DamageViolation::NotClean {
                    detail: format!(
                        "verified {} records to {}, head {head:?}",
                        report.verified, report.head_hash
                    ),
                });
            }
            let mut next = 1;
            let mut prev = genesis_hash(LOG_NAME);
            for item in log.read(Lsn::FIRST, head.lsn) {
                let stored = item.map_err(|error| DamageViolation::NotClean {
                    detail: format!("read: {error}"),
                })?;
                if stored.record.lsn.0 != next || stored.record.prev_hash != prev {
                    return Err(DamageViolation::Invented {
                        detail: format!(
                            "lsn {} read where {next} was due, or its link is wrong",
                            stored.record.lsn
                        ),
                    });
                }
                if stored.hash != recompute_hash(&stored.record) {
                    return Err(DamageViolation::Invented {
                        detail: format!("lsn {next}: hash does not match its bytes"),
                    });
                }
                if let Some(expected) = expected {
                    match expected.get(usize::try_from(next - 1).unwrap_or(usize::MAX)) {
                        Some((record, hash))
                            if *record == stored.record && *hash == stored.hash => {}
                        Some(_) => {
                            return Err(DamageViolation::Invented {
                                detail: format!("lsn {next} differs from what was written"),
                            })
                        }
                        None => {
                            return Err(DamageViolation::Invented {
                                detail: format!("lsn {next} is beyond what was written"),
                            })
                        }
                    }
                }
                prev = stored.hash;
                next += 1;
            }
            if next != head.lsn.0 + 1 {
                return Err(DamageViolation::NotClean {
                    detail: format!("read stopped at {next}, head {}", head.lsn),
                });
            }
            Ok(Outcome::Opened(head))
        }
    };
    fs.restart_process();
    outcome
}

fn recompute_hash(record: &Record) -> RecordHash {
    let mut frame = Vec::new();
    codec::encode_record_frame(&mut frame, &record.as_ref()).unwrap_or_default()
}

/// A valid log made by the real engine: two sealed segments and an active
/// one, cleanly closed. Built once per process.
#[derive(Debug)]
pub struct Template {
    /// Every file, with its bytes.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// The head at close.
    pub head: Head,
    /// Byte ranges of record frames: (file index, start, end).
    pub record_frames: Vec<(usize, usize, usize)>,
}

impl Template {
    /// Total bits inside record frames.
    #[must_use]
    pub fn record_bits(&self) -> u64 {
        self.record_frames
            .iter()
            .map(|(_, start, end)| (end - start) as u64 * 8)
            .sum()
    }

    /// The file and byte of the `bit`th record bit (modulo the total).
    #[must_use]
    pub fn locate(&self, bit: u64) -> (usize, usize, u8) {
        let mut bit = bit % self.record_bits().max(1);
        for &(file, start, end) in &self.record_frames {
            let bits = (end - start) as u64 * 8;
            if bit < bits {
                let byte = usize::try_from(bit / 8).unwrap_or(0);
                return (file, start + byte, 1 << (bit % 8));
            }
            bit -= bits;
        }
        (0, 0, 0)
    }
}

/// The shared template (built on first use).
///
/// # Panics
/// When the engine cannot build a log on a healthy simulated disk.
pub fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        build_template().unwrap_or_else(|error| panic!("cannot build the template log: {error}"))
    })
}

fn build_template() -> Result<Template, LogError> {
    let fs = SimFileSystem::with_options(SimOptions {
        tear: false,
        ..SimOptions::seeded(1)
    });
    let store = Store::open_with_fs(Arc::new(fs.clone()), Path::new(ROOT), sim_log_options())?;
    let log = store.get_or_create(&log_name())?;
    let mut index = 0u32;
    // About 2.5 segments of records of assorted sizes, some in atomic batches.
    while fs
        .files()
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .count()
        < 3
    {
        index += 1;
        let size = usize::try_from(index * 97 % 1500).unwrap_or(0);
        let events: Vec<EventInput> = (0..1 + index % 3)
            .map(|part| {
                EventInput::new(
                    format!("t-{index}-{part}"),
                    vec![u8::try_from(index % 251).unwrap_or(0); size],
                )
            })
            .collect();
        log.append_blocking(events, index.is_multiple_of(2))?;
    }
    for extra in 0..5 {
        log.append_blocking(
            vec![EventInput::new(format!("tail-{extra}"), vec![7; 100])],
            false,
        )?;
    }
    let head = log.head();
    store.close()?;
    drop(log);
    let mut files = Vec::new();
    let mut record_frames = Vec::new();
    for path in fs.files() {
        let bytes = fs.contents(&path).map_err(|error| LogError::Io {
            action: "reading back",
            path: path.clone(),
            source: Arc::new(error),
        })?;
        if path.extension().is_some_and(|ext| ext == "seg") {
            let mut offset = SEGMENT_HEADER_BYTES;
            while let Ok((body, frame_len)) = codec::split_frame(&bytes[offset..]) {
                if let Ok(Body::Record(_)) = codec::decode_body(body) {
                    record_frames.push((files.len(), offset, offset + frame_len));
                }
                offset += frame_len;
            }
        }
        files.push((path, bytes));
    }
    Ok(Template {
        files,
        head,
        record_frames,
    })
}

/// Flips record bit `bit` (modulo all record bits) of the template and opens
/// it: the damage must be found, by open (DATA_LOSS) or by verify.
///
/// # Errors
/// [`DamageViolation::Undetected`] when the log opens clean at the same head,
/// or any other violation.
pub fn check_bit_flip(bit: u64) -> Result<Outcome, DamageViolation> {
    let template = template();
    let (file, byte, mask) = template.locate(bit);
    let mut files = template.files.clone();
    files[file].1[byte] ^= mask;
    let where_ = format!("{} byte {byte} mask {mask:#04x}", files[file].0.display());
    match open_and_check(&files, None) {
        Ok(Outcome::Refused(reason)) => Ok(Outcome::Refused(reason)),
        Ok(Outcome::Opened(head)) => Err(DamageViolation::Undetected {
            detail: format!(
                "{where_}: the log opened clean with head {} (was {}){}",
                head.lsn,
                template.head.lsn,
                if head.lsn < template.head.lsn {
                    ": acknowledged records were cut silently"
                } else {
                    ""
                }
            ),
        }),
        // Found by verify after opening: detected, as required.
        Err(DamageViolation::NotClean { detail }) => {
            Ok(Outcome::Refused(format!("{where_}: {detail}")))
        }
        Err(other) => Err(other),
    }
}
