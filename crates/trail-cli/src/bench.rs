//! `trail bench`: a bounded load generator. Each client appends for
//! `--duration` (unary, or over AppendStream with `--batch` events per
//! request); the tool prints acked events per second and ack latency
//! percentiles (from send to receipt, per request).
//!
//! With `--stalled-subscribers N` it first opens N `Subscribe` streams on
//! the log from its current head, reads one record from each (so each is
//! really established) and never reads them again while the load runs:
//! HTTP/2 flow control then stalls the server's side of each stream. With
//! `--server-pid P` it samples `/proc/P/status` (VmRSS, VmHWM, Threads)
//! every 100 ms over the run and reports the server's peaks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use trail_proto::v1::{AppendRequest, Event, HeadRequest, Outcome, Record, SubscribeRequest};

/// The longest a bench may run.
const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Most clients.
const CLIENTS_MAX: usize = 4096;
/// Most stalled subscribers.
const STALLED_SUBSCRIBERS_MAX: usize = 10_000;
/// Stalled subscribers per HTTP/2 connection of their own (the server
/// allows 256 streams per connection by default); they never share a
/// connection with the append load.
const STALLED_PER_CONNECTION: usize = 100;
/// The HTTP/2 receive window of one stalled stream: the protocol's default,
/// so each stalls once about 64 KiB of records wait unread on the client.
const STALLED_STREAM_WINDOW: u32 = 65_535;
/// Subscribe calls in flight at once while the stalled streams are opened.
const STALLED_OPENING_CONCURRENCY: usize = 64;
/// How long opening all stalled streams (and reading one record from each)
/// may take; the load starts after it either way.
const STALLED_OPENING_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the server's /proc status is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "bench")]
    log: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long to run, e.g. `15s`, `1m`.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Encoded size of each event, bytes.
    #[arg(long, default_value_t = 512)]
    event_bytes: usize,
    /// Use AppendStream (one stream per client) instead of unary Append.
    #[arg(long)]
    stream: bool,
    /// Events per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Requests in flight per stream with --stream.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// HTTP/2 connections shared by the clients.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Subscribe streams to open on --log (from its current head) before
    /// the load, read one record from and then never read again, so the
    /// server's side of each stalls on flow control; at most 10,000, on
    /// connections of their own (100 streams each).
    #[arg(long, default_value_t = 0)]
    stalled_subscribers: usize,
    /// With --stalled-subscribers: events appended (requests of 100) once
    /// the streams are open and before the timed load, so that each stalled
    /// stream fills its buffers and the timed load meets them stalled rather
    /// than filling; the bench then waits (at most 10 s) for the server to
    /// go idle. 0 times the filling too.
    #[arg(long, default_value_t = 2_000)]
    stalled_warmup_events: usize,
    /// The server's process id (same machine): sample its VmRSS, VmHWM and
    /// thread count from /proc every 100 ms during the run and report the
    /// peaks.
    #[arg(long)]
    server_pid: Option<u32>,
}

struct Totals {
    events: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|error| anyhow!("histogram: {error}"))
}

fn make_event(run: &str, client: usize, sequence: u64, payload: &[u8]) -> Event {
    Event {
        event_id: format!("{run}-{client}-{sequence}"),
        actor: format!("bench-client-{client}"),
        action: "bench.append".to_owned(),
        resource: format!("bench/{}", sequence % 1024),
        trace_id: String::new(),
        outcome: Outcome::Success as i32,
        occurred_at_unix_nanos: crate::input::now_unix_nanos(),
        attributes: std::collections::BTreeMap::new(),
        payload: payload.to_vec(),
        change: None,
        compensation: None,
    }
}

/// A payload that makes each event about `event_bytes` long, encoded.
fn payload_for(event_bytes: usize, run: &str) -> Vec<u8> {
    let probe = make_event(run, 999, 999_999_999, &[]);
    let overhead = probe.encoded_len() + 3;
    vec![b'x'; event_bytes.saturating_sub(overhead)]
}

pub async fn run(addr: &str, json: bool, args: BenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        bail!("--clients must be 1..={CLIENTS_MAX}");
    }
    if args.batch == 0 || args.window == 0 || args.connections == 0 {
        bail!("--batch, --window and --connections must be at least 1");
    }
    if args.duration > DURATION_MAX || args.duration.is_zero() {
        bail!(
            "--duration must be above 0 and at most {}s",
            DURATION_MAX.as_secs()
        );
    }
    if args.stalled_subscribers > STALLED_SUBSCRIBERS_MAX {
        bail!("--stalled-subscribers must be at most {STALLED_SUBSCRIBERS_MAX}");
    }
    // Sampling starts first, so opening the stalled streams is in the peaks.
    let sampler = match args.server_pid {
        Some(pid) => Some(Sampler::start(pid)?),
        None => None,
    };
    let stalled = if args.stalled_subscribers > 0 {
        let stalled = open_stalled(addr, &args.log, args.stalled_subscribers).await?;
        if stalled.failed > 0 && !json {
            eprintln!(
                "warning: {} of {} stalled subscribers did not get their first record within {}s \
                 (first error: {}); running the load with {}",
                stalled.failed,
                args.stalled_subscribers,
                STALLED_OPENING_TIMEOUT.as_secs(),
                stalled.first_error.as_deref().unwrap_or("?"),
                stalled.streams.len()
            );
        }
        Some(stalled)
    } else {
        None
    };
    let (warmup_events, settle_seconds) = if stalled.is_some() {
        warm_up(
            addr,
            &args.log,
            args.stalled_warmup_events,
            args.event_bytes,
        )
        .await?;
        let settled = settle(args.server_pid).await;
        (args.stalled_warmup_events, settled.as_secs_f64())
    } else {
        (0, 0.0)
    };
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.min(args.clients) {
        let channel = Endpoint::from_shared(addr.to_owned())
            .with_context(|| format!("bad --addr {addr:?}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        channels.push(channel);
    }
    let run = format!(
        "bench-{}-{}",
        crate::input::now_unix_nanos(),
        std::process::id()
    );
    let payload: Arc<[u8]> = payload_for(args.event_bytes, &run).into();
    let totals = Arc::new(Mutex::new(Totals {
        events: 0,
        errors: 0,
        first_error: None,
        latency_us: new_histogram()?,
    }));
    let started = Instant::now();
    let deadline = started + args.duration;

    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.duration.as_secs().max(1))
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len}s {msg}") {
        bar.set_style(style);
    }
    let mut tasks = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let channel = channels[client % channels.len()].clone();
        let totals = Arc::clone(&totals);
        let payload = Arc::clone(&payload);
        let run = run.clone();
        let log = args.log.clone();
        let (batch, window, stream) = (args.batch, args.window, args.stream);
        tasks.push(tokio::spawn(async move {
            let result = if stream {
                stream_client(
                    channel, &log, &run, client, batch, window, &payload, deadline, &totals,
                )
                .await
            } else {
                unary_client(
                    channel, &log, &run, client, batch, &payload, deadline, &totals,
                )
                .await
            };
            if let Err(error) = result {
                if let Ok(mut totals) = totals.lock() {
                    totals.errors += 1;
                    totals.first_error.get_or_insert(format!("{error:#}"));
                }
            }
        }));
    }
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let events = totals.lock().map(|totals| totals.events).unwrap_or(0);
        bar.set_position(started.elapsed().as_secs());
        bar.set_message(format!("{events} events acked"));
    }
    for task in tasks {
        // Each client stops by itself at the deadline; give stragglers a
        // bounded grace so the bench always ends.
        if tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .is_err()
        {
            bail!("a bench client did not stop 30 s after the deadline");
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    // The peaks cover the load with every stalled stream still open; the
    // streams go (and the server may free what they hold) only after.
    let server = sampler.map(Sampler::finish);
    let (stalled_established, stalled_failed, stalled_first_error, stalled_open_seconds) =
        match stalled {
            Some(stalled) => (
                stalled.streams.len(),
                stalled.failed,
                stalled.first_error,
                stalled.opened_in.as_secs_f64(),
            ),
            None => (0, 0, None, 0.0),
        };
    let totals = totals
        .lock()
        .map_err(|_| anyhow!("a bench client panicked"))?;
    let rate = totals.events as f64 / elapsed;
    let quantile_ms = |q: f64| totals.latency_us.value_at_quantile(q) as f64 / 1000.0;
    if json {
        let value = serde_json::json!({
            "mode": if args.stream { "stream" } else { "unary" },
            "clients": args.clients,
            "batch": args.batch,
            "event_bytes": args.event_bytes,
            "seconds": elapsed,
            "events": totals.events,
            "events_per_second": rate,
            "p50_ms": quantile_ms(0.50),
            "p99_ms": quantile_ms(0.99),
            "p999_ms": quantile_ms(0.999),
            "errors": totals.errors,
            "first_error": totals.first_error,
            "stalled_subscribers": args.stalled_subscribers,
            "stalled_established": stalled_established,
            "stalled_failed": stalled_failed,
            "stalled_first_error": stalled_first_error,
            "stalled_open_seconds": stalled_open_seconds,
            "stalled_warmup_events": warmup_events,
            "stalled_settle_seconds": settle_seconds,
            "server": server.map(|peaks| peaks.to_json()),
        });
        println!("{value}");
    } else {
        println!(
            "{} clients, {} mode, batch {}, {}-byte events, {:.1}s",
            args.clients,
            if args.stream { "stream" } else { "unary" },
            args.batch,
            args.event_bytes,
            elapsed
        );
        println!("acked events: {}  ({rate:.0} events/s)", totals.events);
        println!(
            "ack latency per request: p50 {:.3} ms  p99 {:.3} ms  p999 {:.3} ms",
            quantile_ms(0.50),
            quantile_ms(0.99),
            quantile_ms(0.999)
        );
        if totals.errors > 0 {
            println!(
                "errors: {} (first: {})",
                totals.errors,
                totals.first_error.as_deref().unwrap_or("?")
            );
        }
        if args.stalled_subscribers > 0 {
            println!(
                "stalled subscribers: {stalled_established} of {} open ({stalled_failed} failed), \
                 opened in {stalled_open_seconds:.1}s; {warmup_events} warm-up events, \
                 server idle {settle_seconds:.1}s after them",
                args.stalled_subscribers
            );
        }
        if let Some(peaks) = &server {
            println!(
                "server pid {}: peak RSS {:.1} MiB (VmHWM {:.1} MiB), peak threads {} \
                 (at start: {:.1} MiB, {} threads; {} samples{})",
                peaks.pid,
                kib_to_mib(peaks.rss_kib_peak),
                kib_to_mib(peaks.hwm_kib),
                peaks.threads_peak,
                kib_to_mib(peaks.rss_kib_start),
                peaks.threads_start,
                peaks.samples,
                if peaks.gone {
                    "; the server went away"
                } else {
                    ""
                }
            );
        }
    }
    if totals.errors > 0 {
        bail!("{} clients failed", totals.errors);
    }
    Ok(())
}

fn record(totals: &Mutex<Totals>, events: u64, latency: Duration) {
    if let Ok(mut totals) = totals.lock() {
        totals.events += events;
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        totals.latency_us.saturating_record(micros);
    }
}

#[allow(clippy::too_many_arguments)]
async fn unary_client(
    channel: Channel,
    log: &str,
    run: &str,
    client: usize,
    batch: usize,
    payload: &[u8],
    deadline: Instant,
    totals: &Mutex<Totals>,
) -> anyhow::Result<()> {
    let mut grpc = crate::client(channel);
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        let events: Vec<Event> = (0..batch)
            .map(|_| {
                sequence += 1;
                make_event(run, client, sequence, payload)
            })
            .collect();
        let count = events.len() as u64;
        let sent = Instant::now();
        grpc.append(AppendRequest {
            log: log.to_owned(),
            events,
            atomic: false,
        })
        .await
        .map_err(|status| anyhow!("{:?}: {}", status.code(), status.message()))?;
        record(totals, count, sent.elapsed());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn stream_client(
    channel: Channel,
    log: &str,
    run: &str,
    client: usize,
    batch: usize,
    window: usize,
    payload: &[u8],
    deadline: Instant,
    totals: &Mutex<Totals>,
) -> anyhow::Result<()> {
    let mut grpc = crate::client(channel);
    let permits = Arc::new(Semaphore::new(window));
    let sent_at: Arc<Mutex<VecDeque<(Instant, u64)>>> =
        Arc::new(Mutex::new(VecDeque::with_capacity(window)));
    let (sender, receiver) = tokio::sync::mpsc::channel::<AppendRequest>(window);
    let producer = {
        let permits = Arc::clone(&permits);
        let sent_at = Arc::clone(&sent_at);
        let log = log.to_owned();
        let run = run.to_owned();
        let payload = payload.to_vec();
        tokio::spawn(async move {
            let mut sequence = 0u64;
            while Instant::now() < deadline {
                let Ok(permit) = permits.acquire().await else {
                    return;
                };
                permit.forget();
                let events: Vec<Event> = (0..batch)
                    .map(|_| {
                        sequence += 1;
                        make_event(&run, client, sequence, &payload)
                    })
                    .collect();
                let count = events.len() as u64;
                if let Ok(mut queue) = sent_at.lock() {
                    queue.push_back((Instant::now(), count));
                }
                if sender
                    .send(AppendRequest {
                        log: log.clone(),
                        events,
                        atomic: false,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut responses = grpc
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .map_err(|status| anyhow!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    while let Some(response) = responses.next().await {
        let response =
            response.map_err(|status| anyhow!("{:?}: {}", status.code(), status.message()))?;
        let front = sent_at.lock().ok().and_then(|mut queue| queue.pop_front());
        if let Some((sent, count)) = front {
            debug_assert_eq!(count as usize, response.receipts.len());
            record(totals, count, sent.elapsed());
        }
        permits.add_permits(1);
    }
    producer.await.context("stream producer failed")?;
    Ok(())
}

/// Subscribe streams that were read once and are then left alone; dropping
/// this cancels them.
struct Stalled {
    streams: Vec<tonic::Streaming<Record>>,
    /// Kept so the connections outlive the opening.
    _channels: Vec<Channel>,
    failed: usize,
    first_error: Option<String>,
    opened_in: Duration,
}

/// Opens `count` Subscribe streams on `log` from its current head (appending
/// one seed event first when the log is empty or missing, so there is a
/// record to read), on connections of their own, and reads the first record
/// of each. Streams that do not get one within [`STALLED_OPENING_TIMEOUT`]
/// are counted as failed and dropped.
async fn open_stalled(addr: &str, log: &str, count: usize) -> anyhow::Result<Stalled> {
    let started = Instant::now();
    let mut grpc = crate::connect(addr).await?;
    let head = match grpc
        .head(HeadRequest {
            log: log.to_owned(),
        })
        .await
    {
        Ok(response) => {
            let head = response.into_inner();
            if !head.damage.is_empty() {
                bail!("log {log:?} is out of service: {}", head.damage);
            }
            head.lsn
        }
        Err(status) if status.code() == tonic::Code::NotFound => 0,
        Err(status) => return Err(crate::status_error(&status)),
    };
    let from = if head > 0 {
        head
    } else {
        let run = format!(
            "bench-seed-{}-{}",
            crate::input::now_unix_nanos(),
            std::process::id()
        );
        let receipts = grpc
            .append(AppendRequest {
                log: log.to_owned(),
                events: vec![make_event(&run, 0, 0, b"seed")],
                atomic: false,
            })
            .await
            .map_err(|status| crate::status_error(&status))?
            .into_inner()
            .receipts;
        receipts
            .first()
            .map(|receipt| receipt.lsn)
            .ok_or_else(|| anyhow!("the seed append returned no receipt"))?
    };

    let per_connection = STALLED_PER_CONNECTION;
    let connections = count.div_ceil(per_connection);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let window = STALLED_STREAM_WINDOW.saturating_mul(per_connection as u32);
        let channel = Endpoint::from_shared(addr.to_owned())
            .with_context(|| format!("bad --addr {addr:?}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .initial_stream_window_size(STALLED_STREAM_WINDOW)
            .initial_connection_window_size(window)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        channels.push(channel);
    }

    let permits = Arc::new(Semaphore::new(STALLED_OPENING_CONCURRENCY));
    let mut opening = tokio::task::JoinSet::new();
    for index in 0..count {
        let mut grpc = crate::client(channels[index / per_connection].clone());
        let permits = Arc::clone(&permits);
        let log = log.to_owned();
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let mut stream = grpc
                .subscribe(SubscribeRequest {
                    log,
                    from_lsn: from,
                    filter: None,
                })
                .await
                .map_err(|status| crate::status_error(&status))?
                .into_inner();
            match stream.message().await {
                Ok(Some(_)) => Ok(stream),
                Ok(None) => Err(anyhow!("the stream ended before its first record")),
                Err(status) => Err(crate::status_error(&status)),
            }
        });
    }
    let deadline = tokio::time::Instant::now() + STALLED_OPENING_TIMEOUT;
    let mut streams = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_error = None;
    while !opening.is_empty() {
        match tokio::time::timeout_at(deadline, opening.join_next()).await {
            Ok(Some(Ok(Ok(stream)))) => streams.push(stream),
            Ok(Some(Ok(Err(error)))) => {
                failed += 1;
                first_error.get_or_insert(format!("{error:#}"));
            }
            Ok(Some(Err(error))) => {
                failed += 1;
                first_error.get_or_insert(format!("opening task failed: {error}"));
            }
            Ok(None) => break,
            Err(_) => {
                failed += opening.len();
                first_error.get_or_insert(format!(
                    "no first record within {}s",
                    STALLED_OPENING_TIMEOUT.as_secs()
                ));
                opening.abort_all();
                break;
            }
        }
    }
    Ok(Stalled {
        streams,
        _channels: channels,
        failed,
        first_error,
        opened_in: started.elapsed(),
    })
}

/// Appends `events` events (requests of 100, each bounded in time) so the
/// stalled streams fill up before the timed load.
async fn warm_up(addr: &str, log: &str, events: usize, event_bytes: usize) -> anyhow::Result<()> {
    let run = format!(
        "bench-warmup-{}-{}",
        crate::input::now_unix_nanos(),
        std::process::id()
    );
    let payload = payload_for(event_bytes, &run);
    let mut grpc = crate::connect(addr).await?;
    let mut sequence = 0u64;
    let mut left = events;
    while left > 0 {
        let count = left.min(100);
        left -= count;
        let events: Vec<Event> = (0..count)
            .map(|_| {
                sequence += 1;
                make_event(&run, 0, sequence, &payload)
            })
            .collect();
        tokio::time::timeout(
            Duration::from_secs(30),
            grpc.append(AppendRequest {
                log: log.to_owned(),
                events,
                atomic: false,
            }),
        )
        .await
        .map_err(|_| anyhow!("a warm-up append took over 30 s"))?
        .map_err(|status| crate::status_error(&status))?;
    }
    Ok(())
}

/// Waits until the server has used under 5% of a core over 500 ms (from
/// `/proc/PID/stat`), at most 10 s; without a pid, 2 s. Returns the wait.
async fn settle(pid: Option<u32>) -> Duration {
    let started = Instant::now();
    let Some(pid) = pid else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        return started.elapsed();
    };
    // Clock ticks per second: 100 on Linux for every architecture we run on.
    const TICKS_PER_SECOND: u64 = 100;
    let window = Duration::from_millis(500);
    let mut before = cpu_ticks(pid);
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(window).await;
        let now = cpu_ticks(pid);
        match (before, now) {
            (Some(before), Some(now))
                if (now - before) * 1000 <= TICKS_PER_SECOND * window.as_millis() as u64 / 20 =>
            {
                break
            }
            (_, None) => break,
            _ => {}
        }
        before = now;
    }
    started.elapsed()
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The server's memory and threads over the run, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default)]
struct ServerPeaks {
    pid: u32,
    samples: u64,
    rss_kib_start: u64,
    threads_start: u64,
    rss_kib_peak: u64,
    /// The kernel's own high-water mark, as last read.
    hwm_kib: u64,
    threads_peak: u64,
    /// The process went away (or its status became unreadable) mid-run.
    gone: bool,
}

impl ServerPeaks {
    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "pid": self.pid,
            "samples": self.samples,
            "start_rss_mib": kib_to_mib(self.rss_kib_start),
            "start_threads": self.threads_start,
            "peak_rss_mib": kib_to_mib(self.rss_kib_peak),
            "hwm_mib": kib_to_mib(self.hwm_kib),
            "peak_threads": self.threads_peak,
            "gone": self.gone,
        })
    }

    fn update(&mut self, status: ProcStatus) {
        self.samples += 1;
        self.rss_kib_peak = self.rss_kib_peak.max(status.rss_kib);
        self.hwm_kib = self.hwm_kib.max(status.hwm_kib);
        self.threads_peak = self.threads_peak.max(status.threads);
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[derive(Clone, Copy, Debug)]
struct ProcStatus {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn read_proc_status(pid: u32) -> anyhow::Result<ProcStatus> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| anyhow!("{path} has no {name}"))
    };
    Ok(ProcStatus {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// Samples a process's status every [`SAMPLE_INTERVAL`] on a thread of its
/// own (so a busy runtime does not skip samples) until finished or the
/// process goes away.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<ServerPeaks>>,
}

impl Sampler {
    fn start(pid: u32) -> anyhow::Result<Sampler> {
        let first = read_proc_status(pid).context("--server-pid")?;
        let mut peaks = ServerPeaks {
            pid,
            rss_kib_start: first.rss_kib,
            threads_start: first.threads,
            ..ServerPeaks::default()
        };
        peaks.update(first);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bench-sampler".to_owned())
            .spawn(move || {
                // Bounded even if never told to stop.
                let give_up = Instant::now() + DURATION_MAX + STALLED_OPENING_TIMEOUT * 2;
                while !stopped.load(Ordering::Relaxed) && Instant::now() < give_up {
                    std::thread::sleep(SAMPLE_INTERVAL);
                    match read_proc_status(pid) {
                        Ok(status) => peaks.update(status),
                        Err(_) => {
                            peaks.gone = true;
                            break;
                        }
                    }
                }
                peaks
            })
            .context("cannot start the sampling thread")?;
        Ok(Sampler {
            stop,
            thread: Some(thread),
        })
    }

    /// Takes one last sample and returns the peaks.
    fn finish(mut self) -> ServerPeaks {
        self.stop.store(true, Ordering::Relaxed);
        let mut peaks = self
            .thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        if !peaks.gone {
            match read_proc_status(peaks.pid) {
                Ok(status) => peaks.update(status),
                Err(_) => peaks.gone = true,
            }
        }
        peaks
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
