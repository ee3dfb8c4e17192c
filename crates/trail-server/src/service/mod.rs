//! The `trail.v1.Log` gRPC service. This module is the dispatcher: it holds
//! what every handler shares and implements the tonic trait by handing each
//! RPC to its own module (mini-redis's `cmd/` layout). Handlers are thin:
//! they check the request, find the log, call the engine and translate its
//! answer.
//!
//! - `append.rs`: `Append` and `AppendStream`
//! - `read.rs`: `Read`, and the follower-to-stream loop `Subscribe` shares
//! - `subscribe.rs`: `Subscribe`
//! - `verify.rs`: `Verify`
//! - `head.rs`: `Head`
//! - `query.rs`: `Query`, and the bounded wait on a derived store
//! - `state.rs`: `GetState` and `History`
//! - `compensate.rs`: `Compensate` and `Rollback`
//! - `admin.rs`: the `trail.v1.Admin` service (`Snapshot`)
//! - `cache.rs`: open logs (and their derived stores) by name, and the
//!   read-through readers of archived records

mod admin;
mod append;
mod cache;
mod compensate;
mod head;
mod query;
mod read;
mod state;
mod subscribe;
mod verify;

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use trail_index::DerivedOptions;
use trail_log::{Log, LogError, LogName, Store};
use trail_proto::server_view::log_server::Log as LogRpc;
use trail_proto::server_view::{AppendRequest, CompensateResponse, QueryResponse, Record};
use trail_proto::v1::{
    AppendResponse, CompensateRequest, GetStateRequest, GetStateResponse, HeadRequest,
    HeadResponse, HistoryRequest, HistoryResponse, QueryRequest, ReadRequest, RollbackRequest,
    SubscribeRequest, VerifyRequest, VerifyResponse,
};

pub use admin::AdminService;
pub use cache::{ArchiveReaders, ARCHIVE_READ_LOGS_MAX};
pub use compensate::{compensation_event_id, RESERVED_EVENT_ID_PREFIX};
pub use read::record_to_proto;

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::validate;
use append::Appender;
use cache::LogCache;

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
    /// Disk reads of `Read`/`Subscribe` streams in flight, server wide
    /// (`limits.disk_reads_in_flight_max`): each holds a blocking thread.
    disk_reads: Arc<Semaphore>,
    /// Reads of LSNs before a log's first local one, when archiving is on.
    archive: Option<Arc<ArchiveReaders>>,
    /// The log a `Subscribe` stream reads, resolved before the handler
    /// runs (it hands the stream only a follower), so its catch-up can
    /// read archived records; `None` outside such a stream.
    stream_log: Option<Arc<Log>>,
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
            disk_reads: Arc::new(Semaphore::new(limits.disk_reads_in_flight_max)),
            shared: Appender {
                store,
                cache: Arc::new(LogCache::new(None)),
                limits: Arc::new(limits),
                metrics,
            },
            shutdown,
            archive: None,
            stream_log: None,
        }
    }

    /// Serves `Read` and `Subscribe` of archived LSNs through `readers`.
    /// Called before the service serves.
    #[must_use]
    pub fn with_archive(mut self, readers: ArchiveReaders) -> LogService {
        self.archive = Some(Arc::new(readers));
        self
    }

    /// Keeps each log's derived stores (query index, resource state)
    /// following it, with `options`. Called before the service serves.
    #[must_use]
    pub fn with_derived(mut self, options: DerivedOptions) -> LogService {
        self.shared.cache = Arc::new(LogCache::new(Some(options)));
        self
    }

    /// Opens every log of the store (and starts its derived stores), so
    /// indexes catch up at start, not at a log's first request. A log that
    /// fails to open is quarantined as a request would find it.
    pub async fn open_all_logs(&self) {
        let store = Arc::clone(&self.shared.store);
        let names = match tokio::task::spawn_blocking(move || store.list()).await {
            Ok(Ok(names)) => names,
            Ok(Err(error)) => {
                tracing::error!(%error, "listing the logs failed");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "listing the logs failed");
                return;
            }
        };
        for name in names {
            let _ = self.open_log(name).await;
        }
    }

    /// Copies every open log's writer counters and queue depth into the
    /// metrics (cheap: atomics and a lock per log, no IO).
    pub fn sample_metrics(&self) {
        for open in self.shared.cache.all() {
            open.metrics.sample(&open.log);
            if let cache::Derived::Running(derived) = &open.derived {
                open.metrics.sample_derived(
                    open.log.head().lsn.0,
                    derived.query_progress().borrow().lsn(),
                    derived.state_progress().borrow().lsn(),
                );
            }
            // Damage found in the background takes the log out of service
            // now, not at its next request.
            let _ = self
                .shared
                .cache
                .get_in_service(open.log.name(), &self.shared.metrics);
        }
    }

    /// Takes `name` out of service because opening it failed with `error`
    /// (damaged data): requests to it answer DATA_LOSS with `error`'s text,
    /// `Head` reports it, `trail_log_damaged{log}` is 1, and an error line
    /// goes to the server's log.
    pub fn quarantine(&self, name: &LogName, error: &LogError) {
        self.shared
            .cache
            .quarantine(name, error, &self.shared.metrics);
    }

    /// The log a read-side request names; NOT_FOUND when it does not exist.
    async fn existing_log(&self, name: &str) -> Result<Arc<Log>, Status> {
        Ok(self.existing_open_log(name).await?.log)
    }

    /// As [`LogService::existing_log`], with the log's derived stores.
    async fn existing_open_log(&self, name: &str) -> Result<cache::OpenLog, Status> {
        self.open_log(validate::log_name(name)?).await
    }

    /// This service, knowing the log a stream over `name` reads (when
    /// archiving is on and the log exists; the handler reports a missing
    /// one itself).
    async fn for_stream_of(&self, name: &str) -> LogService {
        let mut service = self.clone();
        if self.archive.is_some() {
            service.stream_log = self.existing_log(name).await.ok();
        }
        service
    }

    async fn open_log(&self, name: LogName) -> Result<cache::OpenLog, Status> {
        let shared = &self.shared;
        cache::find_log(&shared.store, &shared.cache, &shared.metrics, name, false).await
    }
}

/// Resolves once the server starts shutting down (never holds the watch's
/// lock across an await).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// The stream `Read` and `Subscribe` answer with.
type RecordStream = ReceiverStream<Result<Record, Status>>;

#[tonic::async_trait]
impl LogRpc for LogService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        self.shared
            .unary(request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendStreamStream = ReceiverStream<Result<AppendResponse, Status>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        Ok(Response::new(append::stream(
            self.shared.clone(),
            self.shutdown.clone(),
            request.into_inner(),
        )))
    }

    type ReadStream = RecordStream;

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<RecordStream>, Status> {
        read::read(self, request.into_inner())
            .await
            .map(Response::new)
    }

    type SubscribeStream = RecordStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<RecordStream>, Status> {
        let service = self.for_stream_of(&request.get_ref().log).await;
        subscribe::subscribe(&service, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        verify::verify(self, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn head(&self, request: Request<HeadRequest>) -> Result<Response<HeadResponse>, Status> {
        head::head(self, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        query::query(self, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<GetStateResponse>, Status> {
        state::get_state(self, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        state::history(self, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn compensate(
        &self,
        request: Request<CompensateRequest>,
    ) -> Result<Response<CompensateResponse>, Status> {
        compensate::compensate(self, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<CompensateResponse>, Status> {
        compensate::rollback(self, request.into_inner())
            .await
            .map(Response::new)
    }
}
