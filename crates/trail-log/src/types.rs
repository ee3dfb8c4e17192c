//! Small value types shared by the whole engine: LSNs, hashes, log names,
//! durability modes and receipts.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A log sequence number: dense, starting at 1 per log, assigned only by the
/// log's single writer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN of a log's first record.
    pub const FIRST: Lsn = Lsn(1);
    /// "Nothing yet": the head of an empty log.
    pub const ZERO: Lsn = Lsn(0);

    /// The next LSN.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A blake3 hash of a stored record body (or the genesis value of a log).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct RecordHash(pub [u8; 32]);

impl RecordHash {
    /// Lowercase hex, as the CLI and docs show hashes.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    ///
    /// # Errors
    /// When the text is not 64 hex characters.
    pub fn from_hex(text: &str) -> Result<RecordHash, hex::FromHexError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)?;
        Ok(RecordHash(bytes))
    }
}

impl fmt::Debug for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordHash({})", self.to_hex())
    }
}

impl fmt::Display for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The longest log name, in bytes.
pub const LOG_NAME_BYTES_MAX: usize = 64;

/// A validated log name: `[a-z0-9][a-z0-9_-]{0,63}`. Only such names ever
/// reach a path, so a name can never escape the store's directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogName(String);

impl LogName {
    /// The log a request names when it names none.
    pub const DEFAULT: &'static str = "default";

    /// Validates a log name; an empty name means [`LogName::DEFAULT`].
    ///
    /// # Errors
    /// [`InvalidLogName`] saying which character or length is wrong.
    pub fn new(name: &str) -> Result<LogName, InvalidLogName> {
        let name = if name.is_empty() { Self::DEFAULT } else { name };
        if name.len() > LOG_NAME_BYTES_MAX {
            return Err(InvalidLogName {
                name: name.chars().take(80).collect(),
                reason: format!(
                    "is {} bytes long; the limit is {LOG_NAME_BYTES_MAX}",
                    name.len()
                ),
            });
        }
        for (position, character) in name.chars().enumerate() {
            let allowed = character.is_ascii_lowercase()
                || character.is_ascii_digit()
                || (position > 0 && (character == '_' || character == '-'));
            if !allowed {
                return Err(InvalidLogName {
                    name: name.to_owned(),
                    reason: format!(
                        "has {character:?} at position {position}; names match [a-z0-9][a-z0-9_-]{{0,63}}"
                    ),
                });
            }
        }
        Ok(LogName(name.to_owned()))
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LogName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a log name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid log name {name:?}: it {reason}")]
pub struct InvalidLogName {
    /// The name as given (cut at 80 characters).
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

/// When an append is acknowledged relative to fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after fdatasync: nothing acknowledged is ever lost.
    Sync,
    /// Acknowledge after write; fdatasync at most this long later. A crash can
    /// lose up to this window of acknowledged appends.
    Interval(Duration),
    /// Never fsync (tests and benchmarks only): a crash of the machine can
    /// lose anything the OS had not written back.
    None,
}

/// What kind of record this is. Stored as its variant index (FORMAT.md 4.3),
/// so the order is part of the format: append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    /// An audit event as a producer sent it.
    Event,
    /// Body format 1's compensation: it names the LSN it undoes but not that
    /// record's hash. Read from format-1 bodies only; never written (body
    /// format 2 refuses it).
    CompensationV1 {
        /// The LSN this record undoes.
        compensates: Lsn,
    },
    /// An event appended by Trail to undo the record at `compensates`,
    /// committing to that record's hash, so the link cannot be moved to
    /// another record (body format 2).
    Compensation {
        /// The LSN this record undoes; always below the record's own LSN.
        compensates: Lsn,
        /// The hash of the record at `compensates`.
        compensates_hash: RecordHash,
    },
}

impl RecordKind {
    /// The LSN a compensation undoes (`None` for an event).
    #[must_use]
    pub fn compensates(&self) -> Option<Lsn> {
        match self {
            RecordKind::Event => None,
            RecordKind::CompensationV1 { compensates }
            | RecordKind::Compensation { compensates, .. } => Some(*compensates),
        }
    }

    /// The lowest body format version that can hold this kind.
    #[must_use]
    pub fn body_version(&self) -> u8 {
        match self {
            RecordKind::CompensationV1 { .. } => 1,
            RecordKind::Event | RecordKind::Compensation { .. } => 2,
        }
    }
}

/// What the log answers for each appended event once it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Where the event is in the log.
    pub lsn: Lsn,
    /// The hash of its stored record, which the next record links to.
    pub hash: RecordHash,
    /// The server time the record carries, unix nanoseconds.
    pub recorded_at_unix_nanos: i64,
    /// True when the event id was already in the log with the same content:
    /// nothing was appended and this is the original receipt.
    pub duplicate: bool,
}

/// The last durable record of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The last durable LSN ([`Lsn::ZERO`] for an empty log).
    pub lsn: Lsn,
    /// Its hash (the log's genesis value for an empty log).
    pub hash: RecordHash,
}
