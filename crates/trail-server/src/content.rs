//! The engine's rule for idempotent retries, given by the server (which owns
//! the event schema): `trail_proto::content::same_event`.

/// Compares events as `trail.v1.Event` encodings, unknown fields kept.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProtoEventContent;

impl trail_log::SameContent for ProtoEventContent {
    fn same_content(&self, stored: &[u8], sent: &[u8]) -> bool {
        trail_proto::content::same_event(stored, sent)
    }
}
