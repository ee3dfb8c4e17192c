//! `trail bench`: a bounded load generator. Each client appends for
//! `--duration` (unary, or over AppendStream with `--batch` events per
//! request); the tool prints acked events per second and ack latency
//! percentiles (from send to receipt, per request).

use std::collections::VecDeque;
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
use trail_proto::v1::{AppendRequest, Event, Outcome};

/// The longest a bench may run.
const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Most clients.
const CLIENTS_MAX: usize = 4096;

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
