//! Query's page cursor: opaque to clients, it carries the last LSN served,
//! the direction, the index watermark the first page was answered at (so
//! every page sees the same log) and a digest of the filter (so a cursor
//! is not used with another query).

use crate::error::{IndexError, Result};

const PREFIX: &str = "c1";

/// Where the next page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The last LSN of the page before.
    pub after: u64,
    /// The watermark the answer is at.
    pub through: u64,
    /// Newest first.
    pub descending: bool,
    /// The filter's digest ([`crate::filter::request_digest`]).
    pub filter: [u8; 8],
}

impl Cursor {
    /// The text a client passes back.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(25);
        bytes.extend_from_slice(&self.after.to_be_bytes());
        bytes.extend_from_slice(&self.through.to_be_bytes());
        bytes.push(u8::from(self.descending));
        bytes.extend_from_slice(&self.filter);
        format!("{PREFIX}{}", hex::encode(bytes))
    }

    /// Reads a cursor and checks it belongs to this query.
    ///
    /// # Errors
    /// [`IndexError::InvalidQuery`] when it does not parse or was made for
    /// another filter or direction.
    pub fn decode(text: &str, descending: bool, filter: [u8; 8]) -> Result<Cursor> {
        let invalid = |why: &str| IndexError::InvalidQuery(format!("cursor: {why}"));
        let bytes = text
            .strip_prefix(PREFIX)
            .and_then(|rest| hex::decode(rest).ok())
            .filter(|bytes| bytes.len() == 25)
            .ok_or_else(|| {
                invalid("not a cursor this server made (pass next_cursor back unchanged)")
            })?;
        let word = |at: usize| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&bytes[at..at + 8]);
            eight
        };
        let cursor = Cursor {
            after: u64::from_be_bytes(word(0)),
            through: u64::from_be_bytes(word(8)),
            descending: bytes[16] == 1,
            filter: word(17),
        };
        if cursor.descending != descending {
            return Err(invalid("it was made for the other direction (descending)"));
        }
        if cursor.filter != filter {
            return Err(invalid("it was made for another filter"));
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_queries() {
        let cursor = Cursor {
            after: 77,
            through: 900,
            descending: true,
            filter: [3; 8],
        };
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text, true, [3; 8]).ok(), Some(cursor));
        assert!(Cursor::decode(&text, false, [3; 8]).is_err());
        assert!(Cursor::decode(&text, true, [4; 8]).is_err());
        assert!(Cursor::decode("c1zz", true, [3; 8]).is_err());
    }
}
