//! `trail`: the Trail command-line client. Talks to `traild` over gRPC
//! (`--addr` or `TRAIL_ADDR`), or reads a data directory directly for
//! offline `verify` and `inspect`. Prints tables for people and, with
//! `--json`, one JSON object per line. Exit codes: 0 ok, 1 failure, 2 usage.

mod bench;
mod input;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{
    AppendRequest, Event, HeadRequest, ReadRequest, Record, RecordKind, SubscribeRequest,
    VerifyRequest,
};

/// The same allocator as `traild`, so `trail bench` measures the server and
/// not the client's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The largest response the CLI accepts.
const RESPONSE_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Parser)]
#[command(name = "trail", version, about = "Trail audit-trail client")]
struct Cli {
    /// The server's address.
    #[arg(
        long,
        global = true,
        env = "TRAIL_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    /// Print one JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append events (from flags, or JSON lines with --file) and print one receipt per event.
    Append(AppendArgs),
    /// Read records in an LSN range.
    Read {
        #[arg(long, default_value = "")]
        log: String,
        /// First LSN.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last LSN, inclusive (default: the head).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Follow a log: print records from --from on, then new ones as they land.
    Tail {
        #[arg(long, default_value = "")]
        log: String,
        /// First LSN (default: after the current head).
        #[arg(long)]
        from: Option<u64>,
    },
    /// Print a log's last LSN and hash.
    Head {
        #[arg(long, default_value = "")]
        log: String,
    },
    /// Verify a log's hash chain: online, or offline with --dir.
    Verify {
        #[arg(long, default_value = "")]
        log: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// 0 = the head.
        #[arg(long, default_value_t = 0)]
        to: u64,
        /// A data directory (or a copy of one) to verify without a server.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List a data directory's logs and segments (offline, read-only).
    Inspect {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Load generator: appends for a fixed time and prints acked events/s and ack latency.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct AppendArgs {
    #[arg(long, default_value = "")]
    log: String,
    /// JSON lines to append (`-` = stdin); one event per line.
    #[arg(long, conflicts_with_all = ["actor", "action", "resource", "payload", "event_id", "trace_id", "outcome", "attr"])]
    file: Option<String>,
    #[arg(long, required_unless_present = "file")]
    actor: Option<String>,
    #[arg(long, required_unless_present = "file")]
    action: Option<String>,
    #[arg(long, required_unless_present = "file")]
    resource: Option<String>,
    /// Any JSON value.
    #[arg(long)]
    payload: Option<String>,
    /// Defaults to a generated id (retries with the same id are safe).
    #[arg(long)]
    event_id: Option<String>,
    /// When the action happened (unix nanoseconds); defaults to now, or to
    /// unset when --event-id is given so that re-running is a safe retry
    #[arg(long)]
    occurred_at_unix_nanos: Option<i64>,
    #[arg(long)]
    trace_id: Option<String>,
    /// success, failure or denied.
    #[arg(long, default_value = "success")]
    outcome: String,
    /// An attribute, KEY=VALUE; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    attr: Vec<String>,
    /// Events per request with --file.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Each request's events land all or none.
    #[arg(long)]
    atomic: bool,
}

/// A failure the CLI reports with exit code 1.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("trail: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("trail: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Append(args) => append(&cli.addr, cli.json, args).await,
        Command::Read { log, from, to } => read(&cli.addr, cli.json, &log, from, to).await,
        Command::Tail { log, from } => tail(&cli.addr, cli.json, &log, from).await,
        Command::Head { log } => head(&cli.addr, cli.json, &log).await,
        Command::Verify {
            log,
            from,
            to,
            dir: None,
        } => verify_online(&cli.addr, cli.json, &log, from, to).await,
        Command::Verify {
            log,
            dir: Some(dir),
            ..
        } => verify_offline(cli.json, &dir, &log),
        Command::Inspect { dir } => inspect(cli.json, &dir),
        Command::Bench(args) => bench::run(&cli.addr, cli.json, args).await,
    }
}

/// Connects to the server.
pub async fn connect(addr: &str) -> anyhow::Result<LogClient<Channel>> {
    let channel = Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("bad --addr {addr:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(client(channel))
}

/// A client over an existing channel.
#[must_use]
pub fn client(channel: Channel) -> LogClient<Channel> {
    LogClient::new(channel)
        .max_decoding_message_size(RESPONSE_BYTES_MAX)
        .max_encoding_message_size(RESPONSE_BYTES_MAX)
}

/// A status as a one-line error.
fn status_error(status: &tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", status.code(), status.message())
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    stdout.write_all(b"\n")?;
    Ok(())
}

async fn send_batch(
    client: &mut LogClient<Channel>,
    json: bool,
    log: &str,
    events: Vec<Event>,
    atomic: bool,
) -> anyhow::Result<()> {
    let response = client
        .append(AppendRequest {
            log: log.to_owned(),
            events,
            atomic,
        })
        .await
        .map_err(|status| status_error(&status))?
        .into_inner();
    for receipt in response.receipts {
        if json {
            print_json(&serde_json::json!({
                "event_id": receipt.event_id,
                "lsn": receipt.lsn,
                "hash": hex::encode(&receipt.hash),
                "duplicate": receipt.duplicate,
                "recorded_at_unix_nanos": receipt.recorded_at_unix_nanos,
            }))?;
        } else {
            println!(
                "{:>10}  {}  {}{}",
                receipt.lsn,
                hex::encode(&receipt.hash),
                receipt.event_id,
                if receipt.duplicate {
                    "  (duplicate: already in the log)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

async fn append(addr: &str, json: bool, args: AppendArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let Some(file) = &args.file else {
        let event = event_from_flags(&args)?;
        let mut client = connect(addr).await?;
        return send_batch(&mut client, json, &args.log, vec![event], args.atomic).await;
    };
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {file}"))?,
        ))
    };
    let mut client = connect(addr).await?;
    let mut batch = Vec::with_capacity(args.batch);
    let mut sent_through = 0usize;
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let parsed = line.map_err(|error| error.to_string()).and_then(|line| {
            if line.trim().is_empty() {
                Ok(None)
            } else {
                input::parse_line(&line, number as u64).map(Some)
            }
        });
        match parsed {
            Ok(None) => {}
            Ok(Some(event)) => batch.push(event),
            Err(error) => {
                // Everything before the bad line goes; nothing after it.
                if !batch.is_empty() {
                    send_batch(
                        &mut client,
                        json,
                        &args.log,
                        std::mem::take(&mut batch),
                        args.atomic,
                    )
                    .await?;
                }
                bail!(
                    "{file}: line {number}: {error}; lines before it were appended, nothing from line {number} on was sent"
                );
            }
        }
        if batch.len() >= args.batch {
            send_batch(
                &mut client,
                json,
                &args.log,
                std::mem::take(&mut batch),
                args.atomic,
            )
            .await
            .with_context(|| format!("appending lines {}..={number}", sent_through + 1))?;
            sent_through = number;
        }
    }
    if !batch.is_empty() {
        send_batch(&mut client, json, &args.log, batch, args.atomic)
            .await
            .with_context(|| format!("appending the lines after line {sent_through}"))?;
    }
    Ok(())
}

fn event_from_flags(args: &AppendArgs) -> anyhow::Result<Event> {
    let payload = match &args.payload {
        None => None,
        Some(text) => Some(serde_json::from_str(text).with_context(|| "--payload is not JSON")?),
    };
    let mut attributes = std::collections::BTreeMap::new();
    for pair in &args.attr {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--attr {pair:?} is not KEY=VALUE"))?;
        attributes.insert(key.to_owned(), value.to_owned());
    }
    let line = input::EventLine {
        event_id: args.event_id.clone(),
        actor: args.actor.clone().unwrap_or_default(),
        action: args.action.clone().unwrap_or_default(),
        resource: args.resource.clone().unwrap_or_default(),
        trace_id: args.trace_id.clone().unwrap_or_default(),
        outcome: Some(args.outcome.clone()),
        occurred_at_unix_nanos: None,
        attributes,
        payload,
        change: None,
    };
    // With an explicit --event-id, re-running the same command must be an
    // idempotent retry, so the time must not change between runs: it is
    // taken from --occurred-at-unix-nanos or left unset (0).
    let occurred_at_default = if args.event_id.is_some() {
        0
    } else {
        input::now_unix_nanos()
    };
    let line = input::EventLine {
        occurred_at_unix_nanos: args.occurred_at_unix_nanos,
        ..line
    };
    line.into_event(0, occurred_at_default)
        .map_err(|error| anyhow!(error))
}

fn print_record(json: bool, record: &Record) -> anyhow::Result<()> {
    let kind = match RecordKind::try_from(record.kind) {
        Ok(RecordKind::Event) => "event",
        Ok(RecordKind::Compensation) => "compensation",
        Ok(RecordKind::Unspecified) | Err(_) => "unknown",
    };
    let default_event = Event::default();
    let event = record.event.as_ref().unwrap_or(&default_event);
    if json {
        print_json(&serde_json::json!({
            "lsn": record.lsn,
            "hash": hex::encode(&record.hash),
            "prev_hash": hex::encode(&record.prev_hash),
            "recorded_at_unix_nanos": record.recorded_at_unix_nanos,
            "kind": kind,
            "compensates": record.compensates,
            "batch_last_lsn": record.batch_last_lsn,
            "event": input::event_to_json(event),
        }))
    } else {
        let outcome =
            trail_proto::v1::Outcome::try_from(event.outcome).map_or("?", input::outcome_name);
        println!(
            "{:>10}  {}  {:<8}  {:<16} {:<16} {:<24} {}",
            record.lsn,
            &hex::encode(&record.hash)[..16.min(record.hash.len() * 2)],
            outcome,
            event.actor,
            event.action,
            event.resource,
            event.event_id
        );
        Ok(())
    }
}

async fn read(addr: &str, json: bool, log: &str, from: u64, to: Option<u64>) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let mut stream = client
        .read(ReadRequest {
            log: log.to_owned(),
            from_lsn: from,
            to_lsn: to.unwrap_or(0),
        })
        .await
        .map_err(|status| status_error(&status))?
        .into_inner();
    while let Some(record) = stream.next().await {
        print_record(json, &record.map_err(|status| status_error(&status))?)?;
    }
    Ok(())
}

async fn tail(addr: &str, json: bool, log: &str, from: Option<u64>) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let from_lsn = match from {
        Some(from) => from,
        None => {
            client
                .head(HeadRequest {
                    log: log.to_owned(),
                })
                .await
                .map_err(|status| status_error(&status))?
                .into_inner()
                .lsn
                + 1
        }
    };
    let mut stream = client
        .subscribe(SubscribeRequest {
            log: log.to_owned(),
            from_lsn,
        })
        .await
        .map_err(|status| status_error(&status))?
        .into_inner();
    loop {
        tokio::select! {
            next = stream.next() => match next {
                None => return Ok(()),
                Some(record) => print_record(json, &record.map_err(|status| status_error(&status))?)?,
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn head(addr: &str, json: bool, log: &str) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let head = client
        .head(HeadRequest {
            log: log.to_owned(),
        })
        .await
        .map_err(|status| status_error(&status))?
        .into_inner();
    let damaged = !head.damage.is_empty();
    if json {
        print_json(&serde_json::json!({
            "log": display_log(log),
            "lsn": head.lsn,
            "hash": hex::encode(&head.hash),
            "damage": damaged.then_some(&head.damage),
        }))?;
    } else if damaged {
        println!(
            "log {}  DAMAGED, out of service: {}",
            display_log(log),
            head.damage
        );
    } else {
        println!(
            "log {}  lsn {}  hash {}",
            display_log(log),
            head.lsn,
            hex::encode(&head.hash)
        );
    }
    if damaged {
        bail!("log {} is damaged: {}", display_log(log), head.damage);
    }
    Ok(())
}

fn display_log(log: &str) -> &str {
    if log.is_empty() {
        "default"
    } else {
        log
    }
}

async fn verify_online(
    addr: &str,
    json: bool,
    log: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let spinner = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spinner.set_message(format!("verifying log {} on the server", display_log(log)));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let result = client
        .verify(VerifyRequest {
            log: log.to_owned(),
            from_lsn: from,
            to_lsn: to,
        })
        .await;
    spinner.finish_and_clear();
    let report = result.map_err(|status| status_error(&status))?.into_inner();
    let ok = report.first_bad_lsn == 0;
    if json {
        print_json(&serde_json::json!({
            "log": display_log(log),
            "ok": ok,
            "verified": report.verified,
            "head_lsn": report.head_lsn,
            "head_hash": hex::encode(&report.head_hash),
            "first_bad_lsn": report.first_bad_lsn,
            "reason": report.reason,
        }))?;
    } else if ok {
        println!(
            "ok: {} records verified; chain head lsn {} hash {}",
            report.verified,
            report.head_lsn,
            hex::encode(&report.head_hash)
        );
    } else {
        println!(
            "FAILED at lsn {}: {} ({} records verified before it)",
            report.first_bad_lsn, report.reason, report.verified
        );
    }
    if ok {
        Ok(())
    } else {
        bail!(
            "log {} failed verification at lsn {}",
            display_log(log),
            report.first_bad_lsn
        )
    }
}

/// Offline verify of one log. Reads only that log's files, so damage in
/// another log of the same directory does not get in the way. With
/// `--json` it prints one report for every outcome (ok, damage, or an
/// error such as a missing log), then exits 1 unless the log verified.
fn verify_offline(json: bool, dir: &Path, log: &str) -> anyhow::Result<()> {
    let name = match trail_log::LogName::new(log) {
        Ok(name) => name,
        Err(error) => {
            let error = anyhow!("--log: {error}");
            if json {
                print_json(&serde_json::json!({
                    "log": log,
                    "ok": false,
                    "error": format!("{error:#}"),
                }))?;
            }
            return Err(error);
        }
    };
    // The bar's length is the head a quick look at this log's files finds
    // (headers, seals, the active segment); damage found there is reported
    // by the verification below.
    let head = trail_log::offline::inspect_log(dir, &name)
        .ok()
        .and_then(|summary| {
            summary
                .segments
                .iter()
                .filter_map(|segment| segment.last_lsn)
                .max()
        });
    let bar = match (json, head) {
        (true, _) => ProgressBar::hidden(),
        (false, Some(head)) => ProgressBar::new(head.0),
        (false, None) => ProgressBar::no_length(),
    };
    let template = if head.is_some() {
        "{bar:40} {pos}/{len} records verified {per_sec} {eta}"
    } else {
        "{spinner} {pos} records verified {per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    let result = trail_log::offline::verify(dir, &name, &mut |lsn| bar.set_position(lsn.0));
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            if json {
                let mut value = serde_json::json!({
                    "log": name.as_str(),
                    "ok": false,
                    "error": error.to_string(),
                });
                if let trail_log::LogError::Corruption {
                    file,
                    offset,
                    lsn,
                    reason,
                } = &error
                {
                    value["damage"] = damage_json(file, *offset, lsn.0, reason);
                }
                print_json(&value)?;
            }
            return Err(anyhow::Error::new(error)
                .context(format!("verifying log {name} in {}", dir.display())));
        }
    };
    let ok = report.failure.is_none();
    if json {
        print_json(&serde_json::json!({
            "log": name.as_str(),
            "ok": ok,
            "verified": report.verified,
            "first_lsn": report.first.0,
            "head_lsn": report.last.0,
            // After damage the engine knows no verified head hash.
            "head_hash": ok.then(|| report.head_hash.to_hex()),
            "first_bad_lsn": report.failure.as_ref().map_or(0, |failure| failure.lsn.0),
            "reason": report.failure.as_ref().map(|failure| format!("{} (file {}, offset {})", failure.reason, failure.file.display(), failure.offset)),
            "damage": report.failure.as_ref().map(|failure| damage_json(&failure.file, failure.offset, failure.lsn.0, &failure.reason)),
            "torn_tail": report.torn_tail.as_ref().map(|torn| serde_json::json!({
                "file": torn.file.display().to_string(),
                "offset": torn.offset,
                "bytes": torn.bytes,
                "records": torn.cut_records,
                "kept_lsn": torn.kept_lsn.0,
            })),
            "archived_prefix": report.archived_prefix.as_ref().map(|prefix| serde_json::json!({
                "first_local_lsn": prefix.first_lsn.0,
                "prev_hash": prefix.prev_hash.to_hex(),
                "voucher": prefix.voucher,
            })),
        }))?;
    } else {
        if let Some(prefix) = &report.archived_prefix {
            println!(
                "lsns before {} are archived: checked from the hash the archived prefix names ({}), vouched for by {:?}",
                prefix.first_lsn, prefix.prev_hash, prefix.voucher
            );
        }
        match &report.failure {
            None => println!(
                "ok: {} records verified (lsn {}..={}); chain head {}",
                report.verified, report.first, report.last, report.head_hash
            ),
            Some(failure) => println!(
                "FAILED at lsn {}: {} in {} at offset {} ({} records verified before it)",
                failure.lsn,
                failure.reason,
                failure.file.display(),
                failure.offset,
                report.verified
            ),
        }
        if let Some(torn) = &report.torn_tail {
            println!(
                "torn tail: {} bytes after lsn {} (offset {} of {}) would be cut at the next start, \
                 holding up to {} records; a torn write was never acknowledged, but if a crash hit \
                 the last synced group those records may have been",
                torn.bytes,
                torn.kept_lsn,
                torn.offset,
                torn.file.display(),
                torn.cut_records
            );
        }
    }
    match report.failure {
        None => Ok(()),
        Some(failure) => bail!("log {name} failed verification at lsn {}", failure.lsn),
    }
}

/// Where and what the damage is, as `verify --json` reports it.
fn damage_json(file: &Path, offset: u64, lsn: u64, reason: &str) -> serde_json::Value {
    serde_json::json!({
        "file": file.display().to_string(),
        "offset": offset,
        "lsn": lsn,
        "reason": reason,
    })
}

/// Lists every log's segments; a log whose files cannot be read as a log
/// (damage) gets a line saying why, and the others are still listed. Exits
/// 1 when any log could not be read.
fn inspect(json: bool, dir: &Path) -> anyhow::Result<()> {
    let names = trail_log::offline::list_logs(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?;
    let mut summaries = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        match trail_log::offline::inspect_log(dir, &name) {
            Ok(summary) => summaries.push(summary),
            Err(error) => failed.push((name, error)),
        }
    }
    if !json {
        println!(
            "{:<20} {:<26} {:>12} {:>12} {:>12} sealed",
            "log", "segment", "first_lsn", "last_lsn", "bytes"
        );
    }
    for summary in &summaries {
        for segment in &summary.segments {
            let file = segment.file.file_name().map_or_else(
                || segment.file.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            );
            if json {
                print_json(&serde_json::json!({
                    "log": summary.name.as_str(),
                    "segment": segment.file.display().to_string(),
                    "first_lsn": segment.first_lsn.0,
                    "last_lsn": segment.last_lsn.map(|lsn| lsn.0),
                    "bytes": segment.bytes,
                    "sealed": segment.sealed,
                }))?;
            } else {
                println!(
                    "{:<20} {:<26} {:>12} {:>12} {:>12} {}",
                    summary.name.as_str(),
                    file,
                    segment.first_lsn.0,
                    segment
                        .last_lsn
                        .map_or_else(|| "-".to_owned(), |lsn| lsn.0.to_string()),
                    segment.bytes,
                    if segment.sealed { "yes" } else { "no" }
                );
            }
        }
    }
    for (name, error) in &failed {
        if json {
            print_json(&serde_json::json!({
                "log": name.as_str(),
                "error": error.to_string(),
            }))?;
        } else {
            println!("{:<20} cannot be read: {error}", name.as_str());
        }
    }
    if let Some((name, _)) = failed.first() {
        bail!(
            "{} log(s) could not be read, the first is {name}",
            failed.len()
        );
    }
    Ok(())
}
