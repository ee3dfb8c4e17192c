//! The commands that read a log's derived state on the server: `query`
//! (the query index), `state` and `history` (the resource-state store) and
//! `snapshot` (Admin). Tables for people; with `--json`, one JSON object per
//! line.

use anyhow::{anyhow, bail};
use clap::Args;
use trail_proto::v1::admin_client::AdminClient;
use trail_proto::v1::{
    FieldChange, GetStateRequest, HistoryRequest, Outcome, QueryRequest, SnapshotRequest,
    StateChangeRow,
};

use crate::filter::FilterArgs;
use crate::times::{self, TimeArg};
use crate::{connect, connect_channel, display_log, input, print_json, print_record, status_error};

/// Read-your-own-writes: how far the derived store must have come before it
/// answers.
#[derive(Debug, Clone, Default, Args)]
pub struct WaitArgs {
    /// Answer only once the server's derived store has taken in this LSN (the
    /// lsn of your own append, to read your own writes).
    #[arg(long, value_name = "LSN")]
    pub min_lsn: Option<u64>,
    /// How long the server may wait for --min-lsn, in milliseconds (default:
    /// its limits.index_wait_ms_default); a wait that runs out fails with
    /// DeadlineExceeded.
    #[arg(long, value_name = "MS", requires = "min_lsn")]
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[arg(long, default_value = "")]
    pub log: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Records per page (default: the server's limits.query_page_records_default).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Go on from a page's next cursor (with the same filters and --desc).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Newest first.
    #[arg(long)]
    pub desc: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Follow the cursors to the last page (--limit is then the page size).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[arg(long, default_value = "")]
    pub log: String,
    /// The resource, as events name it (`order/42`).
    pub resource: String,
    /// The state after every change at or before this LSN (default: now).
    #[arg(long, value_name = "LSN", conflicts_with = "at", value_parser = clap::value_parser!(u64).range(1..))]
    pub at_lsn: Option<u64>,
    /// The state as of this time (recorded): RFC 3339 or a duration back from now.
    #[arg(long, value_name = "TIME", value_parser = times::parse_time)]
    pub at: Option<TimeArg>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long, default_value = "")]
    pub log: String,
    /// The resource, as events name it (`order/42`).
    pub resource: String,
    /// First LSN (default: the start).
    #[arg(long, value_name = "LSN", value_parser = clap::value_parser!(u64).range(1..))]
    pub from: Option<u64>,
    /// Last LSN, inclusive (default: the end).
    #[arg(long, value_name = "LSN", value_parser = clap::value_parser!(u64).range(1..))]
    pub to: Option<u64>,
    /// At most this many changes (default: all of them, page after page).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `trail query`: prints the records like `trail read`, then a footer: on
/// stderr for a table (`3 records; index_lsn 7; next page: --cursor C` or
/// `...; no further page`), or as the last JSON line with `--json`
/// (`{"records":3,"index_lsn":7,"next_cursor":"C"}`, `null` at the end).
pub async fn query(addr: &str, json: bool, args: QueryArgs) -> anyhow::Result<()> {
    let filter = args
        .filter
        .to_filter(input::now_unix_nanos())
        .map_err(|error| anyhow!(error))?;
    let mut client = connect(addr).await?;
    let mut cursor = args.cursor.clone().unwrap_or_default();
    let mut printed = 0u64;
    loop {
        let page = client
            .query(QueryRequest {
                log: args.log.clone(),
                filter: filter.clone(),
                limit: args.limit.unwrap_or(0),
                cursor: cursor.clone(),
                descending: args.desc,
                min_lsn: args.wait.min_lsn.unwrap_or(0),
                min_lsn_timeout_ms: args.wait.timeout_ms.unwrap_or(0),
            })
            .await
            .map_err(|status| status_error(&status))?
            .into_inner();
        for record in &page.records {
            print_record(json, record)?;
        }
        printed += page.records.len() as u64;
        let more = !page.next_cursor.is_empty();
        if args.all && more {
            if page.next_cursor == cursor {
                bail!("the server answered the cursor {cursor:?} with itself as the next one");
            }
            cursor = page.next_cursor;
            continue;
        }
        if json {
            print_json(&serde_json::json!({
                "records": printed,
                "index_lsn": page.index_lsn,
                "next_cursor": more.then_some(&page.next_cursor),
            }))?;
        } else {
            eprintln!(
                "{}",
                query_footer(printed, page.index_lsn, &page.next_cursor)
            );
        }
        return Ok(());
    }
}

/// The table's footer line (stderr).
fn query_footer(records: u64, index_lsn: u64, next_cursor: &str) -> String {
    let next = if next_cursor.is_empty() {
        "no further page".to_owned()
    } else {
        format!("next page: --cursor {next_cursor}")
    };
    format!(
        "{}; index_lsn {index_lsn}; {next}",
        count(records, "record")
    )
}

fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A JSON text as a value (a text that is not JSON stays a string).
fn json_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// `trail state`: a header line, then the state as pretty JSON or `no state
/// (never set, or deleted)`:
///
/// ```text
/// resource order/42 as of now  last change lsn 6  state_lsn 7  hash 31…
/// {
///   "status": "refunded"
/// }
/// ```
pub async fn state(addr: &str, json: bool, args: StateArgs) -> anyhow::Result<()> {
    let at_unix_nanos = args.at.map(|at| at.unix_nanos(input::now_unix_nanos()));
    let mut client = connect(addr).await?;
    let state = client
        .get_state(GetStateRequest {
            log: args.log.clone(),
            resource: args.resource.clone(),
            at_lsn: args.at_lsn.unwrap_or(0),
            at_unix_nanos,
            min_lsn: args.wait.min_lsn.unwrap_or(0),
            min_lsn_timeout_ms: args.wait.timeout_ms.unwrap_or(0),
        })
        .await
        .map_err(|status| status_error(&status))?
        .into_inner();
    let value = state.exists.then(|| json_value(&state.state_json));
    if json {
        return print_json(&serde_json::json!({
            "log": display_log(&args.log),
            "resource": args.resource,
            "at_lsn": args.at_lsn,
            "at_unix_nanos": at_unix_nanos,
            "exists": state.exists,
            "state": value,
            "last_change_lsn": state.last_change_lsn,
            "state_lsn": state.state_lsn,
            "state_hash": hex::encode(&state.state_hash),
        }));
    }
    let point = match (args.at_lsn, at_unix_nanos) {
        (Some(lsn), _) => format!("lsn {lsn}"),
        (None, Some(nanos)) => times::format_rfc3339(nanos),
        (None, None) => "now".to_owned(),
    };
    let last_change = if state.last_change_lsn == 0 {
        "never changed".to_owned()
    } else {
        format!("last change lsn {}", state.last_change_lsn)
    };
    println!(
        "resource {} as of {point}  {last_change}  state_lsn {}  hash {}",
        args.resource,
        state.state_lsn,
        hex::encode(&state.state_hash)
    );
    match value {
        Some(value) => println!("{}", serde_json::to_string_pretty(&value)?),
        None => println!("no state (never set, or deleted)"),
    }
    Ok(())
}

/// `trail history`: a table (a header, a row per change, an indented line
/// per changed path, `path: before -> after`), or with `--json` one object
/// per change. Footer on stderr: `4 changes; state_lsn 7`.
pub async fn history(addr: &str, json: bool, args: HistoryArgs) -> anyhow::Result<()> {
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from > to {
            bail!("--from {from} is after --to {to}");
        }
    }
    let mut client = connect(addr).await?;
    if !json {
        println!("{}", history_header());
    }
    let mut from_lsn = args.from.unwrap_or(0);
    let mut printed = 0u64;
    loop {
        let page = client
            .history(HistoryRequest {
                log: args.log.clone(),
                resource: args.resource.clone(),
                from_lsn,
                to_lsn: args.to.unwrap_or(0),
                // The server's page size: it refuses a larger one than its
                // limit, which the CLI does not know; --limit cuts here.
                limit: 0,
                min_lsn: args.wait.min_lsn.unwrap_or(0),
                min_lsn_timeout_ms: args.wait.timeout_ms.unwrap_or(0),
            })
            .await
            .map_err(|status| status_error(&status))?
            .into_inner();
        // The first row past --limit, when the server sent more.
        let mut cut_at = None;
        for row in &page.changes {
            if args.limit.is_some_and(|limit| printed >= limit) {
                cut_at = Some(row.lsn);
                break;
            }
            if json {
                print_json(&history_json(row))?;
            } else {
                for line in history_lines(row) {
                    println!("{line}");
                }
            }
            printed += 1;
        }
        let next_from_lsn = cut_at.unwrap_or(page.next_from_lsn);
        let limit_reached = args.limit.is_some_and(|limit| printed >= limit);
        if next_from_lsn == 0 || limit_reached {
            let more = if next_from_lsn != 0 {
                format!(" (--limit reached; more from --from {next_from_lsn})")
            } else {
                String::new()
            };
            eprintln!(
                "{}{more}; state_lsn {}",
                count(printed, "change"),
                page.state_lsn
            );
            return Ok(());
        }
        if page.next_from_lsn <= from_lsn {
            bail!(
                "the server answered --from {from_lsn} with a next page from {}",
                page.next_from_lsn
            );
        }
        from_lsn = page.next_from_lsn;
    }
}

fn history_header() -> String {
    format!(
        "{:>10}  {:<30}  {:<16} {:<16} {:<8}  change",
        "lsn", "time", "actor", "action", "outcome"
    )
}

fn outcome_text(outcome: i32) -> String {
    Outcome::try_from(outcome).map_or_else(
        |_| outcome.to_string(),
        |outcome| input::outcome_name(outcome).to_owned(),
    )
}

/// A value as the table shows it: compact JSON, `(absent)` when unset.
fn value_text(value: Option<&String>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => value.to_string(),
            Err(_) => text.clone(),
        },
    }
}

fn path_text(field: &FieldChange) -> &str {
    if field.path.is_empty() {
        "(state)"
    } else {
        &field.path
    }
}

/// One change as table lines: the row, then one line per changed path.
fn history_lines(row: &StateChangeRow) -> Vec<String> {
    let mut change = if row.applied {
        row.change_kind.clone()
    } else {
        format!("{}  REJECTED: {}", row.change_kind, row.rejected_reason)
    };
    if row.compensates != 0 {
        change.push_str(&format!("  undoes {}: {:?}", row.compensates, row.reason));
    }
    if row.compensated_by != 0 {
        change.push_str(&format!("  (compensated by {})", row.compensated_by));
    }
    let mut lines = vec![format!(
        "{:>10}  {:<30}  {:<16} {:<16} {:<8}  {change}",
        row.lsn,
        times::format_rfc3339(row.recorded_at_unix_nanos),
        row.actor,
        row.action,
        outcome_text(row.outcome),
    )];
    for field in &row.fields {
        lines.push(format!(
            "{:12}{}: {} -> {}",
            "",
            path_text(field),
            value_text(field.before_json.as_ref()),
            value_text(field.after_json.as_ref())
        ));
    }
    lines
}

/// One change as JSON: `before` / `after` are the values (left out when
/// absent; `null` is JSON null), `rejected_reason` is null when it applied.
fn history_json(row: &StateChangeRow) -> serde_json::Value {
    let fields: Vec<serde_json::Value> = row
        .fields
        .iter()
        .map(|field| {
            let mut value = serde_json::json!({ "path": field.path });
            if let Some(before) = &field.before_json {
                value["before"] = json_value(before);
            }
            if let Some(after) = &field.after_json {
                value["after"] = json_value(after);
            }
            value
        })
        .collect();
    let mut json = serde_json::json!({
        "lsn": row.lsn,
        "recorded_at_unix_nanos": row.recorded_at_unix_nanos,
        "recorded_at": times::format_rfc3339(row.recorded_at_unix_nanos),
        "actor": row.actor,
        "action": row.action,
        "outcome": outcome_text(row.outcome),
        "change_kind": row.change_kind,
        "applied": row.applied,
        "rejected_reason": (!row.applied).then_some(&row.rejected_reason),
        "fields": fields,
    });
    // Keys of compensation only where they apply: other rows read as before.
    if row.compensates != 0 {
        json["compensates"] = row.compensates.into();
        json["reason"] = row.reason.clone().into();
    }
    if row.compensated_by != 0 {
        json["compensated_by"] = row.compensated_by.into();
    }
    json
}

/// `trail snapshot`: `snapshot of log shop  lsn 7  hash 31…  file F  1234 bytes`.
pub async fn snapshot(addr: &str, json: bool, log: &str) -> anyhow::Result<()> {
    let channel = connect_channel(addr).await?;
    let snapshot = AdminClient::new(channel)
        .snapshot(SnapshotRequest {
            log: log.to_owned(),
        })
        .await
        .map_err(|status| status_error(&status))?
        .into_inner();
    if json {
        print_json(&serde_json::json!({
            "log": display_log(log),
            "lsn": snapshot.lsn,
            "hash": hex::encode(&snapshot.hash),
            "file": snapshot.file,
            "bytes": snapshot.bytes,
        }))
    } else {
        println!(
            "snapshot of log {}  lsn {}  hash {}  file {}  {} bytes",
            display_log(log),
            snapshot.lsn,
            hex::encode(&snapshot.hash),
            snapshot.file,
            snapshot.bytes
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> StateChangeRow {
        StateChangeRow {
            lsn: 12,
            recorded_at_unix_nanos: 1_796_119_200_000_000_007,
            actor: "alice".to_owned(),
            action: "order.update".to_owned(),
            outcome: Outcome::Success as i32,
            change_kind: "merge_patch".to_owned(),
            applied: true,
            rejected_reason: String::new(),
            fields: vec![
                FieldChange {
                    path: "/status".to_owned(),
                    before_json: Some("\"new\"".to_owned()),
                    after_json: Some("\"paid\"".to_owned()),
                },
                FieldChange {
                    path: "/note".to_owned(),
                    before_json: None,
                    after_json: Some("{ \"a\" : [1, null] }".to_owned()),
                },
                FieldChange {
                    path: "/old".to_owned(),
                    before_json: Some("null".to_owned()),
                    after_json: None,
                },
            ],
            ..StateChangeRow::default()
        }
    }

    #[test]
    fn a_history_row_as_a_table() {
        assert_eq!(
            history_lines(&row()),
            [
                "        12  2026-12-01T10:00:00.000000007Z  alice            order.update     success   merge_patch",
                "            /status: \"new\" -> \"paid\"",
                "            /note: (absent) -> {\"a\":[1,null]}",
                "            /old: null -> (absent)",
            ]
        );
        let rejected = StateChangeRow {
            applied: false,
            change_kind: "json_patch".to_owned(),
            rejected_reason: "test failed at /status".to_owned(),
            fields: Vec::new(),
            ..row()
        };
        assert_eq!(
            history_lines(&rejected),
            ["        12  2026-12-01T10:00:00.000000007Z  alice            order.update     success   json_patch  REJECTED: test failed at /status"]
        );
        let whole = StateChangeRow {
            change_kind: "delete".to_owned(),
            fields: vec![FieldChange {
                path: String::new(),
                before_json: Some("{\"x\":1}".to_owned()),
                after_json: None,
            }],
            ..row()
        };
        assert_eq!(
            history_lines(&whole)[1],
            "            (state): {\"x\":1} -> (absent)"
        );
        assert_eq!(
            history_header(),
            "       lsn  time                            actor            action           outcome   change"
        );
    }

    #[test]
    fn a_history_row_as_json() {
        assert_eq!(
            history_json(&row()),
            serde_json::json!({
                "lsn": 12,
                "recorded_at_unix_nanos": 1_796_119_200_000_000_007_i64,
                "recorded_at": "2026-12-01T10:00:00.000000007Z",
                "actor": "alice",
                "action": "order.update",
                "outcome": "success",
                "change_kind": "merge_patch",
                "applied": true,
                "rejected_reason": null,
                "fields": [
                    {"path": "/status", "before": "new", "after": "paid"},
                    {"path": "/note", "after": {"a": [1, null]}},
                    {"path": "/old", "before": null},
                ],
            })
        );
    }

    #[test]
    fn query_footers() {
        assert_eq!(
            query_footer(2, 7, "abc"),
            "2 records; index_lsn 7; next page: --cursor abc"
        );
        assert_eq!(
            query_footer(1, 7, ""),
            "1 record; index_lsn 7; no further page"
        );
        assert_eq!(
            query_footer(0, 0, ""),
            "0 records; index_lsn 0; no further page"
        );
    }
}
