//! Derived state that follows a log: the query index (tantivy) and the
//! resource-state store (`trail-state`, sled), each a follower with its own
//! watermark, kept reading the log by one driver loop ([`driver`]).
//!
//! - `event.rs`: a record as the stores see it (its event decoded once)
//! - `filter.rs`: what Query and filtered Subscribe select
//! - `query_index.rs`: the tantivy index and its searches
//! - `state.rs`: the state store as a follower, and its snapshot policy
//! - `driver.rs`: the follow-apply-commit loop on a thread per store
//! - `derived.rs`: a log's derived stores, opened, checked and started
//! - `rebuild.rs`: `trail index rebuild`, offline
//! - `cursor.rs`: Query's opaque page cursor

pub mod cursor;
pub mod derived;
pub mod driver;
pub mod error;
pub mod event;
pub mod filter;
pub mod query_index;
pub mod rebuild;
pub mod state;

pub use derived::{
    DerivedLog, DerivedOptions, DerivedPaths, DERIVED_IDLE_DEFAULT, DERIVED_NICE_DEFAULT,
};
pub use driver::{Pace, Progress};
pub use error::IndexError;
pub use event::{IndexedRecord, Kind};
pub use filter::{Filter, TextMatch, TimeRange};
pub use query_index::{LsnPage, PageRequest};
pub use rebuild::{rebuild_offline, RebuildReport};
pub use state::SnapshotPolicy;
