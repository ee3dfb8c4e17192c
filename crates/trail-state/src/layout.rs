//! The sled layout: one tree, keys told apart by their first byte, values in
//! bincode 2 (`config::standard()`, through serde) with JSON documents kept as
//! JSON text. Byte-level description: docs/FORMAT.md, "Derived state store".
//!
//! One tree, so that every write of an `apply` (entries, heads, counters and
//! the watermark) is one `sled::Batch`, which a crash cannot split.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::input::{ChangeKind, Watermark};

/// Bumped on any change to a key or value encoding; a store with another
/// version is damaged (rebuilt), never migrated in place. 2: time keys only
/// with checkpoints; 3: compensation keys and rows (FORMAT.md 12.6).
pub(crate) const LAYOUT_VERSION: u32 = 3;

pub(crate) const VERSION_KEY: &[u8] = &[0x01];
pub(crate) const WATERMARK_KEY: &[u8] = &[0x02];
pub(crate) const COUNTERS_KEY: &[u8] = &[0x03];
pub(crate) const HEAD: u8 = 0x10;
pub(crate) const HISTORY: u8 = 0x20;
pub(crate) const CHECKPOINT: u8 = 0x30;
pub(crate) const TIME: u8 = 0x40;
pub(crate) const COMPENSATION: u8 = 0x50;

/// `tag | len(resource) u32 BE | resource`: keys of one resource and tag are
/// contiguous, and no resource's keys are a prefix of another's.
pub(crate) fn resource_prefix(tag: u8, resource: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 4 + resource.len() + 16);
    k.push(tag);
    // Resources longer than u32::MAX bytes cannot reach here: the log bounds
    // event sizes far below that. Saturate rather than panic anyway.
    let len = u32::try_from(resource.len()).unwrap_or(u32::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(resource.as_bytes());
    k
}

pub(crate) fn head_key(resource: &str) -> Vec<u8> {
    resource_prefix(HEAD, resource)
}

/// History and checkpoint keys end in the LSN, big endian, so a range scan
/// walks a resource's rows in LSN order.
pub(crate) fn lsn_key(tag: u8, resource: &str, lsn: u64) -> Vec<u8> {
    let mut k = resource_prefix(tag, resource);
    k.extend_from_slice(&lsn.to_be_bytes());
    k
}

/// i64 -> u64 preserving order (flip the sign bit), so times sort as bytes.
pub(crate) fn sortable_time(t: i64) -> u64 {
    (t as u64) ^ (1u64 << 63)
}

/// The time index: one key per checkpoint (at `lsn`, its row recorded at `t`).
pub(crate) fn time_key(resource: &str, t: i64, lsn: u64) -> Vec<u8> {
    let mut k = resource_prefix(TIME, resource);
    k.extend_from_slice(&sortable_time(t).to_be_bytes());
    k.extend_from_slice(&lsn.to_be_bytes());
    k
}

/// `50 | target lsn u64 BE` -> the LSN of the compensation that undid it. No
/// resource in the key: the log's LSNs are unique across resources, and the
/// server asks by LSN range (`compensations_between`).
pub(crate) fn compensation_key(target: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = COMPENSATION;
    k[1..].copy_from_slice(&target.to_be_bytes());
    k
}

/// A key taken apart; what snapshot loading checks and what stats count.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Version,
    Watermark,
    Counters,
    Head { resource: &'a str },
    History { resource: &'a str, lsn: u64 },
    Checkpoint { resource: &'a str, lsn: u64 },
    Time { resource: &'a str, lsn: u64 },
    Compensation { target: u64 },
}

pub(crate) fn parse_key(key: &[u8]) -> Result<Key<'_>, String> {
    match key {
        [0x01] => return Ok(Key::Version),
        [0x02] => return Ok(Key::Watermark),
        [0x03] => return Ok(Key::Counters),
        [COMPENSATION, rest @ ..] => {
            let target = <[u8; 8]>::try_from(rest).map_err(|_| {
                format!(
                    "compensation key with {} bytes after the tag, not 8",
                    rest.len()
                )
            })?;
            return Ok(Key::Compensation {
                target: u64::from_be_bytes(target),
            });
        }
        _ => {}
    }
    let (&tag, rest) = key.split_first().ok_or("empty key")?;
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("key with tag {tag:#04x} too short for a resource length"))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let resource = rest.get(4..4 + len).ok_or_else(|| {
        format!("key with tag {tag:#04x}: resource length {len} runs past the key")
    })?;
    let resource = std::str::from_utf8(resource)
        .map_err(|e| format!("key with tag {tag:#04x}: resource is not UTF-8: {e}"))?;
    let tail = &rest[4 + len..];
    let be = |b: &[u8]| -> Option<u64> { b.try_into().ok().map(u64::from_be_bytes) };
    match (tag, tail.len()) {
        (HEAD, 0) => Ok(Key::Head { resource }),
        (HISTORY, 8) => Ok(Key::History {
            resource,
            lsn: be(tail).ok_or("lsn")?,
        }),
        (CHECKPOINT, 8) => Ok(Key::Checkpoint {
            resource,
            lsn: be(tail).ok_or("lsn")?,
        }),
        (TIME, 16) => Ok(Key::Time {
            resource,
            lsn: be(&tail[8..]).ok_or("lsn")?,
        }),
        (tag, n) => Err(format!(
            "unknown key: tag {tag:#04x} with {n} bytes after the resource"
        )),
    }
}

/// The LSN at the end of a history, checkpoint or time key.
pub(crate) fn lsn_suffix(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    tail.try_into().ok().map(u64::from_be_bytes)
}

/// Per resource: its current state (the checkpoint that is always there) and
/// what `apply` needs to extend its history without a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredHead {
    /// History rows so far (applied and rejected); checkpoints fall on multiples
    /// of the checkpoint interval.
    pub entries: u64,
    pub last_entry_lsn: u64,
    /// The last applied (not rejected) change.
    pub last_change_lsn: Option<u64>,
    pub last_recorded_at: i64,
    /// JSON text; `None` = absent.
    pub state: Option<String>,
}

/// The state right after the history row with the key's LSN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredCheckpoint {
    pub last_change_lsn: Option<u64>,
    pub state: Option<String>,
}

/// One history row; the LSN and resource are in the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    pub recorded_at: i64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub kind: ChangeKind,
    pub result: StoredResult,
    /// Set on a compensation record's row.
    pub compensation: Option<StoredCompensation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredCompensation {
    /// The LSN this row's record undoes (below the row's own LSN).
    pub compensates: u64,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct StoredCompensationRef<'a> {
    pub compensates: u64,
    pub reason: &'a str,
}

/// `StoredEntry` borrowing its strings from the input, for writing: the same
/// fields in the same order, so the same bytes (serde writes `&str` and
/// `String` alike).
#[derive(Debug, Serialize)]
pub(crate) struct StoredEntryRef<'a> {
    pub recorded_at: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub kind: ChangeKind,
    pub result: &'a StoredResult,
    pub compensation: Option<StoredCompensationRef<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum StoredResult {
    Applied { fields: Vec<StoredField> },
    Rejected { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredField {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Kept so stats need no scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredCounters {
    pub resources: u64,
    pub entries: u64,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    // Cannot fail for these types (no maps, every sequence has a known length);
    // still an error rather than a panic.
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
}

/// Decode a whole value: trailing bytes are damage too.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (v, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(v)
}

pub(crate) fn encode_watermark(w: &Watermark) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[..8].copy_from_slice(&w.lsn.to_le_bytes());
    b[8..].copy_from_slice(&w.hash);
    b
}

pub(crate) fn decode_watermark(b: &[u8]) -> Result<Watermark, String> {
    let b: &[u8; 40] = b
        .try_into()
        .map_err(|_| format!("watermark value is {} bytes, not 40", b.len()))?;
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&b[..8]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&b[8..]);
    Ok(Watermark {
        lsn: u64::from_le_bytes(lsn),
        hash,
    })
}

pub(crate) fn decode_version(b: &[u8]) -> Result<u32, String> {
    let b: [u8; 4] = b
        .try_into()
        .map_err(|_| format!("layout version value is {} bytes, not 4", b.len()))?;
    Ok(u32::from_le_bytes(b))
}

/// Check that a value decodes as what its key says (snapshot loading).
pub(crate) fn validate_entry(key: &[u8], value: &[u8]) -> Result<(), String> {
    match parse_key(key)? {
        Key::Version | Key::Watermark => Err("meta key inside the entries".to_owned()),
        Key::Counters => decode::<StoredCounters>(value).map(drop),
        Key::Head { .. } => decode::<StoredHead>(value).map(drop),
        Key::History { lsn, .. } => {
            let entry = decode::<StoredEntry>(value)?;
            match entry.compensation {
                Some(c) if c.compensates >= lsn => Err(format!(
                    "history row at lsn {lsn} compensates lsn {}, which is not before it",
                    c.compensates
                )),
                _ => Ok(()),
            }
        }
        Key::Checkpoint { .. } => decode::<StoredCheckpoint>(value).map(drop),
        Key::Time { .. } if value.is_empty() => Ok(()),
        Key::Time { .. } => Err(format!("time key with a {}-byte value", value.len())),
        Key::Compensation { target } => {
            let by = decode::<u64>(value)?;
            if by <= target {
                return Err(format!(
                    "compensation of lsn {target} by lsn {by}, which is not after it"
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_parse_back_and_sort() {
        assert_eq!(
            parse_key(&head_key("a/b")).unwrap(),
            Key::Head { resource: "a/b" }
        );
        assert_eq!(
            parse_key(&lsn_key(HISTORY, "r", 7)).unwrap(),
            Key::History {
                resource: "r",
                lsn: 7
            }
        );
        assert_eq!(
            parse_key(&time_key("r", -5, 9)).unwrap(),
            Key::Time {
                resource: "r",
                lsn: 9
            }
        );
        assert!(time_key("r", -1, 0) < time_key("r", 0, 0));
        assert!(time_key("r", i64::MIN, 0) < time_key("r", i64::MAX, 0));
        assert!(lsn_key(HISTORY, "r", 255) < lsn_key(HISTORY, "r", 256));
        assert!(parse_key(&[0x20, 0, 0]).is_err());
        assert_eq!(
            parse_key(&compensation_key(300)).unwrap(),
            Key::Compensation { target: 300 }
        );
        assert!(parse_key(&[0x50, 0, 1]).is_err());
        assert!(compensation_key(255) < compensation_key(256));
        // The example in FORMAT.md 12.2.
        assert_eq!(compensation_key(300), [0x50, 0, 0, 0, 0, 0, 0, 0x01, 0x2c]);
        assert_eq!(lsn_suffix(&lsn_key(CHECKPOINT, "x", 42)), Some(42));
        // The example in FORMAT.md 12.2.
        assert_eq!(
            lsn_key(HISTORY, "r", 300),
            [0x20, 0, 0, 0, 1, b'r', 0, 0, 0, 0, 0, 0, 0x01, 0x2c]
        );
    }

    #[test]
    fn encodings_match_format_md() {
        let e = StoredField {
            path: "/a".into(),
            before: None,
            after: Some("1".into()),
        };
        assert_eq!(encode(&e).unwrap(), vec![2, b'/', b'a', 0, 1, 1, b'1']);
        assert_eq!(encode(&ChangeKind::Delete).unwrap(), vec![3]);
        assert_eq!(encode(&ChangeKind::Fields).unwrap(), vec![4]);
        assert_eq!(encode(&ChangeKind::None).unwrap(), vec![5]);
        // A compensation key's value: the compensator's LSN as a varint.
        assert_eq!(encode(&301u64).unwrap(), vec![0xfb, 0x2d, 0x01]);
        let owned = StoredEntry {
            recorded_at: -7,
            actor: "a".into(),
            action: "act".into(),
            outcome: "success".into(),
            kind: ChangeKind::MergePatch,
            result: StoredResult::Applied {
                fields: vec![e.clone()],
            },
            compensation: Some(StoredCompensation {
                compensates: 5,
                reason: "r".into(),
            }),
        };
        let borrowed = StoredEntryRef {
            recorded_at: owned.recorded_at,
            actor: &owned.actor,
            action: &owned.action,
            outcome: &owned.outcome,
            kind: owned.kind,
            result: &owned.result,
            compensation: owned.compensation.as_ref().map(|c| StoredCompensationRef {
                compensates: c.compensates,
                reason: &c.reason,
            }),
        };
        assert_eq!(encode(&borrowed).unwrap(), encode(&owned).unwrap());
        // The example in FORMAT.md 12.3: a change-less compensation row.
        let row = StoredEntry {
            recorded_at: 1,
            actor: "a".into(),
            action: "u".into(),
            outcome: "ok".into(),
            kind: ChangeKind::None,
            result: StoredResult::Applied { fields: vec![] },
            compensation: Some(StoredCompensation {
                compensates: 7,
                reason: "oops".into(),
            }),
        };
        assert_eq!(
            encode(&row).unwrap(),
            [
                &[2, 1, b'a', 1, b'u', 2, b'o', b'k', 5, 0, 0, 1, 7, 4][..],
                b"oops"
            ]
            .concat()
        );
        let h = StoredHead {
            entries: 300,
            last_entry_lsn: 1,
            last_change_lsn: None,
            last_recorded_at: -1,
            state: None,
        };
        assert_eq!(encode(&h).unwrap(), vec![0xfb, 0x2c, 0x01, 1, 0, 1, 0]);
    }

    #[test]
    fn validation_checks_compensation_keys_and_rows() {
        assert!(validate_entry(&compensation_key(3), &encode(&4u64).unwrap()).is_ok());
        assert!(validate_entry(&compensation_key(3), &encode(&3u64).unwrap()).is_err());
        assert!(validate_entry(&compensation_key(3), &[0xfb]).is_err());
        let row = |compensates| StoredEntry {
            recorded_at: 0,
            actor: String::new(),
            action: String::new(),
            outcome: String::new(),
            kind: ChangeKind::None,
            result: StoredResult::Applied { fields: vec![] },
            compensation: Some(StoredCompensation {
                compensates,
                reason: String::new(),
            }),
        };
        let key = lsn_key(HISTORY, "r", 9);
        assert!(validate_entry(&key, &encode(&row(8)).unwrap()).is_ok());
        assert!(validate_entry(&key, &encode(&row(9)).unwrap()).is_err());
    }
}
