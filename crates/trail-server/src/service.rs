//! The `trail.v1.Log` gRPC service. Handlers are thin: they check the request,
//! find the log, call the engine and translate its answer.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use trail_log::codec::Record as StoredBody;
use trail_log::{EventInput, Log, LogName, Lsn, RecordKind, Store, StoredRecord};
use trail_proto::server_view::log_server::Log as LogRpc;
use trail_proto::server_view::{AppendRequest, Record};
use trail_proto::v1::{
    AppendResponse, HeadRequest, HeadResponse, ReadRequest, Receipt, RecordKind as ProtoKind,
    SubscribeRequest, VerifyRequest, VerifyResponse,
};

use crate::limits::Limits;
use crate::metrics::{LogMetrics, Metrics};
use crate::{status, validate};

/// Records in flight between the disk reader and the gRPC stream of one
/// `Read` or `Subscribe`. Small: flow control, not this buffer, absorbs a
/// slow client.
const STREAM_CHANNEL_RECORDS: usize = 16;

/// The `trail.v1.Log` service over one [`Store`]. It implements the server
/// view of the service (`trail_proto::server_view`): each appended event
/// arrives as the bytes the producer encoded, is decoded only to be checked,
/// and is stored as it arrived.
#[derive(Clone)]
pub struct LogService {
    /// The store, open logs, limits and metrics, shared with append tasks.
    shared: Appender,
    /// Turns true when the server shuts down, so long-lived streams end
    /// instead of holding the shutdown open.
    shutdown: watch::Receiver<bool>,
}

/// An open log and its metric handles.
#[derive(Clone)]
struct OpenLog {
    log: Arc<Log>,
    metrics: Arc<LogMetrics>,
}

/// Open logs by name, so handlers find a log without blocking IO.
#[derive(Default)]
struct LogCache(RwLock<HashMap<LogName, OpenLog>>);

impl LogCache {
    fn get(&self, name: &LogName) -> Option<OpenLog> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Caches `log` unless another task cached it first; returns the cached one.
    fn insert(&self, name: LogName, log: Arc<Log>, metrics: &Metrics) -> OpenLog {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_insert_with_key(|name| OpenLog {
                log,
                metrics: metrics.for_log(name.as_str()),
            })
            .clone()
    }

    fn all(&self) -> Vec<OpenLog> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

impl LogService {
    /// A service over `store`, without metrics; long-lived streams end when
    /// `shutdown` turns true.
    #[must_use]
    pub fn new(store: Arc<Store>, limits: Limits, shutdown: watch::Receiver<bool>) -> LogService {
        LogService::with_metrics(store, limits, shutdown, Metrics::disabled())
    }

    /// As [`LogService::new`], recording into `metrics`.
    #[must_use]
    pub fn with_metrics(
        store: Arc<Store>,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
        metrics: Metrics,
    ) -> LogService {
        LogService {
            shared: Appender {
                store,
                cache: Arc::default(),
                limits: Arc::new(limits),
                metrics,
            },
            shutdown,
        }
    }

    /// Copies every open log's writer counters and queue depth into the
    /// metrics (cheap: atomics and a lock per log, no IO).
    pub fn sample_metrics(&self) {
        for open in self.shared.cache.all() {
            open.metrics.sample(&open.log);
        }
    }

    /// The log a read-side request names; NOT_FOUND when it does not exist.
    async fn existing_log(&self, name: &str) -> Result<Arc<Log>, Status> {
        let name = validate::log_name(name)?;
        let shared = &self.shared;
        let open = find_log(&shared.store, &shared.cache, &shared.metrics, name, false).await?;
        Ok(open.log)
    }
}

/// Finds a log, opening it (or, with `create`, creating it) on the blocking
/// pool the first time.
async fn find_log(
    store: &Arc<Store>,
    cache: &LogCache,
    metrics: &Metrics,
    name: LogName,
    create: bool,
) -> Result<OpenLog, Status> {
    if let Some(log) = cache.get(&name) {
        return Ok(log);
    }
    let opener = Arc::clone(store);
    let wanted = name.clone();
    let found = tokio::task::spawn_blocking(move || {
        if create {
            opener.get_or_create(&wanted).map(Some)
        } else {
            opener.get(&wanted)
        }
    })
    .await
    .map_err(|error| Status::internal(format!("opening the log failed: {error}")))?
    .map_err(|error| status::from_log_error(&error))?;
    match found {
        Some(log) => Ok(cache.insert(name, log, metrics)),
        None => Err(status::log_not_found(&name)),
    }
}

/// What the handlers share, and what one append request needs: cloned into
/// each `AppendStream` task.
#[derive(Clone)]
struct Appender {
    /// The logs this server serves.
    store: Arc<Store>,
    /// Logs already opened: the store may open a log from disk (recovery,
    /// verification) on first access, which must not run on an async worker.
    cache: Arc<LogCache>,
    /// Bounds on what clients send.
    limits: Arc<Limits>,
    /// Where appends are counted and timed.
    metrics: Metrics,
}

/// What a successful append did, for the metrics.
struct Appended {
    response: AppendResponse,
    new_events: u64,
    duplicates: u64,
    new_bytes: u64,
}

/// Keeps one stream's appends in request order on their way into the log,
/// while their checking and hashing still run in parallel: each append waits
/// for the one before it to be queued, queues itself, then lets the next go.
struct QueueTurn {
    previous_queued: oneshot::Receiver<()>,
    queued: oneshot::Sender<()>,
}

impl QueueTurn {
    /// Gives the turn up without queueing anything (the append failed
    /// before it got that far): the next append may go once this one's
    /// predecessor has been queued.
    fn pass(self) {
        tokio::spawn(async move {
            let _ = self.previous_queued.await;
            let _ = self.queued.send(());
        });
    }
}

/// Hands out [`QueueTurn`]s in request order.
struct QueueTurns {
    previous_queued: oneshot::Receiver<()>,
}

impl QueueTurns {
    /// A chain whose first turn may go at once.
    fn new() -> QueueTurns {
        let (queued, previous_queued) = oneshot::channel();
        let _ = queued.send(());
        QueueTurns { previous_queued }
    }

    fn next(&mut self) -> QueueTurn {
        let (queued, next_previous) = oneshot::channel();
        let previous_queued = std::mem::replace(&mut self.previous_queued, next_previous);
        QueueTurn {
            previous_queued,
            queued,
        }
    }
}

impl Appender {
    /// Checks and appends one request; answers once every event is durable,
    /// and counts the outcome. With a `turn`, the request enters the log's
    /// queue only after the stream's previous request did.
    async fn append(
        &self,
        request: AppendRequest,
        turn: Option<QueueTurn>,
    ) -> Result<AppendResponse, Status> {
        let received = Instant::now();
        let events = u64::try_from(request.events.len()).unwrap_or(u64::MAX);
        let mut metrics = None;
        let mut turn = turn;
        let result = self.append_checked(request, &mut metrics, &mut turn).await;
        if let Some(turn) = turn {
            turn.pass();
        }
        let metrics = metrics.unwrap_or_else(|| self.metrics.unknown_log());
        match result {
            Ok(appended) => {
                metrics.append_ok(
                    appended.new_events,
                    appended.duplicates,
                    appended.new_bytes,
                    received.elapsed(),
                );
                Ok(appended.response)
            }
            Err(status) => {
                metrics.append_failed(status.code(), events);
                Err(status)
            }
        }
    }

    /// The append itself; sets `metrics` to the log's handles once the log
    /// is known.
    async fn append_checked(
        &self,
        request: AppendRequest,
        metrics: &mut Option<Arc<LogMetrics>>,
        turn: &mut Option<QueueTurn>,
    ) -> Result<Appended, Status> {
        let AppendRequest {
            log,
            events,
            atomic,
        } = request;
        let name = validate::log_name(&log)?;
        let cached = self.cache.get(&name);
        if let Some(open) = &cached {
            *metrics = Some(Arc::clone(&open.metrics));
        }
        // Decoded only to be checked and for the event ids: what is stored
        // is `events`, the bytes the producer sent.
        let decoded = validate::encoded_events(&events, &self.limits)?;
        let open = match cached {
            Some(open) => open,
            None => {
                let open = find_log(&self.store, &self.cache, &self.metrics, name, true).await?;
                *metrics = Some(Arc::clone(&open.metrics));
                open
            }
        };
        // (event id, encoded size) per event, for the receipts and metrics.
        let mut sent = Vec::with_capacity(events.len());
        let inputs: Vec<EventInput> = decoded
            .into_iter()
            .zip(events)
            .map(|(event, bytes)| {
                sent.push((event.event_id.clone(), bytes.len()));
                EventInput::new(event.event_id, bytes)
            })
            .collect();
        let prepared = open
            .log
            .prepare(inputs, atomic)
            .map_err(|error| status::from_log_error(&error))?;
        if let Some(turn) = turn.as_mut() {
            let _ = (&mut turn.previous_queued).await;
        }
        let pending = open.log.submit(prepared).await;
        if let Some(turn) = turn.take() {
            let _ = turn.queued.send(());
        }
        let receipts = pending
            .map_err(|error| status::from_log_error(&error))?
            .wait()
            .await
            .map_err(|error| status::from_log_error(&error))?;
        if receipts.len() != sent.len() {
            return Err(Status::internal(format!(
                "the log answered {} receipts for {} events",
                receipts.len(),
                sent.len()
            )));
        }
        let (mut new_events, mut duplicates, mut new_bytes) = (0, 0, 0);
        let receipts = sent
            .into_iter()
            .zip(receipts)
            .map(|((event_id, size), receipt)| {
                if receipt.duplicate {
                    duplicates += 1;
                } else {
                    new_events += 1;
                    new_bytes += u64::try_from(size).unwrap_or(u64::MAX);
                }
                Receipt {
                    event_id,
                    lsn: receipt.lsn.0,
                    hash: receipt.hash.0.to_vec(),
                    duplicate: receipt.duplicate,
                    recorded_at_unix_nanos: receipt.recorded_at_unix_nanos,
                }
            })
            .collect();
        Ok(Appended {
            response: AppendResponse { receipts },
            new_events,
            duplicates,
            new_bytes,
        })
    }
}

/// A stored record as the wire shows it: the event goes out as the bytes
/// that are stored (the server view's `Record.event`), never re-encoded.
#[must_use]
pub fn record_to_proto(stored: &StoredRecord) -> Record {
    let StoredBody {
        lsn,
        recorded_at_unix_nanos,
        prev_hash,
        kind,
        batch_last_lsn,
        event,
        ..
    } = &stored.record;
    let (kind, compensates) = match kind {
        RecordKind::Event => (ProtoKind::Event, 0),
        RecordKind::Compensation { compensates } => (ProtoKind::Compensation, compensates.0),
    };
    Record {
        lsn: lsn.0,
        recorded_at_unix_nanos: *recorded_at_unix_nanos,
        prev_hash: prev_hash.0.to_vec(),
        hash: stored.hash.0.to_vec(),
        kind: kind as i32,
        compensates,
        batch_last_lsn: batch_last_lsn.0,
        event: event.clone(),
    }
}

/// Reads `[from, to]` from disk (blocking IO) into wire records.
fn read_chunk(log: &Log, from: Lsn, to: Lsn) -> Result<Vec<Record>, Status> {
    let mut records = Vec::new();
    for item in log.read(from, to) {
        let stored = item.map_err(|error| status::from_log_error(&error))?;
        records.push(record_to_proto(&stored));
    }
    Ok(records)
}

/// Streams records from `next` through `to` into `sender`, a chunk at a time.
/// Returns the next LSN to send, or `None` when the stream is over (client
/// gone, shutdown, or an error that was sent).
async fn pump(
    log: &Arc<Log>,
    mut next: Lsn,
    to: Lsn,
    chunk: usize,
    sender: &mpsc::Sender<Result<Record, Status>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Lsn> {
    let chunk = u64::try_from(chunk).unwrap_or(u64::MAX).max(1);
    while next <= to {
        let end = Lsn(to.0.min(next.0.saturating_add(chunk - 1)));
        let reader = Arc::clone(log);
        let result = tokio::task::spawn_blocking(move || read_chunk(&reader, next, end))
            .await
            .unwrap_or_else(|error| Err(Status::internal(format!("reading failed: {error}"))));
        let records = match result {
            Ok(records) => records,
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return None;
            }
        };
        let Some(last) = records.last() else {
            let _ = sender
                .send(Err(Status::internal(format!(
                    "the log returned no records for {next}..={end}"
                ))))
                .await;
            return None;
        };
        if records.first().map(|record| record.lsn) != Some(next.0) {
            let _ = sender
                .send(Err(Status::internal(format!("the log skipped LSN {next}"))))
                .await;
            return None;
        }
        next = Lsn(last.lsn + 1);
        for record in records {
            tokio::select! {
                sent = sender.send(Ok(record)) => if sent.is_err() { return None },
                () = stopped(shutdown) => {
                    let _ = sender.try_send(Err(Status::unavailable("server is shutting down")));
                    return None;
                }
            }
        }
    }
    Some(next)
}

/// Resolves once the server starts shutting down (never holds the watch's
/// lock across an await).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

#[tonic::async_trait]
impl LogRpc for LogService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        self.shared
            .append(request.into_inner(), None)
            .await
            .map(Response::new)
    }

    type AppendStreamStream = ReceiverStream<Result<AppendResponse, Status>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut requests = request.into_inner();
        let in_flight = self.shared.limits.stream_appends_in_flight_max;
        // Appends run concurrently (up to `in_flight`) so one stream can fill
        // a group commit and its checking and hashing use every core; they
        // enter the log's queue in request order (so their LSNs follow the
        // stream's order), and their handles queue in request order, so
        // responses go out in order.
        let (pending_sender, mut pending) =
            mpsc::channel::<tokio::task::JoinHandle<Result<AppendResponse, Status>>>(in_flight);
        let (sender, receiver) = mpsc::channel(in_flight);
        let appender = self.shared.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut turns = QueueTurns::new();
            loop {
                let next = tokio::select! {
                    next = requests.next() => next,
                    () = stopped(&mut shutdown) => break,
                };
                let request = match next {
                    None => break,
                    Some(Ok(request)) => request,
                    Some(Err(status)) => {
                        tracing::debug!(%status, "append stream ended by the client");
                        break;
                    }
                };
                let appender = appender.clone();
                let turn = turns.next();
                let handle =
                    tokio::spawn(async move { appender.append(request, Some(turn)).await });
                if pending_sender.send(handle).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(handle) = pending.recv().await {
                let response = handle.await.unwrap_or_else(|error| {
                    Err(Status::internal(format!("append task failed: {error}")))
                });
                let failed = response.is_err();
                if sender.send(response).await.is_err() || failed {
                    // The stream ends with the first error; appends already in
                    // flight still complete, and a retry with the same event
                    // ids gets their receipts.
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type ReadStream = ReceiverStream<Result<Record, Status>>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ReadRequest {
            log,
            from_lsn,
            to_lsn,
        } = request.into_inner();
        let log = self.existing_log(&log).await?;
        let head = log.head().lsn;
        let from = Lsn(from_lsn.max(1));
        if to_lsn != 0 && to_lsn > head.0 {
            return Err(Status::not_found(format!(
                "to_lsn: {to_lsn} is beyond the log's head {head}"
            )));
        }
        let to = if to_lsn == 0 { head } else { Lsn(to_lsn) };
        if from.0 > head.0.saturating_add(1) {
            return Err(Status::not_found(format!(
                "from_lsn: {from_lsn} is beyond the log's head {head}"
            )));
        }
        if to_lsn != 0 && from > to {
            return Err(Status::invalid_argument(format!(
                "from_lsn: {from_lsn} is after to_lsn {to_lsn}"
            )));
        }
        let (sender, receiver) = mpsc::channel(STREAM_CHANNEL_RECORDS);
        let chunk = self.shared.limits.read_chunk_records;
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            pump(&log, from, to, chunk, &sender, &mut shutdown).await;
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type SubscribeStream = ReceiverStream<Result<Record, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let SubscribeRequest { log, from_lsn } = request.into_inner();
        let log = self.existing_log(&log).await?;
        let mut heads = log.watch_head();
        let head = heads.borrow_and_update().lsn;
        let from = Lsn(from_lsn.max(1));
        if from.0 > head.0.saturating_add(1) {
            return Err(Status::not_found(format!(
                "from_lsn: {from_lsn} is beyond the log's head {head}; subscribe from at most {}",
                head.0 + 1
            )));
        }
        let (sender, receiver) = mpsc::channel(STREAM_CHANNEL_RECORDS);
        let chunk = self.shared.limits.read_chunk_records;
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut next = from;
            loop {
                let head = heads.borrow_and_update().lsn;
                if next <= head {
                    match pump(&log, next, head, chunk, &sender, &mut shutdown).await {
                        Some(after) => next = after,
                        None => return,
                    }
                    continue;
                }
                tokio::select! {
                    changed = heads.changed() => if changed.is_err() {
                        let _ = sender.send(Err(Status::unavailable("the log was closed"))).await;
                        return;
                    },
                    () = sender.closed() => return,
                    () = stopped(&mut shutdown) => {
                        let _ = sender.send(Err(Status::unavailable("server is shutting down"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let VerifyRequest {
            log,
            from_lsn,
            to_lsn,
        } = request.into_inner();
        let log = self.existing_log(&log).await?;
        let head = log.head();
        let from = Lsn(from_lsn.max(1));
        if to_lsn > head.lsn.0 {
            return Err(Status::not_found(format!(
                "to_lsn: {to_lsn} is beyond the log's head {}",
                head.lsn
            )));
        }
        let to = if to_lsn == 0 { head.lsn } else { Lsn(to_lsn) };
        if from > to {
            if to_lsn == 0 && from_lsn <= 1 {
                // An empty log verifies trivially.
                return Ok(Response::new(VerifyResponse {
                    verified: 0,
                    head_lsn: head.lsn.0,
                    head_hash: head.hash.0.to_vec(),
                    first_bad_lsn: 0,
                    reason: String::new(),
                }));
            }
            if from > head.lsn {
                return Err(Status::not_found(format!(
                    "from_lsn: {from_lsn} is beyond the log's head {}",
                    head.lsn
                )));
            }
            return Err(Status::invalid_argument(format!(
                "from_lsn: {from_lsn} is after to_lsn {to_lsn}"
            )));
        }
        let report = tokio::task::spawn_blocking(move || log.verify(from, to, &mut |_| {}))
            .await
            .map_err(|error| Status::internal(format!("verify failed: {error}")))?
            .map_err(|error| status::from_log_error(&error))?;
        let (first_bad_lsn, reason) = match &report.failure {
            None => (0, String::new()),
            Some(failure) => (
                failure.lsn.0,
                format!(
                    "{} (file {}, offset {})",
                    failure.reason,
                    failure.file.display(),
                    failure.offset
                ),
            ),
        };
        Ok(Response::new(VerifyResponse {
            verified: report.verified,
            head_lsn: report.last.0,
            head_hash: report.head_hash.0.to_vec(),
            first_bad_lsn,
            reason,
        }))
    }

    async fn head(&self, request: Request<HeadRequest>) -> Result<Response<HeadResponse>, Status> {
        let HeadRequest { log } = request.into_inner();
        let head = self.existing_log(&log).await?.head();
        Ok(Response::new(HeadResponse {
            lsn: head.lsn.0,
            hash: head.hash.0.to_vec(),
        }))
    }
}
