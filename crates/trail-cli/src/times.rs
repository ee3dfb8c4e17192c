//! Times as the CLI takes and prints them. A time flag (`--since`,
//! `--until`, `--at`, ...) takes an RFC 3339 time with its offset
//! (`2026-12-01T10:00:00Z`, `2026-12-01T12:00:00+02:00`, fractions of a
//! second allowed), a duration back from now (`15m`, `2h`, `7d`, `30s`,
//! `1h 30m`) or `now`. The proto carries unix nanoseconds.

use std::time::Duration;

/// A time flag's value; a relative one is resolved against "now" when the
/// request is built, so the same parse is testable with any clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// Unix nanoseconds.
    At(i64),
    /// This long before now.
    Ago(Duration),
}

impl TimeArg {
    /// Unix nanoseconds, with `now` (unix nanoseconds) for a relative time.
    /// A duration reaching before 1677 (the limit of i64 nanoseconds)
    /// stops there.
    #[must_use]
    pub fn unix_nanos(self, now: i64) -> i64 {
        match self {
            TimeArg::At(nanos) => nanos,
            TimeArg::Ago(duration) => {
                now.saturating_sub(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX))
            }
        }
    }
}

/// Parses a time flag's value (see the module's doc); a clap value parser,
/// so a bad value is a usage error naming its flag.
///
/// # Errors
/// The text is none of the accepted forms, or is out of range.
pub fn parse_time(text: &str) -> Result<TimeArg, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(TimeArg::Ago(Duration::ZERO));
    }
    // A date starts `YYYY-`; a duration never does.
    let bytes = text.as_bytes();
    if bytes.len() > 4 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-' {
        let timestamp: jiff::Timestamp = text.parse().map_err(|error| {
            format!("{text:?} is not an RFC 3339 time with an offset (2026-12-01T10:00:00Z, 2026-12-01T12:00:00+02:00): {error}")
        })?;
        return i64::try_from(timestamp.as_nanosecond())
            .map(TimeArg::At)
            .map_err(|_| format!("{text} is out of range (years 1678 to 2262)"));
    }
    humantime::parse_duration(text)
        .map(TimeArg::Ago)
        .map_err(|error| {
            format!(
                "{text:?} is neither an RFC 3339 time (2026-12-01T10:00:00Z) nor a duration back from now (15m, 2h, 7d, 30s): {error}"
            )
        })
}

/// Unix nanoseconds as RFC 3339 in UTC with all nine digits of the
/// fraction (fixed width, so a column of them lines up).
#[must_use]
pub fn format_rfc3339(unix_nanos: i64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(unix_nanos)) {
        Ok(timestamp) => format!("{timestamp:.9}"),
        Err(_) => format!("{unix_nanos}ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;
    /// 2026-12-01T10:00:00Z.
    const DEC_1_10H: i64 = 1_796_119_200 * SECOND;

    #[test]
    fn rfc3339_times_with_offsets_and_fractions() {
        assert_eq!(
            parse_time("2026-12-01T10:00:00Z"),
            Ok(TimeArg::At(DEC_1_10H))
        );
        assert_eq!(
            parse_time("2026-12-01T12:00:00+02:00"),
            Ok(TimeArg::At(DEC_1_10H))
        );
        assert_eq!(
            parse_time("2026-12-01T05:30:00-04:30"),
            Ok(TimeArg::At(DEC_1_10H))
        );
        assert_eq!(
            parse_time("2026-12-01T10:00:00.000000123Z"),
            Ok(TimeArg::At(DEC_1_10H + 123))
        );
        assert_eq!(
            parse_time("2026-12-01T10:00:00.5z"),
            Ok(TimeArg::At(DEC_1_10H + SECOND / 2))
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(TimeArg::At(0)));
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Ok(TimeArg::At(-SECOND)));
    }

    #[test]
    fn durations_go_back_from_now() {
        let now = DEC_1_10H;
        let ago = |text: &str| parse_time(text).map(|time| time.unix_nanos(now));
        assert_eq!(ago("30s"), Ok(now - 30 * SECOND));
        assert_eq!(ago("15m"), Ok(now - 15 * 60 * SECOND));
        assert_eq!(ago("2h"), Ok(now - 2 * 3600 * SECOND));
        assert_eq!(ago("7d"), Ok(now - 7 * 86_400 * SECOND));
        assert_eq!(ago("1h 30m"), Ok(now - 5400 * SECOND));
        assert_eq!(ago("now"), Ok(now));
        assert!(TimeArg::Ago(Duration::MAX).unix_nanos(now) < 0);
    }

    #[test]
    fn bad_times_say_what_is_accepted() {
        for bad in [
            "",
            "yesterday",
            "15",
            "2026-12-01",
            "2026-12-01T10:00:00",
            "2026-13-01T10:00:00Z",
            "10:00",
        ] {
            let error = parse_time(bad).err();
            assert!(error.is_some(), "{bad:?} parsed");
        }
        let error = parse_time("yesterday").err().unwrap_or_default();
        assert!(
            error.contains("RFC 3339") && error.contains("15m"),
            "{error}"
        );
        let error = parse_time("2026-12-01T10:00:00").err().unwrap_or_default();
        assert!(error.contains("offset"), "{error}");
    }

    #[test]
    fn printed_times_are_fixed_width_utc() {
        assert_eq!(format_rfc3339(DEC_1_10H), "2026-12-01T10:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(DEC_1_10H + 1),
            "2026-12-01T10:00:00.000000001Z"
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        let printed = format_rfc3339(DEC_1_10H + 123_456_789);
        assert_eq!(
            parse_time(&printed),
            Ok(TimeArg::At(DEC_1_10H + 123_456_789))
        );
    }
}
