//! What a client may send to Trail, checked before any of it reaches the
//! log: the configurable bounds on everything a client controls
//! ([`limits`]) and the field-by-field checks of each request
//! ([`validate`]), whose refusals name the field and the limit's key.
//!
//! The server (`trail-server`) calls these on every request; the fuzz
//! target `request_validate` calls them on arbitrary bytes.

pub mod limits;
pub mod validate;

pub use limits::{Limits, LimitsError};
