//! `trail`: the Trail command-line client. Talks to `traild` over gRPC
//! (`--addr` or `TRAIL_ADDR`), or reads a data directory directly for
//! offline `verify`, `inspect` and `index rebuild`. Prints tables for people and, with
//! `--json`, one JSON object per line. Exit codes: 0 ok, 1 failure, 2 usage.

mod archive;
mod bench;
mod compensate;
mod derived;
mod filter;
mod input;
mod rebuild;
mod times;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{ArgGroup, Args, Parser, Subcommand};
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
    /// Follow a log: print records from --from on, then new ones as they land
    /// (only those matching the filter flags, if any).
    Tail {
        #[arg(long, default_value = "")]
        log: String,
        /// First LSN (default: after the current head).
        #[arg(long)]
        from: Option<u64>,
        #[command(flatten)]
        filter: filter::FilterArgs,
    },
    /// Print a log's last LSN and hash, and how far its derived state has come.
    Head {
        #[arg(long, default_value = "")]
        log: String,
    },
    /// Records matching filters (they AND), from the server's query index, a page at a time.
    Query(derived::QueryArgs),
    /// A resource's JSON state now, or as of an LSN or a time.
    State(derived::StateArgs),
    /// A resource's changes: each changed JSON path with its value before and after.
    History(derived::HistoryArgs),
    /// Undo a record by appending compensation records (never rewriting the log).
    Compensate(compensate::CompensateArgs),
    /// Undo every change to a resource after a point, newest first, in one atomic batch.
    Rollback(compensate::RollbackArgs),
    /// Snapshot a log's resource state on the server now (Admin.Snapshot).
    Snapshot {
        #[arg(long, default_value = "")]
        log: String,
    },
    /// Offline work on a data directory's derived stores.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
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
        #[arg(long, conflicts_with = "archive")]
        dir: Option<PathBuf>,
        /// An archive (file:///path or s3://bucket/prefix) to verify from the bucket alone.
        #[arg(long)]
        archive: Option<String>,
        #[command(flatten)]
        target: archive::TargetArgs,
    },
    /// Rebuild a log's data directory from its archive, verifying every segment.
    Restore(archive::RestoreArgs),
    /// A log's archive on the server: status, or archive sealed segments now.
    Archive {
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// List a data directory's logs and segments (offline, read-only).
    Inspect {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Load generator: appends for a fixed time and prints acked events/s and ack latency.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum IndexCommand {
    /// Rebuild a log's query index and resource state from its log, offline
    /// (with the server stopped), with a progress bar.
    Rebuild {
        /// The data directory.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "")]
        log: String,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").multiple(false)))]
struct AppendArgs {
    #[arg(long, default_value = "")]
    log: String,
    /// JSON lines to append (`-` = stdin); one event per line, a state
    /// change as `"change": {"set" | "merge_patch" | "json_patch": JSON}` or
    /// `"change": {"delete": true}`.
    #[arg(long, conflicts_with_all = ["actor", "action", "resource", "payload", "event_id", "trace_id", "outcome", "attr", "change"])]
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
    /// Set the resource's state to this JSON value.
    #[arg(long, value_name = "JSON", group = "change", value_parser = input::parse_json_value)]
    set_json: Option<serde_json::Value>,
    /// Change the resource's state by this JSON merge patch (RFC 7396).
    #[arg(long, value_name = "JSON", group = "change", value_parser = input::parse_json_value)]
    merge_patch: Option<serde_json::Value>,
    /// Change the resource's state by this JSON Patch (RFC 6902): an array of operations.
    #[arg(long, value_name = "JSON", group = "change", value_parser = input::parse_json_patch)]
    json_patch: Option<input::JsonPatch>,
    /// Remove the resource's state.
    #[arg(long, group = "change")]
    delete_state: bool,
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
        Command::Tail { log, from, filter } => tail(&cli.addr, cli.json, &log, from, &filter).await,
        Command::Head { log } => head(&cli.addr, cli.json, &log).await,
        Command::Verify {
            log,
            from,
            to,
            dir: None,
            archive: None,
            ..
        } => verify_online(&cli.addr, cli.json, &log, from, to).await,
        Command::Verify {
            log,
            dir: Some(dir),
            ..
        } => verify_offline(cli.json, &dir, &log),
        Command::Verify {
            log,
            archive: Some(url),
            target,
            ..
        } => archive::verify(cli.json, &url, &log, &target).await,
        Command::Restore(args) => archive::restore(cli.json, &args).await,
        Command::Archive { command } => archive::admin(&cli.addr, cli.json, command).await,
        Command::Inspect { dir } => inspect(cli.json, &dir),
        Command::Query(args) => derived::query(&cli.addr, cli.json, args).await,
        Command::State(args) => derived::state(&cli.addr, cli.json, args).await,
        Command::History(args) => derived::history(&cli.addr, cli.json, args).await,
        Command::Snapshot { log } => derived::snapshot(&cli.addr, cli.json, &log).await,
        Command::Compensate(args) => compensate::compensate(&cli.addr, cli.json, args).await,
        Command::Rollback(args) => compensate::rollback(&cli.addr, cli.json, args).await,
        Command::Index {
            command: IndexCommand::Rebuild { dir, log },
        } => rebuild::run(cli.json, &dir, &log),
        Command::Bench(args) => bench::run(&cli.addr, cli.json, args).await,
    }
}

/// Connects to the server.
pub async fn connect(addr: &str) -> anyhow::Result<LogClient<Channel>> {
    Ok(client(connect_channel(addr).await?))
}

/// A channel to the server, for any of its services.
pub async fn connect_channel(addr: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("bad --addr {addr:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
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
        let (key, value) = filter::parse_attr(pair).map_err(|error| anyhow!("--attr: {error}"))?;
        attributes.insert(key, value);
    }
    let change = if let Some(value) = &args.set_json {
        Some(input::ChangeLine::Set(value.clone()))
    } else if let Some(value) = &args.merge_patch {
        Some(input::ChangeLine::MergePatch(value.clone()))
    } else if let Some(patch) = &args.json_patch {
        Some(input::ChangeLine::JsonPatch(patch.0.clone()))
    } else {
        args.delete_state.then_some(input::ChangeLine::Delete(true))
    };
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
        change,
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
            "compensates_hash": hex::encode(&record.compensates_hash),
            "compensated_by": record.compensated_by,
            "batch_last_lsn": record.batch_last_lsn,
            "event": input::event_to_json(event),
        }))
    } else {
        let outcome =
            trail_proto::v1::Outcome::try_from(event.outcome).map_or("?", input::outcome_name);
        // Compensation links are shown only where there are some, so an
        // ordinary record's line is what it always was.
        let mut links = String::new();
        if kind == "compensation" {
            links.push_str(&format!("  undoes {}", record.compensates));
        }
        if record.compensated_by != 0 {
            links.push_str(&format!("  (compensated by {})", record.compensated_by));
        }
        println!(
            "{:>10}  {}  {:<8}  {:<16} {:<16} {:<24} {}{links}",
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

async fn tail(
    addr: &str,
    json: bool,
    log: &str,
    from: Option<u64>,
    filter: &filter::FilterArgs,
) -> anyhow::Result<()> {
    let filter = filter
        .to_filter(input::now_unix_nanos())
        .map_err(|error| anyhow!(error))?;
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
            filter,
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
    let derived_failed = !head.derived_error.is_empty();
    if json {
        print_json(&serde_json::json!({
            "log": display_log(log),
            "lsn": head.lsn,
            "hash": hex::encode(&head.hash),
            "damage": damaged.then_some(&head.damage),
            "index_lsn": head.index_lsn,
            "index_lag": head.lsn.saturating_sub(head.index_lsn),
            "state_lsn": head.state_lsn,
            "state_lag": head.lsn.saturating_sub(head.state_lsn),
            "derived_error": derived_failed.then_some(&head.derived_error),
        }))?;
    } else if damaged {
        println!(
            "log {}  DAMAGED, out of service: {}",
            display_log(log),
            head.damage
        );
    } else {
        println!(
            "log {}  lsn {}  hash {}  index_lsn {} (lag {})  state_lsn {} (lag {})",
            display_log(log),
            head.lsn,
            hex::encode(&head.hash),
            head.index_lsn,
            head.lsn.saturating_sub(head.index_lsn),
            head.state_lsn,
            head.lsn.saturating_sub(head.state_lsn),
        );
        if derived_failed {
            println!(
                "derived state stopped (query, state and history answer Unavailable): {}",
                head.derived_error
            );
        }
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

/// `; 2 compensations checked` (and how many could not be, archived), or
/// nothing for a range without compensations.
fn compensations_text(checked: u64, unchecked: u64) -> String {
    match (checked, unchecked) {
        (0, 0) => String::new(),
        (checked, 0) => format!("; {checked} compensation links checked"),
        (checked, unchecked) => format!(
            "; {checked} compensation links checked, {unchecked} with archived targets not hash-checked"
        ),
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
            "compensations_checked": report.compensations_checked,
            "compensations_unchecked": report.compensations_unchecked,
        }))?;
    } else if ok {
        println!(
            "ok: {} records verified; chain head lsn {} hash {}{}",
            report.verified,
            report.head_lsn,
            hex::encode(&report.head_hash),
            compensations_text(report.compensations_checked, report.compensations_unchecked)
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
            "compensations_checked": report.compensations_checked,
            "compensations_unchecked": report.compensations_unchecked,
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
                "ok: {} records verified (lsn {}..={}); chain head {}{}",
                report.verified,
                report.first,
                report.last,
                report.head_hash,
                compensations_text(report.compensations_checked, report.compensations_unchecked)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use trail_proto::v1::state_change::Kind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("trail").chain(args.iter().copied()))
    }

    /// The event `trail append` builds from these flags (after the usual
    /// `--actor a --action b --resource r`).
    fn appended(extra: &[&str]) -> anyhow::Result<Event> {
        let mut args = vec![
            "append",
            "--actor",
            "a",
            "--action",
            "b",
            "--resource",
            "r",
            "--event-id",
            "e1",
        ];
        args.extend_from_slice(extra);
        match parse(&args)?.command {
            Command::Append(args) => event_from_flags(&args),
            other => bail!("parsed as {other:?}"),
        }
    }

    fn change(event: &Event) -> Option<&Kind> {
        event
            .change
            .as_ref()
            .and_then(|change| change.kind.as_ref())
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn change_flags_become_the_event_s_change() -> anyhow::Result<()> {
        assert_eq!(change(&appended(&[])?), None);
        assert_eq!(
            change(&appended(&["--set-json", r#"{ "b": 1, "a": [true] }"#])?),
            Some(&Kind::SetJson(r#"{"a":[true],"b":1}"#.to_owned()))
        );
        assert_eq!(
            change(&appended(&["--merge-patch", r#"{"status":null}"#])?),
            Some(&Kind::MergePatchJson(r#"{"status":null}"#.to_owned()))
        );
        assert_eq!(
            change(&appended(&[
                "--json-patch",
                r#"[{"op":"add","path":"/x","value":1}]"#
            ])?),
            Some(&Kind::JsonPatchJson(
                r#"[{"op":"add","path":"/x","value":1}]"#.to_owned()
            ))
        );
        assert_eq!(
            change(&appended(&["--delete-state"])?),
            Some(&Kind::Delete(true))
        );
        Ok(())
    }

    #[test]
    fn change_flags_are_checked_and_exclusive() {
        let error = |args: &[&str]| appended(args).err().map(|error| error.to_string());
        for (args, says) in [
            (&["--set-json", "{oops"][..], "--set-json"),
            (&["--merge-patch", ""][..], "--merge-patch"),
            (&["--json-patch", r#"{"op":"remove"}"#][..], "--json-patch"),
            (
                &["--set-json", "1", "--delete-state"][..],
                "cannot be used with",
            ),
            (
                &["--merge-patch", "{}", "--json-patch", "[]"][..],
                "cannot be used with",
            ),
        ] {
            let error = error(args);
            assert!(
                error.as_ref().is_some_and(|error| error.contains(says)),
                "{args:?}: {error:?}"
            );
        }
        let with_file = parse(&["append", "--file", "x.jsonl", "--delete-state"]);
        assert!(
            with_file.is_err_and(|error| error.kind() == clap::error::ErrorKind::ArgumentConflict)
        );
        let error = appended(&["--attr", "novalue"])
            .err()
            .map(|error| error.to_string());
        assert!(
            error.as_ref().is_some_and(|error| error.contains("--attr")),
            "{error:?}"
        );
    }

    #[test]
    fn query_state_history_and_tail_flags() -> anyhow::Result<()> {
        let Command::Query(query) = parse(&[
            "query",
            "--log",
            "l",
            "--actor",
            "a*",
            "--limit",
            "2",
            "--cursor",
            "c",
            "--desc",
            "--min-lsn",
            "7",
            "--timeout-ms",
            "100",
            "--all",
        ])?
        .command
        else {
            bail!("not a query")
        };
        assert_eq!(
            (query.limit, query.cursor.as_deref(), query.desc, query.all),
            (Some(2), Some("c"), true, true)
        );
        assert_eq!(
            (query.wait.min_lsn, query.wait.timeout_ms),
            (Some(7), Some(100))
        );
        assert_eq!(query.filter.actor.as_deref(), Some("a*"));
        for bad in [
            &["query", "--limit", "0"][..],
            &["query", "--timeout-ms", "5"][..],
            &["state", "r", "--at-lsn", "3", "--at", "1h"][..],
            &["state", "r", "--at-lsn", "0"][..],
            &["state"][..],
            &["history", "r", "--limit", "0"][..],
            &["tail", "--since", "soon"][..],
            &["index", "rebuild", "--log", "l"][..],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let Command::Tail { filter, from, .. } = parse(&[
            "tail",
            "--from",
            "1",
            "--resource",
            "order/*",
            "--kind",
            "event",
        ])?
        .command
        else {
            bail!("not a tail")
        };
        assert_eq!(from, Some(1));
        let filter = filter
            .to_filter(0)
            .map_err(|error| anyhow!(error))?
            .ok_or_else(|| anyhow!("no filter"))?;
        assert_eq!(
            (filter.resource.as_str(), filter.kind),
            ("order/*", RecordKind::Event as i32)
        );
        let Command::State(state) =
            parse(&["state", "order/1", "--at", "2026-12-01T10:00:00Z"])?.command
        else {
            bail!("not a state")
        };
        assert_eq!(
            state.at,
            Some(times::TimeArg::At(1_796_119_200_000_000_000))
        );
        Ok(())
    }
}
