//! `trail compensate` and `trail rollback`: undo by appending compensation
//! records, with a dry run first (`--dry-run`) and a check after
//! (`--auto-verify`). Tables for people; with `--json`, one JSON object.

use anyhow::anyhow;
use clap::Args;
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{
    rollback_request, CompensateMode, CompensateRequest, CompensateResponse, Event, RollbackRequest,
};

use crate::times::{self, TimeArg};
use crate::{connect, display_log, input, print_json, status_error};

/// Who asks, why, and whether to write.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// Who asks for the undo (recorded in every compensation record).
    #[arg(long)]
    pub actor: String,
    /// Why (required; recorded in every compensation record).
    #[arg(long)]
    pub reason: String,
    /// Show the exact records that would be appended and the resulting
    /// state; write nothing.
    #[arg(long, conflicts_with = "auto_verify")]
    pub dry_run: bool,
    /// After appending, read the state back through the server's state
    /// store and check it equals the prediction.
    #[arg(long)]
    pub auto_verify: bool,
    /// A trace id for the compensation events.
    #[arg(long, default_value = "")]
    pub trace_id: String,
}

#[derive(Debug, Args)]
pub struct CompensateArgs {
    #[arg(long, default_value = "")]
    pub log: String,
    /// The LSN of the record to undo.
    #[arg(required_unless_present = "event_id", conflicts_with = "event_id", value_parser = clap::value_parser!(u64).range(1..))]
    pub lsn: Option<u64>,
    /// The event id of the record to undo, instead of its LSN.
    #[arg(long)]
    pub event_id: Option<String>,
    /// The hash the record must have (from its receipt).
    #[arg(long, value_name = "HEX")]
    pub expect_hash: Option<String>,
    /// Undo the later changes to the resource too, newest first, in the
    /// same atomic batch.
    #[arg(long, conflicts_with = "force")]
    pub cascade: bool,
    /// Apply the inverse to today's state if it applies, despite later changes.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub ask: AskArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("point").required(true).args(["to_lsn", "to_event_id", "to"])))]
pub struct RollbackArgs {
    #[arg(long, default_value = "")]
    pub log: String,
    /// The resource to roll back, as events name it (`order/42`).
    pub resource: String,
    /// Keep the changes up to this LSN; undo every one after it.
    #[arg(long, value_name = "LSN")]
    pub to_lsn: Option<u64>,
    /// Keep the changes up to this event; undo every one after it.
    #[arg(long, value_name = "ID")]
    pub to_event_id: Option<String>,
    /// Keep the changes recorded at or before this time (RFC 3339 or a
    /// duration back from now); undo every one after it.
    #[arg(long, value_name = "TIME", value_parser = times::parse_time)]
    pub to: Option<TimeArg>,
    #[command(flatten)]
    pub ask: AskArgs,
}

/// `trail compensate`.
pub async fn compensate(addr: &str, json: bool, args: CompensateArgs) -> anyhow::Result<()> {
    let expected_hash = match &args.expect_hash {
        Some(text) => hex::decode(text).map_err(|error| anyhow!("--expect-hash: {error}"))?,
        None => Vec::new(),
    };
    let mode = if args.cascade {
        CompensateMode::Cascade
    } else if args.force {
        CompensateMode::Force
    } else {
        CompensateMode::Refuse
    };
    let mut client = connect(addr).await?;
    let response = client
        .compensate(CompensateRequest {
            log: args.log.clone(),
            lsn: args.lsn.unwrap_or(0),
            event_id: args.event_id.clone().unwrap_or_default(),
            expected_hash,
            actor: args.ask.actor.clone(),
            reason: args.ask.reason.clone(),
            mode: mode as i32,
            dry_run: args.ask.dry_run,
            auto_verify: args.ask.auto_verify,
            trace_id: args.ask.trace_id.clone(),
        })
        .await
        .map_err(|status| status_error(&status))?
        .into_inner();
    let target = match (&args.lsn, &args.event_id) {
        (Some(lsn), _) => format!("lsn {lsn}"),
        (None, Some(id)) => format!("event {id:?}"),
        (None, None) => String::new(),
    };
    print(json, &args.log, &target, &response)
}

/// `trail rollback`.
pub async fn rollback(addr: &str, json: bool, args: RollbackArgs) -> anyhow::Result<()> {
    let to = match (&args.to_lsn, &args.to_event_id, &args.to) {
        (Some(lsn), _, _) => rollback_request::To::ToLsn(*lsn),
        (None, Some(id), _) => rollback_request::To::ToEventId(id.clone()),
        (None, None, Some(time)) => {
            rollback_request::To::ToUnixNanos(time.unix_nanos(input::now_unix_nanos()))
        }
        (None, None, None) => {
            return Err(anyhow!("name the point: --to-lsn, --to-event-id or --to"))
        }
    };
    let mut client = connect(addr).await?;
    let response = client
        .rollback(RollbackRequest {
            log: args.log.clone(),
            resource: args.resource.clone(),
            to: Some(to),
            actor: args.ask.actor.clone(),
            reason: args.ask.reason.clone(),
            dry_run: args.ask.dry_run,
            auto_verify: args.ask.auto_verify,
            trace_id: args.ask.trace_id.clone(),
        })
        .await
        .map_err(|status| status_error(&status))?
        .into_inner();
    print(
        json,
        &args.log,
        &format!("resource {}", args.resource),
        &response,
    )
}

fn state_value(response: &CompensateResponse) -> Option<serde_json::Value> {
    let state = response.state.as_ref()?;
    state.exists.then(|| {
        serde_json::from_str(&state.state_json)
            .unwrap_or_else(|_| serde_json::Value::String(state.state_json.clone()))
    })
}

/// Prints the answer. Table:
///
/// ```text
/// dry run: would append 1 compensation record to log shop (planned at state lsn 9)
///          -  undoes 7  trail.compensate  by ops: "wrong refund"
///             /status: "refunded" -> "paid"
/// state of order/1 after it:
/// {
///   "status": "paid"
/// }
/// ```
fn print(json: bool, log: &str, target: &str, response: &CompensateResponse) -> anyhow::Result<()> {
    let default_event = Event::default();
    let events: Vec<&Event> = response
        .records
        .iter()
        .map(|record| record.event.as_ref().unwrap_or(&default_event))
        .collect();
    let state = state_value(response);
    let resource = response
        .state
        .as_ref()
        .map_or("", |state| state.resource.as_str());
    if json {
        let records: Vec<serde_json::Value> = response
            .records
            .iter()
            .zip(&events)
            .map(|(record, event)| {
                serde_json::json!({
                    "lsn": record.lsn,
                    "hash": hex::encode(&record.hash),
                    "compensates": record.compensates,
                    "compensates_hash": hex::encode(&record.compensates_hash),
                    "batch_last_lsn": record.batch_last_lsn,
                    "event": input::event_to_json(event),
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "log": display_log(log),
            "dry_run": response.dry_run,
            "already_compensated": response.already_compensated,
            "records": records,
            "resource": resource,
            "state": state,
            "planned_at_lsn": response.planned_at_lsn,
            "auto_verify": response.auto_verify.as_ref().map(|verify| serde_json::json!({
                "matched": verify.matched,
                "state_lsn": verify.state_lsn,
            })),
        }));
    }
    let count = match response.records.len() {
        1 => "1 compensation record".to_owned(),
        n => format!("{n} compensation records"),
    };
    if response.already_compensated {
        let by = response.records.first().map_or(0, |record| record.lsn);
        println!("{target} is already compensated by lsn {by}; nothing appended");
    } else if response.dry_run {
        println!(
            "dry run: would append {count} to log {} (planned at state lsn {})",
            display_log(log),
            response.planned_at_lsn
        );
    } else if response.records.is_empty() {
        println!("nothing to undo after the point; nothing appended");
    } else {
        let first = response.records.first().map_or(0, |record| record.lsn);
        let last = response.records.last().map_or(0, |record| record.lsn);
        println!(
            "appended {count} to log {} (lsn {first}..{last}, planned at state lsn {})",
            display_log(log),
            response.planned_at_lsn
        );
    }
    for (record, event) in response.records.iter().zip(&events) {
        let lsn = if record.lsn == 0 {
            "-".to_owned()
        } else {
            record.lsn.to_string()
        };
        let reason = event
            .compensation
            .as_ref()
            .map_or("", |note| note.reason.as_str());
        println!(
            "{lsn:>10}  undoes {}  {}  by {}: {reason:?}",
            record.compensates, event.action, event.actor
        );
        match event
            .change
            .as_ref()
            .and_then(|change| change.kind.as_ref())
        {
            Some(Kind::FieldChanges(fields)) => {
                for field in &fields.changes {
                    let path = if field.path.is_empty() {
                        "(state)"
                    } else {
                        &field.path
                    };
                    let show = |value: &Option<String>| {
                        value.clone().unwrap_or_else(|| "(absent)".to_owned())
                    };
                    println!(
                        "{:12}{path}: {} -> {}",
                        "",
                        show(&field.before_json),
                        show(&field.after_json)
                    );
                }
            }
            Some(_) => println!("{:12}(a change of another kind)", ""),
            None => println!("{:12}(no state change: the event is marked reverted)", ""),
        }
    }
    if !resource.is_empty() {
        let when = if response.dry_run { "after it" } else { "now" };
        println!("state of {resource} {when}:");
        match state {
            Some(value) => println!("{}", serde_json::to_string_pretty(&value)?),
            None => println!("no state (never set, or deleted)"),
        }
    }
    if let Some(verify) = &response.auto_verify {
        println!(
            "auto-verify: the state read back at state lsn {} equals the prediction",
            verify.state_lsn
        );
    }
    Ok(())
}
