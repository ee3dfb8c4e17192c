//! Archive commands. Without a server: `trail verify --archive URL` checks a
//! log's archive from the bucket alone, and `trail restore` rebuilds a data
//! directory from it (both through `trail_archive`, with a progress bar;
//! credentials from the usual AWS environment variables). Through the
//! server's Admin service: `trail archive status`, `trail archive now` and
//! `trail archive hold` (S3 legal holds, set by the server with its own
//! archive credentials: DECISIONS.md #39).

use std::path::Path;
use trail_archive::check::error_chain;

use anyhow::{anyhow, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use trail_archive::{ArchiveError, ArchiveReport, ArchiveTarget, Progress, TargetConfig};

use trail_proto::v1::admin_client::AdminClient;
use trail_proto::v1::{
    ArchiveHoldRequest, ArchiveHoldResponse, ArchiveNowRequest, ArchiveStatusRequest,
    ArchiveStatusResponse, LockProbe,
};

use crate::{connect_channel, display_log, print_json, status_error};

/// `trail archive ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// What is archived and what is local for a log, and the last failure.
    Status {
        #[arg(long, default_value = "")]
        log: String,
    },
    /// Seal the active segment if it holds records, archive every sealed
    /// segment of a log now, and wait until each is verified.
    Now {
        #[arg(long, default_value = "")]
        log: String,
    },
    /// Set (--on) or clear (--off) the S3 legal hold on the archived
    /// objects of the segments holding an LSN range (or --all), through
    /// the server and its archive credentials.
    Hold(HoldArgs),
}

/// `trail archive hold`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("state").required(true).args(["on", "off"])))]
#[command(group(clap::ArgGroup::new("range").required(true).args(["all", "from_lsn"])))]
pub struct HoldArgs {
    #[arg(long, default_value = "")]
    pub log: String,
    /// Set the legal hold.
    #[arg(long)]
    pub on: bool,
    /// Clear the legal hold.
    #[arg(long)]
    pub off: bool,
    /// First LSN of the range (its whole segment is held).
    #[arg(long, requires = "to_lsn")]
    pub from_lsn: Option<u64>,
    /// Last LSN of the range (its whole segment is held).
    #[arg(long, requires = "from_lsn")]
    pub to_lsn: Option<u64>,
    /// Every archived segment of the log.
    #[arg(long, conflicts_with_all = ["from_lsn", "to_lsn"])]
    pub all: bool,
}

impl HoldArgs {
    fn request(&self) -> anyhow::Result<ArchiveHoldRequest> {
        let (from_lsn, to_lsn) = if self.all {
            (0, 0)
        } else {
            match (self.from_lsn, self.to_lsn) {
                (Some(from), Some(to)) if from >= 1 && from <= to => (from, to),
                (Some(from), Some(to)) => {
                    return Err(anyhow!(
                        "--from-lsn {from} --to-lsn {to}: give 1 <= from <= to"
                    ))
                }
                _ => return Err(anyhow!("give --from-lsn A --to-lsn B, or --all")),
            }
        };
        Ok(ArchiveHoldRequest {
            log: self.log.clone(),
            on: self.on,
            from_lsn,
            to_lsn,
        })
    }
}

fn print_hold(json: bool, log: &str, hold: &ArchiveHoldResponse) -> anyhow::Result<()> {
    let state = if hold.on { "on" } else { "off" };
    if json {
        return print_json(&serde_json::json!({
            "log": log,
            "legal_hold": state,
            "segments": hold.segments,
            "objects": hold.objects,
            "first_lsn": hold.first_lsn,
            "last_lsn": hold.last_lsn,
            "archived_through_lsn": hold.archived_through_lsn,
        }));
    }
    println!(
        "legal hold {state}: {} objects of {} archived segments of log {log} (lsn {}..={}; archived through lsn {})",
        hold.objects, hold.segments, hold.first_lsn, hold.last_lsn, hold.archived_through_lsn
    );
    Ok(())
}

/// Runs an `archive` subcommand against the server at `addr`.
pub async fn admin(addr: &str, json: bool, command: ArchiveCommand) -> anyhow::Result<()> {
    let mut client = AdminClient::new(connect_channel(addr).await?);
    let (log, now, response) = match command {
        ArchiveCommand::Hold(args) => {
            let request = args.request()?;
            let hold = client
                .archive_hold(request)
                .await
                .map_err(|status| status_error(&status))?
                .into_inner();
            return print_hold(json, display_log(&args.log), &hold);
        }
        ArchiveCommand::Status { log } => {
            let response = client
                .archive_status(ArchiveStatusRequest { log: log.clone() })
                .await;
            (log, false, response)
        }
        ArchiveCommand::Now { log } => {
            let response = client
                .archive_now(ArchiveNowRequest { log: log.clone() })
                .await;
            (log, true, response)
        }
    };
    let status = response
        .map_err(|status| status_error(&status))?
        .into_inner();
    print_status(json, display_log(&log), now, &status)
}

fn print_status(
    json: bool,
    log: &str,
    now: bool,
    status: &ArchiveStatusResponse,
) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::json!({
            "log": log,
            "target": status.target,
            "archived_segments": status.archived_segments,
            "archived_through_lsn": status.archived_through_lsn,
            "archived_bytes": status.archived_bytes,
            "local_segments": status.local_segments,
            "local_and_archived": status.local_and_archived,
            "local_bytes": status.local_bytes,
            "first_local_lsn": status.first_local_lsn,
            "uploads": status.uploads,
            "last_upload_unix_nanos": status.last_upload_unix_nanos,
            "failures": status.failures,
            "last_error": status.last_error,
            "lock_mode": status.lock_mode,
            "lock_retention_secs": status.lock_retention_secs,
            "lock_probe": lock_probe_key(status),
            "lock_enforced": lock_probe_key(status) == "enforced",
            "lock_probe_detail": status.lock_probe_detail,
            "objects_locked": status.objects_locked,
        });
        if now {
            value["uploaded_now"] = status.uploaded_now.into();
        }
        return print_json(&value);
    }
    if now {
        println!("archived {} segments now", status.uploaded_now);
    }
    println!("log {log} -> {}", status.target);
    println!(
        "archive: {} segments, lsn 1..={}, {} bytes stored",
        status.archived_segments, status.archived_through_lsn, status.archived_bytes
    );
    println!(
        "local:   {} segments from lsn {} ({} also archived), {} bytes",
        status.local_segments,
        status.first_local_lsn,
        status.local_and_archived,
        status.local_bytes
    );
    println!(
        "uploads since start: {}; failed rounds: {}",
        status.uploads, status.failures
    );
    if status.lock_mode.is_empty() {
        println!("object lock: off");
    } else {
        let days = match status.lock_retention_secs / (24 * 3600) {
            1 => "1 day".to_owned(),
            days => format!("{days} days"),
        };
        println!(
            "object lock: {} for {days} after upload; target enforces it: {}; {} objects locked since start",
            status.lock_mode,
            lock_probe_name(status),
            status.objects_locked
        );
        if !status.lock_probe_detail.is_empty() {
            println!("object lock probe: {}", status.lock_probe_detail);
        }
    }
    if !status.last_error.is_empty() {
        println!("last failure: {}", status.last_error);
    }
    Ok(())
}

/// The probe's answer for scripts.
fn lock_probe_key(status: &ArchiveStatusResponse) -> &'static str {
    match LockProbe::try_from(status.lock_probe).unwrap_or(LockProbe::Failed) {
        LockProbe::Off => "off",
        LockProbe::Pending => "pending",
        LockProbe::Enforced => "enforced",
        LockProbe::NotEnforced => "not_enforced",
        LockProbe::NotEnabled => "not_enabled",
        LockProbe::Unsupported => "unsupported",
        LockProbe::Failed => "failed",
    }
}

/// The probe's answer in words: `yes`, `no`, ...
fn lock_probe_name(status: &ArchiveStatusResponse) -> &'static str {
    match LockProbe::try_from(status.lock_probe).unwrap_or(LockProbe::Failed) {
        LockProbe::Off => "off",
        LockProbe::Pending => "not probed yet",
        LockProbe::Enforced => "yes",
        LockProbe::NotEnforced => "no",
        LockProbe::NotEnabled => "no (the bucket has no Object Lock)",
        LockProbe::Unsupported => "no (the store has no Object Lock API)",
        LockProbe::Failed => "unknown (the probe failed; retried)",
    }
}

/// How to reach an S3-compatible target (ignored for `file://`).
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// S3 endpoint, e.g. http://127.0.0.1:9000 (plain http only to loopback).
    #[arg(long, env = "AWS_ENDPOINT_URL", default_value = "")]
    pub endpoint: String,
    /// S3 region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
}

/// `trail restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive: file:///path or s3://bucket/prefix.
    #[arg(long)]
    pub from: String,
    #[arg(long, default_value = "")]
    pub log: String,
    /// The data directory to rebuild the log in (its log directory must not exist).
    #[arg(long)]
    pub to: std::path::PathBuf,
    /// Restore only the newest archived state snapshot and the segments
    /// from the one holding its watermark to the end (earlier LSNs stay in
    /// the archive, read through by traild); see docs/OPERATIONS.md.
    #[arg(long)]
    pub from_snapshot: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

fn open_target(url: &str, target: &TargetArgs) -> anyhow::Result<ArchiveTarget> {
    ArchiveTarget::open(&TargetConfig {
        url: url.to_owned(),
        endpoint: target.endpoint.clone(),
        region: target.region.clone(),
        // Keys come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
        access_key_id: String::new(),
        secret_access_key: String::new(),
    })
    .context("opening the archive")
}

fn bar(json: bool) -> ProgressBar {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} {bytes_per_sec} {eta}")
    {
        bar.set_style(style);
    }
    bar
}

fn on_progress(bar: &ProgressBar) -> impl FnMut(Progress) + '_ {
    move |progress: Progress| {
        bar.set_length(progress.total_bytes);
        bar.set_position(progress.done_bytes);
        bar.set_message(format!("through lsn {}", progress.lsn));
    }
}

fn report_json(log: &str, report: &ArchiveReport) -> serde_json::Value {
    serde_json::json!({
        "log": log,
        "ok": true,
        "segments": report.segments,
        "records": report.records,
        "last_lsn": report.last_lsn.0,
        "last_hash": report.last_hash.to_hex(),
        "segment_bytes": report.segment_bytes,
        "stored_bytes": report.stored_bytes,
        "voucher": report.voucher,
        "compensations_checked": report.compensations_checked,
    })
}

fn failure(json: bool, log: &str, error: ArchiveError) -> anyhow::Result<()> {
    if json {
        let mut value =
            serde_json::json!({ "log": log, "ok": false, "error": error_chain(&error) });
        if let ArchiveError::DataLoss {
            key,
            first,
            last,
            reason,
        } = &error
        {
            value["data_loss"] = serde_json::json!({ "key": key, "first_lsn": first.0, "last_lsn": last.0, "reason": reason });
        }
        print_json(&value)?;
    }
    let data_loss = error.is_data_loss();
    let error = anyhow::Error::new(error);
    Err(if data_loss {
        error.context("DATA_LOSS")
    } else {
        error
    })
}

/// `trail verify --archive URL --log L`.
pub async fn verify(json: bool, url: &str, log: &str, target: &TargetArgs) -> anyhow::Result<()> {
    let name = trail_log::LogName::new(log).map_err(|error| anyhow!("--log: {error}"))?;
    let archive = open_target(url, target)?;
    let bar = bar(json);
    let outcome = trail_archive::verify_archive(&archive, &name, &mut on_progress(&bar)).await;
    bar.finish_and_clear();
    match outcome {
        Ok(report) => {
            if json {
                print_json(&report_json(name.as_str(), &report))?;
            } else {
                let links = match report.compensations_checked {
                    0 => String::new(),
                    count => format!("; {count} compensation links checked"),
                };
                println!(
                    "ok: {} segments, {} records (lsn 1..={}) verified in {url}; chain head {}; {} bytes stored for {} bytes of log{links}",
                    report.segments, report.records, report.last_lsn, report.last_hash, report.stored_bytes, report.segment_bytes
                );
            }
            Ok(())
        }
        Err(error) => failure(json, name.as_str(), error),
    }
}

/// `trail restore --from URL --log L --to DIR`.
pub async fn restore(json: bool, args: &RestoreArgs) -> anyhow::Result<()> {
    let name = trail_log::LogName::new(&args.log).map_err(|error| anyhow!("--log: {error}"))?;
    let archive = open_target(&args.from, &args.target)?;
    std::fs::create_dir_all(&args.to).with_context(|| format!("creating {}", args.to.display()))?;
    if args.from_snapshot {
        return restore_suffix(json, args, &name, &archive).await;
    }
    let bar = bar(json);
    let outcome =
        trail_archive::restore_log(&archive, &name, Path::new(&args.to), &mut on_progress(&bar))
            .await;
    bar.finish_and_clear();
    match outcome {
        Ok(report) => {
            if json {
                print_json(&report_json(name.as_str(), &report))?;
            } else {
                println!(
                    "restored log {name}: {} segments, {} records (lsn 1..={}), chain head {}, into {}",
                    report.segments,
                    report.records,
                    report.last_lsn,
                    report.last_hash,
                    args.to.display()
                );
            }
            Ok(())
        }
        Err(error) => failure(json, name.as_str(), error),
    }
}

/// `trail restore --from-snapshot`: the newest snapshot plus the tail.
async fn restore_suffix(
    json: bool,
    args: &RestoreArgs,
    name: &trail_log::LogName,
    archive: &ArchiveTarget,
) -> anyhow::Result<()> {
    let bar = bar(json);
    let outcome = trail_archive::restore_log_from_snapshot(
        archive,
        name,
        Path::new(&args.to),
        &mut on_progress(&bar),
    )
    .await;
    bar.finish_and_clear();
    let report = match outcome {
        Ok(report) => report,
        Err(error) => return failure(json, name.as_str(), error),
    };
    if json {
        return print_json(&serde_json::json!({
            "log": name.as_str(),
            "ok": true,
            "from_snapshot": true,
            "chain_segments": report.chain_segments,
            "segments": report.segments,
            "records": report.records,
            "first_lsn": report.first_lsn.0,
            "last_lsn": report.last_lsn.0,
            "last_hash": report.last_hash.to_hex(),
            "earlier_sidecars": report.earlier_sidecars,
            "snapshot_lsn": report.snapshot_lsn.0,
            "snapshot_hash": report.snapshot_hash.to_hex(),
            "snapshot_key": report.snapshot_key,
            "snapshot_bytes": report.snapshot_bytes,
            "voucher": report.voucher,
            "stored_bytes": report.stored_bytes,
            "compensations_checked": report.compensations_checked,
        }));
    }
    println!(
        "restored log {name} from snapshot: manifest chain of {} segments verified; {} segments, {} records (lsn {}..={}), chain head {}, into {}",
        report.chain_segments,
        report.segments,
        report.records,
        report.first_lsn,
        report.last_lsn,
        report.last_hash,
        args.to.display()
    );
    println!(
        "state snapshot at watermark lsn {} ({}, {} bytes) from {}; the state store replays lsns {}..={} on start",
        report.snapshot_lsn,
        report.snapshot_hash,
        report.snapshot_bytes,
        report.snapshot_key,
        report.snapshot_lsn.next(),
        report.last_lsn
    );
    if report.first_lsn > trail_log::Lsn::FIRST {
        println!(
            "lsns 1..={} stay in the archive (wal/PREFIX: {}); serve with the same [archive] url to read them, and note the query index covers lsn {} on only",
            report.first_lsn.0 - 1,
            report.voucher,
            report.first_lsn
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    }

    fn hold(args: &[&str]) -> anyhow::Result<ArchiveHoldRequest> {
        let words = ["archive", "hold"].into_iter().chain(args.iter().copied());
        match Archive::try_parse_from(words)?.command {
            ArchiveCommand::Hold(args) => args.request(),
            other => Err(anyhow!("parsed as {other:?}")),
        }
    }

    #[test]
    fn hold_takes_a_state_and_a_range_or_all() -> anyhow::Result<()> {
        let on = hold(&["--log", "audit", "--on", "--from-lsn", "3", "--to-lsn", "9"])?;
        assert_eq!(
            (on.log.as_str(), on.on, on.from_lsn, on.to_lsn),
            ("audit", true, 3, 9)
        );
        let all = hold(&["--off", "--all"])?;
        assert_eq!((all.on, all.from_lsn, all.to_lsn), (false, 0, 0));
        let wrong: [&[&str]; 7] = [
            &["--on"],
            &["--all"],
            &["--on", "--off", "--all"],
            &["--on", "--all", "--from-lsn", "1", "--to-lsn", "2"],
            &["--on", "--from-lsn", "1"],
            &["--on", "--from-lsn", "5", "--to-lsn", "2"],
            &["--on", "--from-lsn", "0", "--to-lsn", "2"],
        ];
        for args in wrong {
            assert!(hold(args).is_err(), "{args:?}");
        }
        Ok(())
    }
}
