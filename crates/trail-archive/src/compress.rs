//! Object encoding: zstd (one frame) or the file's bytes as they are.
//! Decompression is bounded by the size the manifest records, so a damaged
//! or hostile object cannot make a reader allocate without limit.

use crate::manifest::Compression;

/// The zstd level used when none is configured: fast, and audit events
/// (repetitive protobuf) still shrink several-fold.
pub const ZSTD_LEVEL_DEFAULT: i32 = 3;

/// How objects are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// Compressed or not.
    pub compression: Compression,
    /// The zstd level (1..=19) when compressed.
    pub zstd_level: i32,
}

impl Default for Encoding {
    fn default() -> Encoding {
        Encoding {
            compression: Compression::Zstd,
            zstd_level: ZSTD_LEVEL_DEFAULT,
        }
    }
}

/// Encodes a file's bytes as an object.
///
/// # Errors
/// The compressor's IO error (only on memory exhaustion or a bad level).
pub fn encode(bytes: &[u8], encoding: Encoding) -> std::io::Result<Vec<u8>> {
    match encoding.compression {
        Compression::None => Ok(bytes.to_vec()),
        Compression::Zstd => zstd::bulk::compress(bytes, encoding.zstd_level),
    }
}

/// Decodes an object back to the file's bytes; `expected_bytes` (from the
/// manifest) bounds the output.
///
/// # Errors
/// A description when the object does not decode to exactly that many bytes.
pub fn decode(
    object: &[u8],
    compression: Compression,
    expected_bytes: u64,
) -> Result<Vec<u8>, String> {
    let capacity = usize::try_from(expected_bytes)
        .map_err(|_| format!("a {expected_bytes}-byte file does not fit in memory here"))?;
    let bytes = match compression {
        Compression::None => object.to_vec(),
        Compression::Zstd => zstd::bulk::decompress(object, capacity)
            .map_err(|error| format!("does not decompress as zstd ({error})"))?,
    };
    if bytes.len() as u64 != expected_bytes {
        return Err(format!(
            "decodes to {} bytes; the manifest says {expected_bytes}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds() {
        let data = b"audit audit audit audit audit audit".repeat(100);
        for encoding in [
            Encoding::default(),
            Encoding {
                compression: Compression::None,
                zstd_level: 0,
            },
        ] {
            let object = encode(&data, encoding).expect("encodes");
            assert_eq!(
                decode(&object, encoding.compression, data.len() as u64),
                Ok(data.clone())
            );
            assert!(decode(&object, encoding.compression, data.len() as u64 - 1).is_err());
        }
        assert!(encode(&data, Encoding::default()).expect("encodes").len() < data.len() / 4);
    }
}
