//! `peer-load`: the parts of `scripts/bench-peers.sh` that are not off the
//! shelf (docs/BENCHMARKS.md, "Beside peers").
//!
//! - `peer-load umadb`: a load client for UmaDB on its own Rust client
//!   (`umadb-client` 0.7.8): N clients, each with one `append` of B events
//!   in flight and waiting for its answer (UmaDB answers after its
//!   fdatasync), for D seconds. Prints one JSON line with the same keys as
//!   `trail --json bench`.
//! - `peer-load grpc-ceiling`: a server of Trail's own `trail.v1.Log`
//!   service whose Append and AppendStream store nothing and answer one
//!   receipt per event at once, so that `trail bench`, the client used
//!   against `traild`, measures what gRPC itself allows on this machine.
//!
//! Everything is bounded: the client stops at its deadline (each request at
//! most 30 s after it); the server listens on a loopback address only and
//! stops on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use trail_proto::server_view::log_server::{Log, LogServer};
use trail_proto::server_view::{AppendRequest, CompensateResponse, QueryResponse, Record};
use trail_proto::v1::{
    AppendResponse, CompensateRequest, GetStateRequest, GetStateResponse, HeadRequest,
    HeadResponse, HistoryRequest, HistoryResponse, QueryRequest, ReadRequest, Receipt,
    RollbackRequest, SubscribeRequest, VerifyRequest, VerifyResponse,
};
use umadb_client::UmaDbClient;
use umadb_dcb::{DcbEvent, DcbEventStoreAsync};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The longest a load run may last.
const DURATION_MAX: Duration = Duration::from_secs(3600);
/// The longest one request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most clients.
const CLIENTS_MAX: usize = 4096;
/// The request size limit of the ceiling server: traild's default
/// (`limits.request_bytes_max`).
const REQUEST_BYTES_MAX: usize = 3 << 20;

#[derive(Parser)]
#[command(about = "Load clients and a no-work gRPC server for scripts/bench-peers.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append to an UmaDB server with its own client; print one JSON line.
    Umadb(UmadbArgs),
    /// Serve trail.v1.Log with an Append that stores nothing.
    GrpcCeiling(CeilingArgs),
}

#[derive(clap::Args)]
struct UmadbArgs {
    /// The server, e.g. http://127.0.0.1:50052.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    addr: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Encoded size of each event (UmaDB's protobuf Event), bytes.
    #[arg(long, default_value_t = 512)]
    event_bytes: usize,
    /// HTTP/2 connections the clients share (as `trail bench`: 4).
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[derive(clap::Args)]
struct CeilingArgs {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:50593")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Umadb(args) => runtime.block_on(umadb(args)),
        Command::GrpcCeiling(args) => runtime.block_on(ceiling(args)),
    }
}

// ---------------------------------------------------------------- UmaDB load

struct Totals {
    events: u64,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
}

fn umadb_event(payload: &[u8], sequence: u64) -> DcbEvent {
    DcbEvent::default()
        .event_type("bench.append")
        .tags([format!("bench/{}", sequence % 1024)])
        .data(payload.to_vec())
        .uuid(uuid::Uuid::new_v4())
}

/// A payload that makes each event about `event_bytes` long as UmaDB's
/// client encodes it on the wire.
fn umadb_payload(event_bytes: usize) -> Vec<u8> {
    let probe = umadb_proto::v1::Event::from(umadb_event(&[], 999_999));
    // +3: the payload's own tag and length prefix (two bytes for lengths
    // of 128..16383).
    let overhead = probe.encoded_len() + 3;
    vec![b'x'; event_bytes.saturating_sub(overhead)]
}

async fn umadb(args: UmadbArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        bail!("--clients must be 1..={CLIENTS_MAX}");
    }
    if args.batch == 0 || args.connections == 0 {
        bail!("--batch and --connections must be at least 1");
    }
    let duration = Duration::from_secs(args.duration);
    if duration.is_zero() || duration > DURATION_MAX {
        bail!("--duration must be 1..={} seconds", DURATION_MAX.as_secs());
    }
    let mut connections = Vec::new();
    for _ in 0..args.connections.min(args.clients) {
        let client = UmaDbClient::new(args.addr.clone())
            .connect_async()
            .await
            .map_err(|error| anyhow!("cannot connect to {}: {error}", args.addr))?;
        connections.push(Arc::new(client));
    }
    let payload: Arc<[u8]> = umadb_payload(args.event_bytes).into();
    let encoded = umadb_proto::v1::Event::from(umadb_event(&payload, 999_999)).encoded_len();
    let totals = Arc::new(Mutex::new(Totals {
        events: 0,
        requests: 0,
        errors: 0,
        first_error: None,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
            .map_err(|error| anyhow!("histogram: {error}"))?,
    }));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let connection = Arc::clone(&connections[client % connections.len()]);
        let totals = Arc::clone(&totals);
        let payload = Arc::clone(&payload);
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut sequence = 0u64;
            while Instant::now() < deadline {
                let events: Vec<DcbEvent> = (0..batch)
                    .map(|_| {
                        sequence += 1;
                        umadb_event(&payload, sequence)
                    })
                    .collect();
                let sent = Instant::now();
                let answer =
                    tokio::time::timeout(REQUEST_TIMEOUT, connection.append(events, None, None))
                        .await;
                let latency = sent.elapsed();
                let Ok(mut totals) = totals.lock() else {
                    return;
                };
                match answer {
                    Ok(Ok(_position)) => {
                        totals.events += batch as u64;
                        totals.requests += 1;
                        let micros = u64::try_from(latency.as_micros())
                            .unwrap_or(u64::MAX)
                            .max(1);
                        totals.latency_us.saturating_record(micros);
                    }
                    Ok(Err(error)) => {
                        totals.errors += 1;
                        totals.first_error.get_or_insert(error.to_string());
                        return;
                    }
                    Err(_) => {
                        totals.errors += 1;
                        totals
                            .first_error
                            .get_or_insert(format!("no answer within {REQUEST_TIMEOUT:?}"));
                        return;
                    }
                }
            }
        }));
    }
    for task in tasks {
        if tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), task)
            .await
            .is_err()
        {
            bail!("a client did not stop after the deadline");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let totals = totals
        .lock()
        .map_err(|_| anyhow!("a client panicked"))?;
    let quantile_ms = |q: f64| totals.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let line = serde_json::json!({
        "system": "umadb",
        "mode": "unary",
        "clients": args.clients,
        "batch": args.batch,
        "event_bytes": args.event_bytes,
        "encoded_event_bytes": encoded,
        "connections": connections.len(),
        "seconds": elapsed,
        "events": totals.events,
        "requests": totals.requests,
        "events_per_second": totals.events as f64 / elapsed,
        "p50_ms": quantile_ms(0.50),
        "p99_ms": quantile_ms(0.99),
        "p999_ms": quantile_ms(0.999),
        "errors": totals.errors,
        "first_error": totals.first_error,
    });
    println!("{line}");
    if totals.errors > 0 {
        bail!("{} clients failed", totals.errors);
    }
    Ok(())
}

// ---------------------------------------------------------- the gRPC ceiling

/// Only field 1 of a `trail.v1.Event`: prost skips the rest by their
/// lengths, so the receipt can name the event without decoding it.
#[derive(Clone, PartialEq, Message)]
struct EventIdOnly {
    #[prost(string, tag = "1")]
    event_id: String,
}

/// A stand-in for a record hash, so receipts are as long as traild's.
const HASH: [u8; 32] = [0x5a; 32];

#[derive(Default)]
struct Ceiling {
    next_lsn: Arc<AtomicU64>,
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One receipt per event, nothing stored, no fsync.
fn receipts(next_lsn: &AtomicU64, events: &[Vec<u8>]) -> AppendResponse {
    let count = events.len() as u64;
    let first = next_lsn.fetch_add(count, Ordering::Relaxed) + 1;
    let now = unix_nanos();
    let receipts = events
        .iter()
        .zip(first..)
        .map(|(raw, lsn)| Receipt {
            event_id: EventIdOnly::decode(raw.as_slice())
                .map(|event| event.event_id)
                .unwrap_or_default(),
            lsn,
            hash: HASH.to_vec(),
            duplicate: false,
            recorded_at_unix_nanos: now,
        })
        .collect();
    AppendResponse { receipts }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn not_here<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "the gRPC ceiling server answers Append and AppendStream only",
    ))
}

#[tonic::async_trait]
impl Log for Ceiling {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let request = request.into_inner();
        if request.events.is_empty() {
            return Err(Status::invalid_argument("events: at least one event"));
        }
        Ok(Response::new(receipts(&self.next_lsn, &request.events)))
    }

    type AppendStreamStream = BoxStream<AppendResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let next_lsn = Arc::clone(&self.next_lsn);
        let answers = request
            .into_inner()
            .map(move |item| item.map(|request| receipts(&next_lsn, &request.events)));
        Ok(Response::new(Box::pin(answers)))
    }

    type ReadStream = BoxStream<Record>;

    async fn read(&self, _: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        not_here()
    }

    type SubscribeStream = BoxStream<Record>;

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        not_here()
    }

    async fn verify(&self, _: Request<VerifyRequest>) -> Result<Response<VerifyResponse>, Status> {
        not_here()
    }

    async fn head(&self, _: Request<HeadRequest>) -> Result<Response<HeadResponse>, Status> {
        not_here()
    }

    async fn query(&self, _: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        not_here()
    }

    async fn get_state(
        &self,
        _: Request<GetStateRequest>,
    ) -> Result<Response<GetStateResponse>, Status> {
        not_here()
    }

    async fn history(
        &self,
        _: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        not_here()
    }

    async fn compensate(
        &self,
        _: Request<CompensateRequest>,
    ) -> Result<Response<CompensateResponse>, Status> {
        not_here()
    }

    async fn rollback(
        &self,
        _: Request<RollbackRequest>,
    ) -> Result<Response<CompensateResponse>, Status> {
        not_here()
    }
}

async fn ceiling(args: CeilingArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("--listen must be a loopback address, not {}", args.listen);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let incoming =
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = LogServer::new(Ceiling::default())
        .max_decoding_message_size(REQUEST_BYTES_MAX)
        .max_encoding_message_size(REQUEST_BYTES_MAX);
    let stop = async {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // The same transport settings as traild (limits.streams_per_connection_max).
    tonic::transport::Server::builder()
        .max_concurrent_streams(256)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .context("the ceiling server failed")?;
    Ok(())
}
