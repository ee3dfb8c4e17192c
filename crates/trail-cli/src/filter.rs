//! The record filter flags `trail query` and `trail tail` share, and the
//! proto `Filter` they build. Every flag given must match (they AND);
//! `--actor`, `--resource` and `--action` ending in `*` match a prefix (the
//! server reads the `*`; the CLI passes the text as typed).

use std::collections::BTreeMap;

use clap::{Args, ValueEnum};
use trail_proto::v1::{Filter, RecordKind};

use crate::input;
use crate::times::{self, TimeArg};

/// Which records to select.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only this actor (`alice`), or a prefix ending in `*` (`svc-*`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this resource (`order/42`), or a prefix ending in `*` (`order/*`).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only this action (`refund.create`), or a prefix ending in `*` (`refund.*`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this trace id.
    #[arg(long)]
    pub trace_id: Option<String>,
    /// Only this outcome: success, failure or denied.
    #[arg(long, value_parser = input::parse_outcome)]
    pub outcome: Option<trail_proto::v1::Outcome>,
    /// Only records with this attribute, KEY=VALUE (exact); repeatable, all must match.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<(String, String)>,
    /// Recorded (server time) at or after: RFC 3339 (`2026-12-01T10:00:00Z`,
    /// `+02:00` offsets) or a duration back from now (`15m`, `2h`, `7d`).
    #[arg(long, value_name = "TIME", value_parser = times::parse_time)]
    pub since: Option<TimeArg>,
    /// Recorded before (exclusive); the same forms as --since.
    #[arg(long, value_name = "TIME", value_parser = times::parse_time)]
    pub until: Option<TimeArg>,
    /// Occurred (producer's clock) at or after; the same forms as --since.
    #[arg(long, value_name = "TIME", value_parser = times::parse_time)]
    pub occurred_since: Option<TimeArg>,
    /// Occurred before (exclusive); the same forms as --since.
    #[arg(long, value_name = "TIME", value_parser = times::parse_time)]
    pub occurred_until: Option<TimeArg>,
    /// Only events or only compensations.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Event,
    Compensation,
}

/// Parses `KEY=VALUE` (the value may hold `=`; the key may not be empty).
///
/// # Errors
/// No `=`, or an empty key.
pub fn parse_attr(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        Some(_) => Err(format!("{text:?} has an empty KEY (expected KEY=VALUE)")),
        None => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

impl FilterArgs {
    /// The proto filter, relative times resolved against `now` (unix
    /// nanoseconds). `None` when no flag is given (everything matches).
    ///
    /// # Errors
    /// Two `--attr` with the same key and different values (no record can
    /// match both).
    pub fn to_filter(&self, now: i64) -> Result<Option<Filter>, String> {
        let mut attributes = BTreeMap::new();
        for (key, value) in &self.attrs {
            if let Some(previous) = attributes.insert(key.clone(), value.clone()) {
                if previous != *value {
                    return Err(format!(
                        "--attr {key}={previous} and --attr {key}={value}: no record can have both"
                    ));
                }
            }
        }
        let filter = Filter {
            actor: self.actor.clone().unwrap_or_default(),
            resource: self.resource.clone().unwrap_or_default(),
            action: self.action.clone().unwrap_or_default(),
            trace_id: self.trace_id.clone().unwrap_or_default(),
            outcome: self.outcome.map_or(0, |outcome| outcome as i32),
            attributes,
            recorded_since_unix_nanos: self.since.map(|time| time.unix_nanos(now)),
            recorded_until_unix_nanos: self.until.map(|time| time.unix_nanos(now)),
            occurred_since_unix_nanos: self.occurred_since.map(|time| time.unix_nanos(now)),
            occurred_until_unix_nanos: self.occurred_until.map(|time| time.unix_nanos(now)),
            kind: match self.kind {
                None => RecordKind::Unspecified,
                Some(KindArg::Event) => RecordKind::Event,
                Some(KindArg::Compensation) => RecordKind::Compensation,
            } as i32,
        };
        Ok((filter != Filter::default()).then_some(filter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use trail_proto::v1::Outcome;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        filter: FilterArgs,
    }

    fn parse(args: &[&str]) -> Result<FilterArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("trail").chain(args.iter().copied()))
            .map(|cli| cli.filter)
    }

    const NOW: i64 = 1_796_119_200_000_000_000;

    #[test]
    fn no_flags_is_no_filter() -> Result<(), clap::Error> {
        assert_eq!(parse(&[])?.to_filter(NOW), Ok(None));
        Ok(())
    }

    #[test]
    fn every_flag_lands_in_its_field() -> Result<(), Box<dyn std::error::Error>> {
        let filter = parse(&[
            "--actor",
            "svc-*",
            "--resource",
            "order/42",
            "--action",
            "refund.*",
            "--trace-id",
            "t-9",
            "--outcome",
            "denied",
            "--attr",
            "region=eu",
            "--attr",
            "query=a=b",
            "--since",
            "2h",
            "--until",
            "2026-12-01T11:00:00+02:00",
            "--occurred-since",
            "2026-12-01T00:00:00Z",
            "--occurred-until",
            "now",
            "--kind",
            "compensation",
        ])?
        .to_filter(NOW)?
        .ok_or("no filter")?;
        assert_eq!(
            filter,
            Filter {
                actor: "svc-*".to_owned(),
                resource: "order/42".to_owned(),
                action: "refund.*".to_owned(),
                trace_id: "t-9".to_owned(),
                outcome: Outcome::Denied as i32,
                attributes: [
                    ("region".to_owned(), "eu".to_owned()),
                    ("query".to_owned(), "a=b".to_owned())
                ]
                .into_iter()
                .collect(),
                recorded_since_unix_nanos: Some(NOW - 2 * 3600 * 1_000_000_000),
                recorded_until_unix_nanos: Some(NOW - 3600 * 1_000_000_000),
                occurred_since_unix_nanos: Some(NOW - 10 * 3600 * 1_000_000_000),
                occurred_until_unix_nanos: Some(NOW),
                kind: RecordKind::Compensation as i32,
            }
        );
        Ok(())
    }

    #[test]
    fn one_flag_is_a_filter() -> Result<(), Box<dyn std::error::Error>> {
        let filter = parse(&["--kind", "event"])?.to_filter(NOW)?;
        assert_eq!(
            filter,
            Some(Filter {
                kind: RecordKind::Event as i32,
                ..Filter::default()
            })
        );
        Ok(())
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--attr", "region"][..], "--attr"),
            (&["--attr", "=eu"][..], "--attr"),
            (&["--since", "yesterday"][..], "--since"),
            (&["--until", "2026-12-01T10:00:00"][..], "--until"),
            (&["--occurred-since", "5"][..], "--occurred-since"),
            (&["--outcome", "maybe"][..], "--outcome"),
            (&["--kind", "events"][..], "--kind"),
        ] {
            let error = parse(args).err().map(|error| error.to_string());
            assert!(
                error.as_ref().is_some_and(|error| error.contains(flag)),
                "{args:?}: {error:?}"
            );
        }
    }

    #[test]
    fn attr_pairs() {
        assert_eq!(parse_attr("k=v"), Ok(("k".to_owned(), "v".to_owned())));
        assert_eq!(parse_attr("k="), Ok(("k".to_owned(), String::new())));
        assert_eq!(parse_attr("k=a=b"), Ok(("k".to_owned(), "a=b".to_owned())));
        assert!(parse_attr("k").is_err());
        assert!(parse_attr("=v").is_err());
    }

    #[test]
    fn the_same_attr_twice() -> Result<(), clap::Error> {
        let same = parse(&["--attr", "k=v", "--attr", "k=v"])?.to_filter(NOW);
        assert!(matches!(same, Ok(Some(filter)) if filter.attributes.len() == 1));
        let clash = parse(&["--attr", "k=v", "--attr", "k=w"])?.to_filter(NOW);
        assert!(clash.is_err_and(|error| error.contains("--attr k=v and --attr k=w")));
        Ok(())
    }
}
