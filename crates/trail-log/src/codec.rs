//! The frame and record codec: `len:u32 | crc32:u32 | body`, where the body is
//! a format-version byte followed by a bincode-encoded [`Body`]. Pure functions
//! over byte slices: no IO, no async. `docs/FORMAT.md` is the byte-level spec.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::types::{Lsn, RecordHash, RecordKind};

/// Bytes before a frame's body: `len:u32 LE | crc32:u32 LE`.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The largest body a frame may declare. Checked before anything is
/// allocated, so a damaged length can never make a reader allocate more.
pub const FRAME_BODY_BYTES_MAX: usize = 8 << 20;
/// Upper bound of a record frame's size beyond its event id and event bytes
/// (frame header, version byte, enum tags and worst-case varints).
pub const RECORD_OVERHEAD_BYTES_MAX: usize = 160;
/// Worst-case bytes of a record body besides its event id and event:
/// version byte, body tag, kind (tag + an LSN varint + a hash for a
/// compensation), the two length varints, four u64 varints, one i64 varint
/// and the hash.
const RECORD_FIXED_BYTES_MAX: usize = 1 + 1 + (1 + 9 + 32) + 2 * 9 + 4 * 9 + 9 + 32;
// A frame's worst-case overhead must fit the bound the limits are checked
// against, or an event just under every limit could overflow a group.
const _: () = assert!(FRAME_HEADER_BYTES + RECORD_FIXED_BYTES_MAX <= RECORD_OVERHEAD_BYTES_MAX);
/// The version byte every body this build writes starts with. Version 2
/// added [`RecordKind::Compensation`] (a compensation that commits to the
/// hash of the record it undoes); version 1 bodies are still read.
pub const BODY_FORMAT_VERSION: u8 = 2;
/// The oldest body version this build reads.
pub const BODY_FORMAT_VERSION_MIN: u8 = 1;

/// Whether `byte` is a body version this build reads: the cheap filter that
/// recovery's scans apply before a CRC.
#[must_use]
pub fn is_known_body_version(byte: u8) -> bool {
    (BODY_FORMAT_VERSION_MIN..=BODY_FORMAT_VERSION).contains(&byte)
}
/// blake3 `derive_key` context of the record-hash key.
pub const RECORD_HASH_CONTEXT: &str = "trail.v1 record hash";
/// blake3 `derive_key` context of a log's genesis value.
pub const GENESIS_CONTEXT: &str = "trail.v1 genesis";

/// The one bincode configuration Trail uses (docs/FORMAT.md): little endian,
/// variable-length integers, no limit beyond the frame bound.
/// The limit also bounds what a damaged length inside a CRC-valid body can
/// make the decoder allocate.
fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<FRAME_BODY_BYTES_MAX>,
> {
    bincode::config::standard().with_limit::<FRAME_BODY_BYTES_MAX>()
}

static RECORD_HASH_KEY: LazyLock<[u8; 32]> =
    LazyLock::new(|| blake3::derive_key(RECORD_HASH_CONTEXT, &[]));

/// The hash of a stored record body: keyed blake3 with a domain-separated key,
/// over the exact bytes on disk (never a re-encoding).
#[must_use]
pub fn record_hash(body: &[u8]) -> RecordHash {
    RecordHash(*blake3::keyed_hash(&RECORD_HASH_KEY, body).as_bytes())
}

/// The value the first record of a log links to: derived from the log's name,
/// so a record cannot be moved to another log without breaking the chain.
#[must_use]
pub fn genesis_hash(log_name: &str) -> RecordHash {
    RecordHash(blake3::derive_key(GENESIS_CONTEXT, log_name.as_bytes()))
}

/// A stored record: the event as sent plus what the log adds. Fields are in
/// stored order: the first three are known before the writer numbers the
/// record, so the appending thread encodes them and hashes their bytes
/// ([`PreparedBody`]) and the writer only finishes the hash over the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Event or compensation.
    pub kind: RecordKind,
    /// The producer's event id, copied out of the event so the idempotency
    /// index never decodes the event.
    pub event_id: String,
    /// The `trail.v1.Event` exactly as the producer encoded it.
    #[serde(with = "serde_bytes")]
    pub event: Vec<u8>,
    /// Position in the log.
    pub lsn: Lsn,
    /// Server time, unix nanoseconds, never decreasing along the log.
    pub recorded_at_unix_nanos: i64,
    /// Hash of the previous record (or the genesis value).
    pub prev_hash: RecordHash,
    /// The last LSN of the atomic batch this record belongs to; equal to `lsn`
    /// for a record outside a batch. Recovery drops an incomplete trailing batch.
    pub batch_last_lsn: Lsn,
    /// The log's durable watermark when this record was written. Recovery uses
    /// it to tell a torn unsynced write from damage to synced data.
    pub durable_lsn: Lsn,
}

/// Borrowed twin of [`Record`] with the same encoding, so a record can be
/// framed without copying its event.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RecordRef<'a> {
    /// See [`Record::kind`].
    pub kind: RecordKind,
    /// See [`Record::event_id`].
    pub event_id: &'a str,
    /// See [`Record::event`].
    #[serde(with = "serde_bytes")]
    pub event: &'a [u8],
    /// See [`Record::lsn`].
    pub lsn: Lsn,
    /// See [`Record::recorded_at_unix_nanos`].
    pub recorded_at_unix_nanos: i64,
    /// See [`Record::prev_hash`].
    pub prev_hash: RecordHash,
    /// See [`Record::batch_last_lsn`].
    pub batch_last_lsn: Lsn,
    /// See [`Record::durable_lsn`].
    pub durable_lsn: Lsn,
}

/// The fields of a record the writer fills in, in stored order (the tail of
/// a [`Record`]'s encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RecordSuffix {
    /// See [`Record::lsn`].
    pub lsn: Lsn,
    /// See [`Record::recorded_at_unix_nanos`].
    pub recorded_at_unix_nanos: i64,
    /// See [`Record::prev_hash`].
    pub prev_hash: RecordHash,
    /// See [`Record::batch_last_lsn`].
    pub batch_last_lsn: Lsn,
    /// See [`Record::durable_lsn`].
    pub durable_lsn: Lsn,
}

/// The head of a record body (version byte, `Body::Record` tag, kind, event
/// id, event) encoded, with the record-hash state after absorbing it. Built
/// on the appending thread; the writer appends the [`RecordSuffix`] and
/// finishes the hash, which is still `blake3(key, whole body)`.
#[derive(Clone)]
pub struct PreparedBody {
    bytes: Vec<u8>,
    /// Boxed: a blake3 state is about 2 KiB, and prepared bodies move
    /// through queues and vectors.
    hasher: Box<blake3::Hasher>,
    event_start: usize,
    /// Set once the hash state has absorbed a suffix.
    framed: bool,
}

impl std::fmt::Debug for PreparedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedBody")
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct PrefixRef<'a> {
    kind: RecordKind,
    event_id: &'a str,
    #[serde(with = "serde_bytes")]
    event: &'a [u8],
}

/// The variant index of `Body::Record`, a one-byte bincode varint.
const BODY_RECORD_TAG: u8 = 0;

impl PreparedBody {
    /// Encodes and hashes the head of a record body.
    ///
    /// # Errors
    /// [`CodecError::TooLarge`] when the body could not fit a frame.
    pub fn new(kind: RecordKind, event_id: &str, event: &[u8]) -> Result<PreparedBody, CodecError> {
        if kind.body_version() != BODY_FORMAT_VERSION {
            return Err(CodecError::KindNotWritable(kind));
        }
        let mut bytes = Vec::with_capacity(event.len() + event_id.len() + 56);
        bytes.push(BODY_FORMAT_VERSION);
        bytes.push(BODY_RECORD_TAG);
        bincode::serde::encode_into_std_write(
            PrefixRef {
                kind,
                event_id,
                event,
            },
            &mut bytes,
            bincode_config(),
        )
        .map_err(|error| CodecError::Undecodable(error.to_string()))?;
        if bytes.len() > FRAME_BODY_BYTES_MAX {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        let mut hasher = Box::new(blake3::Hasher::new_keyed(&RECORD_HASH_KEY));
        hasher.update(&bytes);
        let event_start = bytes.len() - event.len();
        Ok(PreparedBody {
            bytes,
            hasher,
            event_start,
            framed: false,
        })
    }

    /// The event bytes inside.
    #[must_use]
    pub fn event(&self) -> &[u8] {
        &self.bytes[self.event_start..]
    }

    /// An upper bound of the whole frame's size.
    #[must_use]
    pub fn frame_bytes_max(&self) -> usize {
        // Suffix: four varints of at most 9 bytes and a 32-byte hash.
        FRAME_HEADER_BYTES + self.bytes.len() + 4 * 9 + 32
    }
}

/// Appends one record frame built from a prepared head and its suffix, and
/// returns the record's hash: the same bytes and hash as
/// [`encode_record_frame`] of the whole record, for a fraction of the
/// writer's hashing. Advances the prepared hash state in place (no copy of
/// it), so a prepared body frames exactly one record.
///
/// # Errors
/// [`CodecError::TooLarge`] when the body exceeds the frame bound; the buffer
/// is then left as it was.
///
/// # Panics
/// When the prepared body was already framed (a bug in the caller).
pub fn encode_prepared_frame(
    buffer: &mut Vec<u8>,
    prepared: &mut PreparedBody,
    suffix: &RecordSuffix,
) -> Result<RecordHash, CodecError> {
    assert!(!prepared.framed, "a prepared body frames one record only");
    let frame_start = buffer.len();
    buffer.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    buffer.extend_from_slice(&prepared.bytes);
    let suffix_start = buffer.len();
    if let Err(error) = bincode::serde::encode_into_std_write(suffix, buffer, bincode_config()) {
        buffer.truncate(frame_start);
        return Err(CodecError::Undecodable(error.to_string()));
    }
    let body_start = frame_start + FRAME_HEADER_BYTES;
    let body_len = buffer.len() - body_start;
    let Ok(len) = u32::try_from(body_len).map_err(|_| ()).and_then(|len| {
        if body_len > FRAME_BODY_BYTES_MAX {
            Err(())
        } else {
            Ok(len)
        }
    }) else {
        buffer.truncate(frame_start);
        return Err(CodecError::TooLarge(body_len));
    };
    let crc = crc32fast::hash(&buffer[body_start..]);
    buffer[frame_start..frame_start + 4].copy_from_slice(&len.to_le_bytes());
    buffer[frame_start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
    prepared.hasher.update(&buffer[suffix_start..]);
    prepared.framed = true;
    Ok(RecordHash(*prepared.hasher.finalize().as_bytes()))
}

/// The trailer record that closes a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// First LSN in the segment.
    pub first_lsn: Lsn,
    /// Last LSN in the segment.
    pub last_lsn: Lsn,
    /// Number of records (equals `last - first + 1`; kept as a cross-check).
    pub record_count: u64,
    /// Hash of the last record: it commits to every record before it.
    pub last_hash: RecordHash,
    /// When the segment was sealed, unix nanoseconds.
    pub sealed_at_unix_nanos: i64,
}

/// What a frame body holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A log record.
    Record(Record),
    /// A segment's closing seal.
    Seal(Seal),
}

#[derive(Serialize)]
enum BodyRef<'a> {
    Record(RecordRef<'a>),
    #[allow(dead_code)] // present only so the variant index matches `Body`
    Seal(Seal),
}

/// Why bytes are not a valid frame or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the frame declares (or than a frame header).
    #[error("frame truncated: need {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// A zero length: the end of written data in a preallocated segment.
    #[error("zero frame length (end of written data)")]
    ZeroLength,
    /// A length above [`FRAME_BODY_BYTES_MAX`].
    #[error("frame length {declared} is above the limit of {FRAME_BODY_BYTES_MAX} bytes")]
    LengthOutOfBounds {
        /// The declared length.
        declared: u64,
    },
    /// The body does not match its checksum.
    #[error("frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// CRC in the frame header.
        stored: u32,
        /// CRC of the body as read.
        computed: u32,
    },
    /// A body format version this build does not know.
    #[error("unknown body format version {0}")]
    UnknownVersion(u8),
    /// A record kind that the body's format version does not have (a
    /// format-1 compensation in a format-2 body, or the other way round).
    #[error("record kind {kind:?} is not part of body format {version}")]
    KindNotInVersion {
        /// The body's version byte.
        version: u8,
        /// The kind it holds.
        kind: RecordKind,
    },
    /// A kind the current body format cannot write.
    #[error("record kind {0:?} is read from old logs only; it cannot be written")]
    KindNotWritable(RecordKind),
    /// The body is not a valid bincode body.
    #[error("body does not decode: {0}")]
    Undecodable(String),
    /// The body decodes but bytes are left over.
    #[error("body has {0} trailing bytes")]
    TrailingBytes(usize),
    /// The body decodes, but is not the canonical (shortest) encoding of
    /// what it holds.
    #[error("body is not canonically encoded (an overlong integer)")]
    NotCanonical,
    /// The encoded body would exceed [`FRAME_BODY_BYTES_MAX`].
    #[error("record body of {0} bytes is above the limit of {FRAME_BODY_BYTES_MAX} bytes")]
    TooLarge(usize),
}

/// Appends one record frame to `buffer` and returns the record's hash.
///
/// # Errors
/// [`CodecError::TooLarge`] when the body would exceed the frame bound; the
/// buffer is then left as it was.
pub fn encode_record_frame(
    buffer: &mut Vec<u8>,
    record: &RecordRef<'_>,
) -> Result<RecordHash, CodecError> {
    let body = encode_body_into(
        buffer,
        record.kind.body_version(),
        &BodyRef::Record(*record),
    )?;
    Ok(record_hash(body))
}

/// Appends one seal frame to `buffer`.
///
/// # Errors
/// Never in practice (a seal is small); kept for symmetry.
pub fn encode_seal_frame(buffer: &mut Vec<u8>, seal: &Seal) -> Result<(), CodecError> {
    encode_body_into(buffer, BODY_FORMAT_VERSION, &BodyRef::Seal(*seal)).map(|_| ())
}

fn encode_body_into<'b>(
    buffer: &'b mut Vec<u8>,
    version: u8,
    body: &BodyRef<'_>,
) -> Result<&'b [u8], CodecError> {
    let frame_start = buffer.len();
    buffer.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    buffer.push(version);
    if let Err(error) = bincode::serde::encode_into_std_write(body, buffer, bincode_config()) {
        buffer.truncate(frame_start);
        return Err(CodecError::Undecodable(error.to_string()));
    }
    let body_start = frame_start + FRAME_HEADER_BYTES;
    let body_len = buffer.len() - body_start;
    if body_len > FRAME_BODY_BYTES_MAX {
        buffer.truncate(frame_start);
        return Err(CodecError::TooLarge(body_len));
    }
    let crc = crc32fast::hash(&buffer[body_start..]);
    let len = u32::try_from(body_len).map_err(|_| CodecError::TooLarge(body_len))?;
    buffer[frame_start..frame_start + 4].copy_from_slice(&len.to_le_bytes());
    buffer[frame_start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
    Ok(&buffer[body_start..])
}

/// Reads a frame header and returns the body length it declares, bounds-checked.
///
/// # Errors
/// [`CodecError::Truncated`], [`CodecError::ZeroLength`] or
/// [`CodecError::LengthOutOfBounds`].
pub fn frame_body_len(bytes: &[u8]) -> Result<usize, CodecError> {
    let header = bytes
        .get(..FRAME_HEADER_BYTES)
        .ok_or(CodecError::Truncated {
            needed: FRAME_HEADER_BYTES,
            available: bytes.len(),
        })?;
    let declared = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if declared == 0 {
        return Err(CodecError::ZeroLength);
    }
    let declared = declared as usize;
    if declared > FRAME_BODY_BYTES_MAX {
        return Err(CodecError::LengthOutOfBounds {
            declared: declared as u64,
        });
    }
    Ok(declared)
}

/// Splits one CRC-checked frame off the front of `bytes`: returns the body and
/// the whole frame's length. Allocates nothing.
///
/// # Errors
/// Any [`CodecError`] about the frame (not about the body's content).
pub fn split_frame(bytes: &[u8]) -> Result<(&[u8], usize), CodecError> {
    let body_len = frame_body_len(bytes)?;
    let frame_len = FRAME_HEADER_BYTES + body_len;
    let body = bytes
        .get(FRAME_HEADER_BYTES..frame_len)
        .ok_or(CodecError::Truncated {
            needed: frame_len,
            available: bytes.len(),
        })?;
    let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(CodecError::ChecksumMismatch { stored, computed });
    }
    Ok((body, frame_len))
}

/// Whether body format `version` has record kind `kind`.
fn kind_in_version(kind: RecordKind, version: u8) -> Result<(), CodecError> {
    let allowed = match kind {
        RecordKind::Event => true,
        RecordKind::CompensationV1 { .. } => version == 1,
        RecordKind::Compensation { .. } => version >= 2,
    };
    if allowed {
        Ok(())
    } else {
        Err(CodecError::KindNotInVersion { version, kind })
    }
}

/// Decodes a frame body (version byte + bincode).
///
/// # Errors
/// [`CodecError::UnknownVersion`], [`CodecError::Undecodable`] or
/// [`CodecError::TrailingBytes`].
pub fn decode_body(body: &[u8]) -> Result<Body, CodecError> {
    let (&version, rest) = body
        .split_first()
        .ok_or(CodecError::Undecodable("empty body".into()))?;
    if !is_known_body_version(version) {
        return Err(CodecError::UnknownVersion(version));
    }
    let (decoded, used): (Body, usize) = bincode::serde::decode_from_slice(rest, bincode_config())
        .map_err(|error| CodecError::Undecodable(error.to_string()))?;
    if used != rest.len() {
        return Err(CodecError::TrailingBytes(rest.len() - used));
    }
    // Both versions share one bincode layout except for the compensation
    // kinds: version 1 has only `CompensationV1`, version 2 only
    // `Compensation`. Events and seals read the same in both.
    if let Body::Record(record) = &decoded {
        kind_in_version(record.kind, version)?;
    }
    // bincode also accepts overlong varints (`fb 01 00` for 1). A record's
    // stored bytes are its identity, so only the one canonical encoding, the
    // one the writer produces, is a valid body.
    let canonical = CANONICAL_CHECK_BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        bincode::serde::encode_into_std_write(&decoded, buffer, bincode_config())
            .is_ok_and(|_| buffer.as_slice() == rest)
    });
    if !canonical {
        return Err(CodecError::NotCanonical);
    }
    Ok(decoded)
}

thread_local! {
    /// Reused by [`decode_body`]'s canonical-encoding check.
    static CANONICAL_CHECK_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Encodes a body exactly as the writer would (version byte + bincode), for
/// round-trip checks.
///
/// # Errors
/// As [`encode_record_frame`].
pub fn encode_body(body: &Body) -> Result<Vec<u8>, CodecError> {
    let version = match body {
        Body::Record(record) => record.kind.body_version(),
        Body::Seal(_) => BODY_FORMAT_VERSION,
    };
    encode_body_as(body, version)
}

/// Encodes a body with the version byte `version`, for round-trip checks of
/// bodies read from older logs (a version-1 event re-encodes as version 1).
///
/// # Errors
/// As [`encode_record_frame`]; [`CodecError::KindNotInVersion`] when the
/// kind does not exist in that version, [`CodecError::UnknownVersion`] for
/// a version this build does not know.
pub fn encode_body_as(body: &Body, version: u8) -> Result<Vec<u8>, CodecError> {
    if !is_known_body_version(version) {
        return Err(CodecError::UnknownVersion(version));
    }
    let mut frame = Vec::new();
    match body {
        Body::Record(record) => {
            kind_in_version(record.kind, version)?;
            encode_body_into(&mut frame, version, &BodyRef::Record(record.as_ref()))?;
        }
        Body::Seal(seal) => {
            encode_body_into(&mut frame, version, &BodyRef::Seal(*seal))?;
        }
    }
    frame.drain(..FRAME_HEADER_BYTES);
    Ok(frame)
}

impl Record {
    /// A borrowed view with the same encoding.
    #[must_use]
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            kind: self.kind,
            event_id: &self.event_id,
            event: &self.event,
            lsn: self.lsn,
            recorded_at_unix_nanos: self.recorded_at_unix_nanos,
            prev_hash: self.prev_hash,
            batch_last_lsn: self.batch_last_lsn,
            durable_lsn: self.durable_lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_seal_frame_fits_the_seal_reserve() {
        let seal = Seal {
            first_lsn: Lsn(u64::MAX),
            last_lsn: Lsn(u64::MAX),
            record_count: u64::MAX,
            last_hash: RecordHash([0xff; 32]),
            sealed_at_unix_nanos: i64::MIN,
        };
        let mut frame = Vec::new();
        encode_seal_frame(&mut frame, &seal).expect("encodes");
        let reserve = usize::try_from(crate::segment::SEAL_RESERVE_BYTES).expect("small");
        assert!(
            frame.len() + crate::segment::FOOTER_BYTES <= reserve,
            "{}",
            frame.len()
        );
    }

    fn sample(lsn: u64) -> Record {
        Record {
            lsn: Lsn(lsn),
            recorded_at_unix_nanos: 1_700_000_000_000_000_000,
            prev_hash: RecordHash([7; 32]),
            kind: RecordKind::Event,
            batch_last_lsn: Lsn(lsn),
            durable_lsn: Lsn(lsn.saturating_sub(1)),
            event_id: format!("event-{lsn}"),
            event: vec![1, 2, 3, 250, 251, 252, 253, 254, 255],
        }
    }

    #[test]
    fn record_frame_round_trips_and_hashes_the_stored_body() -> Result<(), CodecError> {
        let record = sample(300);
        let mut buffer = Vec::new();
        let hash = encode_record_frame(&mut buffer, &record.as_ref())?;
        let (body, frame_len) = split_frame(&buffer)?;
        assert_eq!(frame_len, buffer.len());
        assert_eq!(record_hash(body), hash);
        assert_eq!(decode_body(body)?, Body::Record(record.clone()));
        assert_eq!(encode_body(&Body::Record(record))?, body);
        Ok(())
    }

    #[test]
    fn flipped_bit_is_a_checksum_mismatch() -> Result<(), CodecError> {
        let mut buffer = Vec::new();
        encode_record_frame(&mut buffer, &sample(1).as_ref())?;
        buffer[FRAME_HEADER_BYTES + 3] ^= 0x10;
        assert!(matches!(
            split_frame(&buffer),
            Err(CodecError::ChecksumMismatch { .. })
        ));
        Ok(())
    }

    #[test]
    fn oversized_length_is_refused_before_reading() {
        let mut bytes = vec![0u8; 16];
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            split_frame(&bytes),
            Err(CodecError::LengthOutOfBounds { .. })
        ));
        assert_eq!(split_frame(&[0u8; 8]), Err(CodecError::ZeroLength));
    }

    #[test]
    fn a_crc_valid_body_claiming_a_huge_string_is_refused_without_allocating() {
        // Body: version, Record tag, kind Event, then an event id claiming
        // 2^40 bytes.
        let mut body = vec![BODY_FORMAT_VERSION, 0, 0, 253];
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            decode_body(&body),
            Err(CodecError::Undecodable(_))
        ));
    }

    #[test]
    fn an_overlong_varint_is_not_a_valid_body() -> Result<(), CodecError> {
        let mut frame = Vec::new();
        encode_record_frame(&mut frame, &sample(1).as_ref())?;
        let body = &frame[FRAME_HEADER_BYTES..];
        // body[3] is the event id's length, 7: write it as `fb 07 00` instead.
        assert_eq!(body[3], 7);
        let mut overlong = body[..3].to_vec();
        overlong.extend_from_slice(&[251, 7, 0]);
        overlong.extend_from_slice(&body[4..]);
        assert_eq!(decode_body(&overlong), Err(CodecError::NotCanonical));
        Ok(())
    }

    #[test]
    fn a_prepared_frame_equals_the_whole_record_encoded_at_once() -> Result<(), CodecError> {
        let record = sample(77);
        let mut whole = Vec::new();
        let whole_hash = encode_record_frame(&mut whole, &record.as_ref())?;
        let mut prepared = PreparedBody::new(record.kind, &record.event_id, &record.event)?;
        assert_eq!(prepared.event(), record.event.as_slice());
        let suffix = RecordSuffix {
            lsn: record.lsn,
            recorded_at_unix_nanos: record.recorded_at_unix_nanos,
            prev_hash: record.prev_hash,
            batch_last_lsn: record.batch_last_lsn,
            durable_lsn: record.durable_lsn,
        };
        let mut split = vec![0xEE];
        let split_hash = encode_prepared_frame(&mut split, &mut prepared, &suffix)?;
        assert_eq!(&split[1..], whole.as_slice());
        assert_eq!(split_hash, whole_hash);
        assert!(prepared.frame_bytes_max() >= whole.len());
        Ok(())
    }

    /// The compensation bodies of FORMAT.md 4.3, byte for byte: format 1's
    /// (still read) and format 2's (what the writer writes).
    #[test]
    fn compensation_bodies_of_both_versions_decode_as_documented() -> Result<(), CodecError> {
        let tail = |bytes: &mut Vec<u8>| {
            // event_id "x", empty event, lsn 300, recorded_at -1, prev_hash
            // of 0x11s, batch_last_lsn 301, durable_lsn 299.
            bytes.extend_from_slice(&[0x01, 0x78, 0x00, 0xfb, 0x2c, 0x01, 0x01]);
            bytes.extend_from_slice(&[0x11; 32]);
            bytes.extend_from_slice(&[0xfb, 0x2d, 0x01, 0xfb, 0x2b, 0x01]);
        };
        let mut v1 = vec![0x01, 0x00, 0x01, 0xfc, 0x70, 0x11, 0x01, 0x00];
        tail(&mut v1);
        let Body::Record(record) = decode_body(&v1)? else {
            panic!("a record body");
        };
        assert_eq!(
            record.kind,
            RecordKind::CompensationV1 {
                compensates: Lsn(70_000)
            }
        );
        assert_eq!(
            (
                record.lsn,
                record.recorded_at_unix_nanos,
                record.batch_last_lsn
            ),
            (Lsn(300), -1, Lsn(301))
        );
        let mut v2 = vec![0x02, 0x00, 0x02, 0xfc, 0x70, 0x11, 0x01, 0x00];
        v2.extend_from_slice(&[0x22; 32]);
        tail(&mut v2);
        let Body::Record(record) = decode_body(&v2)? else {
            panic!("a record body");
        };
        assert_eq!(
            record.kind,
            RecordKind::Compensation {
                compensates: Lsn(70_000),
                compensates_hash: RecordHash([0x22; 32]),
            }
        );
        assert_eq!(encode_body(&Body::Record(record))?, v2);
        // Each version holds only its own compensation kind.
        let mut swapped = v1.clone();
        swapped[0] = 2;
        assert!(matches!(
            decode_body(&swapped),
            Err(CodecError::KindNotInVersion { version: 2, .. })
        ));
        let mut swapped = v2.clone();
        swapped[0] = 1;
        assert!(matches!(
            decode_body(&swapped),
            Err(CodecError::KindNotInVersion { version: 1, .. })
        ));
        // An event reads the same in both versions.
        let mut frame = Vec::new();
        encode_record_frame(&mut frame, &sample(5).as_ref())?;
        let mut event_v1 = frame[FRAME_HEADER_BYTES..].to_vec();
        assert_eq!(event_v1[0], BODY_FORMAT_VERSION);
        event_v1[0] = 1;
        assert_eq!(decode_body(&event_v1)?, Body::Record(sample(5)));
        assert_eq!(decode_body(&[3, 0]), Err(CodecError::UnknownVersion(3)));
        Ok(())
    }

    #[test]
    fn a_format_one_compensation_cannot_be_written() {
        let kind = RecordKind::CompensationV1 {
            compensates: Lsn(1),
        };
        assert_eq!(
            PreparedBody::new(kind, "x", b"").err(),
            Some(CodecError::KindNotWritable(kind))
        );
    }

    #[test]
    fn genesis_depends_on_the_log_name() {
        assert_ne!(genesis_hash("a"), genesis_hash("b"));
        assert_eq!(genesis_hash("a"), genesis_hash("a"));
    }
}
