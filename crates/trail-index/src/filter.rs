//! What Query and filtered Subscribe select: one definition, used by the
//! query index to build its search and by Subscribe (and the tests'
//! brute-force scan) to test a record directly, so the two cannot disagree.

use std::collections::BTreeMap;

use prost::Message;
use trail_proto::v1::{self as proto, Outcome, RecordKind};

use crate::error::{IndexError, Result};
use crate::event::{IndexedRecord, Kind};

/// A text filter: the whole value, or (written with a trailing `*`) a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextMatch {
    /// The value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
}

impl TextMatch {
    /// Whether `value` matches.
    #[must_use]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            TextMatch::Exact(wanted) => value == wanted,
            TextMatch::Prefix(prefix) => value.starts_with(prefix.as_str()),
        }
    }
}

/// A half-open time range, unix nanoseconds: `since <= t < until`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive lower bound.
    pub since: Option<i64>,
    /// Exclusive upper bound.
    pub until: Option<i64>,
}

impl TimeRange {
    /// Whether `t` is in the range.
    #[must_use]
    pub fn contains(&self, t: i64) -> bool {
        self.since.is_none_or(|since| t >= since) && self.until.is_none_or(|until| t < until)
    }

    fn is_set(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }
}

/// Every condition of a query; all must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Who acted.
    pub actor: Option<TextMatch>,
    /// What was acted on.
    pub resource: Option<TextMatch>,
    /// What was done.
    pub action: Option<TextMatch>,
    /// The trace, exactly.
    pub trace_id: Option<String>,
    /// The outcome.
    pub outcome: Option<Outcome>,
    /// Attributes that must be present with these values.
    pub attributes: BTreeMap<String, String>,
    /// The server's time.
    pub recorded: TimeRange,
    /// The producer's clock.
    pub occurred: TimeRange,
    /// Event or compensation.
    pub kind: Option<Kind>,
}

/// Reads a text filter: empty is none; a trailing `*` is a prefix; a `*`
/// anywhere else is refused (the index matches values and prefixes only).
fn text(field: &str, value: &str, prefix_allowed: bool) -> Result<Option<TextMatch>> {
    if value.is_empty() {
        return Ok(None);
    }
    let (body, prefix) = match value.strip_suffix('*') {
        Some(body) if prefix_allowed => (body, true),
        _ => (value, false),
    };
    if prefix_allowed && body.contains('*') {
        return Err(IndexError::InvalidQuery(format!(
            "filter.{field}: {value:?} has a `*` before its end; only a trailing `*` (a prefix) is supported"
        )));
    }
    Ok(match (prefix, body.is_empty()) {
        // `*` alone matches everything: no condition.
        (true, true) => None,
        (true, false) => Some(TextMatch::Prefix(body.to_owned())),
        (false, _) => Some(TextMatch::Exact(body.to_owned())),
    })
}

fn range(field: &str, since: Option<i64>, until: Option<i64>) -> Result<TimeRange> {
    if let (Some(since), Some(until)) = (since, until) {
        if since >= until {
            return Err(IndexError::InvalidQuery(format!(
                "filter.{field}: since ({since}) is not before until ({until}): the range is empty"
            )));
        }
    }
    Ok(TimeRange { since, until })
}

impl Filter {
    /// The filter a request carries; `conditions_max` bounds how many
    /// conditions it may set (`limits.query_filters_max`).
    ///
    /// # Errors
    /// [`IndexError::InvalidQuery`] naming the field and what is wrong.
    pub fn from_proto(filter: &proto::Filter, conditions_max: usize) -> Result<Filter> {
        let outcome = match Outcome::try_from(filter.outcome) {
            Ok(Outcome::Unspecified) => None,
            Ok(outcome) => Some(outcome),
            Err(_) => {
                return Err(IndexError::InvalidQuery(format!(
                    "filter.outcome: {} is not an outcome",
                    filter.outcome
                )))
            }
        };
        let kind = match RecordKind::try_from(filter.kind) {
            Ok(RecordKind::Unspecified) => None,
            Ok(RecordKind::Event) => Some(Kind::Event),
            Ok(RecordKind::Compensation) => Some(Kind::Compensation),
            Err(_) => {
                return Err(IndexError::InvalidQuery(format!(
                    "filter.kind: {} is not a record kind",
                    filter.kind
                )))
            }
        };
        if let Some(key) = filter.attributes.keys().find(|key| key.is_empty()) {
            return Err(IndexError::InvalidQuery(format!(
                "filter.attributes: an attribute name is empty (value {:?})",
                filter.attributes.get(key)
            )));
        }
        let parsed = Filter {
            actor: text("actor", &filter.actor, true)?,
            resource: text("resource", &filter.resource, true)?,
            action: text("action", &filter.action, true)?,
            trace_id: text("trace_id", &filter.trace_id, false)?.map(|found| match found {
                TextMatch::Exact(value) | TextMatch::Prefix(value) => value,
            }),
            outcome,
            attributes: filter.attributes.clone(),
            recorded: range(
                "recorded",
                filter.recorded_since_unix_nanos,
                filter.recorded_until_unix_nanos,
            )?,
            occurred: range(
                "occurred",
                filter.occurred_since_unix_nanos,
                filter.occurred_until_unix_nanos,
            )?,
            kind,
        };
        let conditions = parsed.conditions();
        if conditions > conditions_max {
            return Err(IndexError::InvalidQuery(format!(
                "filter has {conditions} conditions; the limit is {conditions_max} (limits.query_filters_max)"
            )));
        }
        Ok(parsed)
    }

    /// How many conditions are set (each attribute counts as one).
    #[must_use]
    pub fn conditions(&self) -> usize {
        [
            self.actor.is_some(),
            self.resource.is_some(),
            self.action.is_some(),
            self.trace_id.is_some(),
            self.outcome.is_some(),
            self.recorded.is_set(),
            self.occurred.is_set(),
            self.kind.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
            + self.attributes.len()
    }

    /// Whether the filter selects every record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.conditions() == 0
    }

    /// Whether `record` matches every condition.
    #[must_use]
    pub fn matches(&self, record: &IndexedRecord) -> bool {
        let event = &record.event;
        let text = |wanted: &Option<TextMatch>, value: &str| {
            wanted.as_ref().is_none_or(|wanted| wanted.matches(value))
        };
        text(&self.actor, &event.actor)
            && text(&self.resource, &event.resource)
            && text(&self.action, &event.action)
            && self
                .trace_id
                .as_ref()
                .is_none_or(|trace| *trace == event.trace_id)
            && self
                .outcome
                .is_none_or(|outcome| outcome == record.outcome())
            && self
                .attributes
                .iter()
                .all(|(key, value)| event.attributes.get(key) == Some(value))
            && self.recorded.contains(record.recorded_at_unix_nanos)
            && self.occurred.contains(event.occurred_at_unix_nanos)
            && self.kind.is_none_or(|kind| kind == record.kind)
    }
}

/// A digest of the filter as the request carried it, which a cursor
/// carries so that it is not used with another filter.
#[must_use]
pub fn request_digest(filter: &proto::Filter) -> [u8; 8] {
    let digest = blake3::hash(&filter.encode_to_vec());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_star_is_a_prefix_and_other_stars_are_refused() {
        assert_eq!(
            text("actor", "order/*", true).ok().flatten(),
            Some(TextMatch::Prefix("order/".into()))
        );
        assert_eq!(text("actor", "*", true).ok().flatten(), None);
        assert_eq!(
            text("trace_id", "ab*", false).ok().flatten(),
            Some(TextMatch::Exact("ab*".into()))
        );
        let error = text("action", "a*b", true).expect_err("inner star");
        assert!(error.to_string().contains("filter.action"), "{error}");
    }

    #[test]
    fn empty_ranges_and_too_many_conditions_are_refused() {
        let filter = proto::Filter {
            recorded_since_unix_nanos: Some(5),
            recorded_until_unix_nanos: Some(5),
            ..proto::Filter::default()
        };
        let error = Filter::from_proto(&filter, 16).expect_err("empty range");
        assert!(error.to_string().contains("filter.recorded"), "{error}");
        let filter = proto::Filter {
            actor: "a".into(),
            action: "b".into(),
            ..proto::Filter::default()
        };
        let error = Filter::from_proto(&filter, 1).expect_err("two over one");
        assert!(
            error.to_string().contains("limits.query_filters_max"),
            "{error}"
        );
    }
}
