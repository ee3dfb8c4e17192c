//! The `trail.v1.Log` gRPC service. Handlers are thin: they check the request,
//! find the log, call the engine and translate its answer.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use trail_log::codec::Record as StoredBody;
use trail_log::{EventInput, Log, LogName, Lsn, RecordKind, Store, StoredRecord};
use trail_proto::v1::log_server::Log as LogRpc;
use trail_proto::v1::{
    AppendRequest, AppendResponse, HeadRequest, HeadResponse, ReadRequest, Receipt, Record,
    RecordKind as ProtoKind, SubscribeRequest, VerifyRequest, VerifyResponse,
};

use crate::limits::Limits;
use crate::{status, validate};

/// Records in flight between the disk reader and the gRPC stream of one
/// `Read` or `Subscribe`. Small: flow control, not this buffer, absorbs a
/// slow client.
const STREAM_CHANNEL_RECORDS: usize = 16;

/// The `trail.v1.Log` service over one [`Store`].
#[derive(Clone)]
pub struct LogService {
    /// The logs this server serves.
    store: Arc<Store>,
    /// Bounds on what clients send.
    limits: Arc<Limits>,
    /// Turns true when the server shuts down, so long-lived streams end
    /// instead of holding the shutdown open.
    shutdown: watch::Receiver<bool>,
    /// Logs already opened: the store may open a log from disk (recovery,
    /// verification) on first access, which must not run on an async worker.
    logs: Arc<LogCache>,
}

/// Open logs by name, so handlers find a log without blocking IO.
#[derive(Default)]
struct LogCache(RwLock<HashMap<LogName, Arc<Log>>>);

impl LogCache {
    fn get(&self, name: &LogName) -> Option<Arc<Log>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn insert(&self, name: LogName, log: &Arc<Log>) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, Arc::clone(log));
    }
}

impl LogService {
    /// A service over `store`; long-lived streams end when `shutdown` turns true.
    #[must_use]
    pub fn new(store: Arc<Store>, limits: Limits, shutdown: watch::Receiver<bool>) -> LogService {
        LogService {
            store,
            limits: Arc::new(limits),
            shutdown,
            logs: Arc::default(),
        }
    }

    /// The log a read-side request names; NOT_FOUND when it does not exist.
    async fn existing_log(&self, name: &str) -> Result<Arc<Log>, Status> {
        let name = validate::log_name(name)?;
        find_log(&self.store, &self.logs, name, false).await
    }
}

/// Finds a log, opening it (or, with `create`, creating it) on the blocking
/// pool the first time.
async fn find_log(
    store: &Arc<Store>,
    cache: &LogCache,
    name: LogName,
    create: bool,
) -> Result<Arc<Log>, Status> {
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
        Some(log) => {
            cache.insert(name, &log);
            Ok(log)
        }
        None => Err(status::log_not_found(&name)),
    }
}

/// Checks and appends one request; answers once every event is durable.
async fn append_one(
    store: &Arc<Store>,
    cache: &LogCache,
    limits: &Limits,
    request: AppendRequest,
) -> Result<AppendResponse, Status> {
    let AppendRequest {
        log,
        events,
        atomic,
    } = request;
    let name = validate::log_name(&log)?;
    validate::append_events(&events, limits)?;
    let log = find_log(store, cache, name, true).await?;
    let event_ids: Vec<String> = events.iter().map(|event| event.event_id.clone()).collect();
    let inputs: Vec<EventInput> = events.iter().map(EventInput::from_event).collect();
    let receipts = log
        .append(inputs, atomic)
        .await
        .map_err(|error| status::from_log_error(&error))?;
    if receipts.len() != event_ids.len() {
        return Err(Status::internal(format!(
            "the log answered {} receipts for {} events",
            receipts.len(),
            event_ids.len()
        )));
    }
    let receipts = event_ids
        .into_iter()
        .zip(receipts)
        .map(|(event_id, receipt)| Receipt {
            event_id,
            lsn: receipt.lsn.0,
            hash: receipt.hash.0.to_vec(),
            duplicate: receipt.duplicate,
            recorded_at_unix_nanos: receipt.recorded_at_unix_nanos,
        })
        .collect();
    Ok(AppendResponse { receipts })
}

/// A stored record as the wire shows it.
///
/// # Errors
/// DATA_LOSS when the stored event no longer decodes.
pub fn record_to_proto(stored: &StoredRecord) -> Result<Record, Status> {
    let event = stored
        .decode_event()
        .map_err(|error| status::from_log_error(&error))?;
    let StoredBody {
        lsn,
        recorded_at_unix_nanos,
        prev_hash,
        kind,
        batch_last_lsn,
        ..
    } = &stored.record;
    let (kind, compensates) = match kind {
        RecordKind::Event => (ProtoKind::Event, 0),
        RecordKind::Compensation { compensates } => (ProtoKind::Compensation, compensates.0),
    };
    Ok(Record {
        lsn: lsn.0,
        recorded_at_unix_nanos: *recorded_at_unix_nanos,
        prev_hash: prev_hash.0.to_vec(),
        hash: stored.hash.0.to_vec(),
        kind: kind as i32,
        compensates,
        batch_last_lsn: batch_last_lsn.0,
        event: Some(event),
    })
}

/// Reads `[from, to]` from disk (blocking IO) into wire records.
fn read_chunk(log: &Log, from: Lsn, to: Lsn) -> Result<Vec<Record>, Status> {
    let mut records = Vec::new();
    for item in log.read(from, to) {
        let stored = item.map_err(|error| status::from_log_error(&error))?;
        records.push(record_to_proto(&stored)?);
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
        append_one(&self.store, &self.logs, &self.limits, request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendStreamStream = ReceiverStream<Result<AppendResponse, Status>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut requests = request.into_inner();
        let in_flight = self.limits.stream_appends_in_flight_max;
        // Appends run concurrently (up to `in_flight`) so one stream can fill
        // a group commit; their handles queue in request order, so responses
        // go out in order.
        let (pending_sender, mut pending) =
            mpsc::channel::<tokio::task::JoinHandle<Result<AppendResponse, Status>>>(in_flight);
        let (sender, receiver) = mpsc::channel(in_flight);
        let store = Arc::clone(&self.store);
        let limits = Arc::clone(&self.limits);
        let cache = Arc::clone(&self.logs);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
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
                let store = Arc::clone(&store);
                let limits = Arc::clone(&limits);
                let cache = Arc::clone(&cache);
                let handle =
                    tokio::spawn(async move { append_one(&store, &cache, &limits, request).await });
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
        let chunk = self.limits.read_chunk_records;
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
        let chunk = self.limits.read_chunk_records;
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
