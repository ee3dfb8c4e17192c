//! Archive commands. Without a server: `trail verify --archive URL` checks a
//! log's archive from the bucket alone, and `trail restore` rebuilds a data
//! directory from it (both through `trail_archive`, with a progress bar;
//! credentials from the usual AWS environment variables). Through the
//! server's Admin service: `trail archive status` and `trail archive now`.

use std::path::Path;
use trail_archive::check::error_chain;

use anyhow::{anyhow, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use trail_archive::{ArchiveError, ArchiveReport, ArchiveTarget, Progress, TargetConfig};

use trail_proto::v1::admin_client::AdminClient;
use trail_proto::v1::{ArchiveNowRequest, ArchiveStatusRequest, ArchiveStatusResponse};

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
}

/// Runs an `archive` subcommand against the server at `addr`.
pub async fn admin(addr: &str, json: bool, command: ArchiveCommand) -> anyhow::Result<()> {
    let mut client = AdminClient::new(connect_channel(addr).await?);
    let (log, now, response) = match command {
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
    if !status.last_error.is_empty() {
        println!("last failure: {}", status.last_error);
    }
    Ok(())
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
