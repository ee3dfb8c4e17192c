//! `Append` and `AppendStream`: check a request, hand its events to the
//! log's writer as the bytes the producer sent, answer once they are
//! durable, and count the outcome.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};
use trail_log::{EventInput, Store};
use trail_proto::server_view::AppendRequest;
use trail_proto::v1::{AppendResponse, Receipt};

use super::cache::{find_log, LogCache};
use super::stopped;
use crate::limits::Limits;
use crate::metrics::{LogMetrics, Metrics};
use crate::{status, validate};

/// What the handlers share, and what one append request needs: cloned into
/// each `AppendStream` task.
#[derive(Clone)]
pub(super) struct Appender {
    /// The logs this server serves.
    pub(super) store: Arc<Store>,
    /// Logs already opened: the store may open a log from disk (recovery,
    /// verification) on first access, which must not run on an async worker.
    pub(super) cache: Arc<LogCache>,
    /// Bounds on what clients send.
    pub(super) limits: Arc<Limits>,
    /// Where appends are counted and timed.
    pub(super) metrics: Metrics,
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
/// The signal also says whether the one before was queued at all: once a
/// request of a stream fails before reaching the log, no request after it
/// enters the log (the client sees an error for the failed one and nothing
/// after it, so nothing after it may land unseen).
struct QueueTurn {
    /// `true` once the previous request is in the log's queue; `false` (or
    /// dropped) when it, or one before it, never will be.
    previous_queued: oneshot::Receiver<bool>,
    queued: oneshot::Sender<bool>,
}

impl QueueTurn {
    /// Gives the turn up without queueing anything (the append failed
    /// before it got that far): no later request of the stream may queue.
    fn refuse(self) {
        let _ = self.queued.send(false);
    }
}

/// Hands out [`QueueTurn`]s in request order.
struct QueueTurns {
    previous_queued: oneshot::Receiver<bool>,
}

impl QueueTurns {
    /// A chain whose first turn may go at once.
    fn new() -> QueueTurns {
        let (queued, previous_queued) = oneshot::channel();
        let _ = queued.send(true);
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
    /// Serves one unary `Append`.
    pub(super) async fn unary(&self, request: AppendRequest) -> Result<AppendResponse, Status> {
        self.append(request, None).await
    }

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
            turn.refuse();
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
        if let Some(damaged) = self.cache.damaged(&name) {
            let status = damaged.status(&name);
            *metrics = Some(damaged.metrics);
            return Err(status);
        }
        let cached = self.cache.get_in_service(&name, &self.metrics);
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
                // Named by resource, so a compensation planned as of an
                // LSN is refused if this lands after it (compensate.rs).
                EventInput::new(event.event_id, bytes).about(&event.resource)
            })
            .collect();
        let prepared = open
            .log
            .prepare(inputs, atomic)
            .map_err(|error| status::from_log_error(&error))?;
        if let Some(turn) = turn.as_mut() {
            // A sender dropped without an answer is a failed task: treat it
            // like a refusal rather than let this request land after a gap.
            if !(&mut turn.previous_queued).await.unwrap_or(false) {
                return Err(Status::aborted(
                    "not appended: a request before it in the stream failed",
                ));
            }
        }
        let pending = open.log.submit(prepared).await;
        if let Some(turn) = turn.take() {
            let _ = turn.queued.send(true);
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

/// One entry of a stream's response queue, in request order.
enum Pending {
    /// An append that is running or done.
    Append(tokio::task::JoinHandle<Result<AppendResponse, Status>>),
    /// The stream's last entry: a request that could not be read (it did
    /// not decode, was over `limits.request_bytes_max`, or the transport
    /// failed), or the server stopped reading because it is shutting down.
    Failed(Status),
}

/// `status` with the 1-based position of the request it is about, so a
/// client of a long stream knows which request failed:
/// `request 3 of the stream: events[0].actor: empty`.
fn at_position(position: u64, status: &Status) -> Status {
    Status::new(
        status.code(),
        format!("request {position} of the stream: {}", status.message()),
    )
}

/// Serves one `AppendStream`: reads `requests`, appends them concurrently
/// (up to `limits.stream_appends_in_flight_max`), and answers in request
/// order on the returned stream. The stream ends with the first failure:
/// every request before it has its response, the failed request's error
/// names its position, and no request after it is appended (unless the
/// failure came from the log's writer after later requests were already
/// queued: see `docs/OPERATIONS.md`, "AppendStream").
pub(super) fn stream(
    appender: Appender,
    mut shutdown: watch::Receiver<bool>,
    mut requests: Streaming<AppendRequest>,
) -> ReceiverStream<Result<AppendResponse, Status>> {
    let in_flight = appender.limits.stream_appends_in_flight_max;
    // Appends run concurrently (up to `in_flight`) so one stream can fill
    // a group commit and its checking and hashing use every core; they
    // enter the log's queue in request order (so their LSNs follow the
    // stream's order), and their handles queue in request order, so
    // responses go out in order.
    let (pending_sender, mut pending) = mpsc::channel::<Pending>(in_flight);
    let (sender, receiver) = mpsc::channel(in_flight);
    tokio::spawn(async move {
        let mut turns = QueueTurns::new();
        let mut position = 0u64;
        loop {
            let next = tokio::select! {
                next = requests.next() => next,
                () = stopped(&mut shutdown) => Some(Err(Status::unavailable(
                    "not read: the server is shutting down",
                ))),
                // The answer stream ended (an earlier request failed, or the
                // client went away): read no more.
                () = pending_sender.closed() => break,
            };
            position += 1;
            let entry = match next {
                None => break,
                Some(Ok(request)) => {
                    let appender = appender.clone();
                    let turn = turns.next();
                    Pending::Append(tokio::spawn(async move {
                        appender
                            .append(request, Some(turn))
                            .await
                            .map_err(|status| at_position(position, &status))
                    }))
                }
                // Reported, never swallowed: a stream that ends early must
                // not look like one the client finished.
                Some(Err(status)) => {
                    tracing::debug!(%status, position, "append stream: a request could not be read");
                    Pending::Failed(at_position(position, &status))
                }
            };
            let last = matches!(entry, Pending::Failed(_));
            if pending_sender.send(entry).await.is_err() || last {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(entry) = pending.recv().await {
            let response = match entry {
                Pending::Append(handle) => handle.await.unwrap_or_else(|error| {
                    Err(Status::internal(format!("append task failed: {error}")))
                }),
                Pending::Failed(status) => Err(status),
            };
            let failed = response.is_err();
            if sender.send(response).await.is_err() || failed {
                // The stream ends with the first error. Requests after it
                // that were already read stop at their turn and are not
                // appended; a retry with the same event ids is safe.
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}
