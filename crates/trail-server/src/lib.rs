//! Trail's gRPC server: the `trail.v1.Log` service over a `trail_log::Store`,
//! with gRPC health and reflection, request limits, Prometheus metrics,
//! configuration and graceful shutdown. The `traild` binary only parses arguments and calls
//! [`run`].
//!
//! ```no_run
//! # async fn example() -> Result<(), trail_server::ServerError> {
//! let config = trail_server::Config::default();
//! trail_server::run(config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod compactor;
pub mod config;
pub mod content;
pub mod metrics;
pub mod request_limit;
pub mod service;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use trail_log::{ErrorKind, LogError, LogName, Store};
use trail_proto::server_view::log_server::LogServer;
use trail_proto::v1::admin_server::AdminServer;

pub use config::{Config, DurabilityMode};
// Limits and request checks live in trail-request (fuzzed without the
// server's stacks); the server's modules reach them by their old paths.
pub use metrics::{Metrics, MetricsEndpoint};
pub use service::LogService;
pub use trail_request::{limits, validate, Limits};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Opening or closing the store failed.
    #[error("store")]
    Store(#[from] LogError),
    /// Binding the listen address failed.
    #[error("cannot listen on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("grpc transport failed")]
    Transport(#[from] tonic::transport::Error),
    /// The metrics exporter could not start.
    #[error("metrics: {0}")]
    Metrics(String),
    /// Building the reflection service failed.
    #[error("grpc reflection failed")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl From<trail_request::LimitsError> for ServerError {
    fn from(error: trail_request::LimitsError) -> ServerError {
        ServerError::Config(error.0)
    }
}

/// Serves the Log service, health and reflection on `listener` until
/// `shutdown` resolves; then stops accepting, tells streams to end, and waits
/// (up to the configured grace) for in-flight requests. It does not close the
/// store: the caller owns it. Records no metrics (see
/// [`serve_with_metrics`]); `config.metrics_listen` is not used.
///
/// # Errors
/// [`ServerError`] when the transport fails.
pub async fn serve(
    config: &Config,
    store: Arc<Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with_metrics(config, store, listener, Metrics::disabled(), shutdown).await
}

/// [`serve`], recording into `metrics` (started with [`Metrics::start`];
/// the caller owns its endpoint) and sampling the logs' writer counters
/// every [`metrics::SAMPLE_INTERVAL`]. Opens every log in the store first
/// ([`open_logs`]); damaged ones are served as out of service.
///
/// # Errors
/// [`ServerError`] when the transport fails, or a log fails to open for a
/// reason other than damage.
pub async fn serve_with_metrics(
    config: &Config,
    store: Arc<Store>,
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let opener = Arc::clone(&store);
    let damaged = tokio::task::spawn_blocking(move || open_logs(&opener)).await??;
    serve_opened(config, store, damaged, listener, metrics, shutdown).await
}

/// Opens (recovers) every log in `store`, so recovery, and damage, show
/// before anything is served. A log whose stored data is damaged (the
/// engine's DATA_LOSS kind: corruption found while opening) does not stop
/// the others: it is returned with its error, to be served out of service.
/// Blocking IO: call it off the async workers.
///
/// # Errors
/// Listing the store failed, or a log failed to open for another reason
/// (an IO error, which is more likely the machine's than the log's).
pub fn open_logs(store: &Store) -> Result<Vec<(LogName, LogError)>, LogError> {
    let mut damaged = Vec::new();
    for name in store.list()? {
        match store.get(&name) {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::DataLoss => damaged.push((name, error)),
            Err(error) => return Err(error),
        }
    }
    Ok(damaged)
}

/// [`serve_with_metrics`] over logs [`open_logs`] has opened, `damaged`
/// being what it found damaged.
async fn serve_opened(
    config: &Config,
    store: Arc<Store>,
    damaged: Vec<(LogName, LogError)>,
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (stopping_sender, stopping) = watch::channel(false);
    let limits = config.limits.clone();
    let sampling = metrics.enabled();
    let store_for_archive = Arc::clone(&store);
    let metrics_for_archive = metrics.clone();
    let mut service = LogService::with_metrics(store, limits.clone(), stopping.clone(), metrics);
    if let Some(options) = config.derived.options() {
        service = service.with_derived(options);
    }
    for (name, error) in &damaged {
        service.quarantine(name, error);
    }
    // Every log's derived stores catch up from the start, in the
    // background: serving does not wait for them.
    let opener = service.clone();
    let opening = tokio::spawn(async move { opener.open_all_logs().await });
    let sampler = sampling.then(|| {
        let service = service.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(metrics::SAMPLE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => service.sample_metrics(),
                    _ = stopping.wait_for(|stopping| *stopping) => break,
                }
            }
        })
    });
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<LogServer<LogService>>().await;
    // Both reflection versions: grpcurl and Postman speak v1, but Python's
    // grpcio-reflection and older grpcurl/grpcui builds ask v1alpha only.
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    // request_limit refuses a request over request_bytes_max with the
    // status every limit uses; tonic's own check (OUT_OF_RANGE) stays
    // behind it at the same size as a second guard.
    // The compactor archives sealed segments beside serving; off unless
    // [archive] url is set.
    let compactor = compactor::Compactor::new(
        &config.archive,
        Arc::clone(&store_for_archive),
        metrics_for_archive.clone(),
    )?;
    // Reads of LSNs the compactor removed locally go to the same target.
    let service = match &compactor {
        Some(compactor) => service.with_archive(service::ArchiveReaders::new(
            compactor.target().clone(),
            config.archive.read_cache_bytes_max,
            metrics_for_archive,
        )),
        None => service,
    };
    let archiving = compactor
        .clone()
        .map(|compactor| tokio::spawn(compactor.run(stopping.clone())));
    let admin_server =
        AdminServer::new(service::AdminService::new(service.clone()).with_compactor(compactor));
    let log_server = request_limit::RequestLimit::new(
        LogServer::new(service)
            .max_decoding_message_size(limits.request_bytes_max)
            .max_encoding_message_size(limits.request_bytes_max.max(limits.event_bytes_max * 2)),
        limits.request_bytes_max,
    );

    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        health_reporter
            .set_not_serving::<LogServer<LogService>>()
            .await;
        let _ = stopping_sender.send(true);
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.streams_per_connection_max)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(log_server)
        .add_service(admin_server)
        .serve_with_incoming_shutdown(incoming, signal);

    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let mut stopped = stopping;
    let deadline = async move {
        let _ = stopped.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!(grace_ms = config.shutdown_grace_ms, "in-flight requests did not finish in time; closing anyway"),
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    if let Some(archiving) = archiving {
        // A round cut short leaves at most an object without its manifest,
        // which the next start finds and keeps (FORMAT.md §13.4).
        archiving.abort();
    }
    opening.abort();
    Ok(())
}

/// What gRPC reflection describes: Trail's contract, health, and both
/// reflection services (so either version lists both).
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(trail_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// Binds the configured address, printing `listening on ADDR` on stdout (so
/// scripts and tests can use port 0), then, with metrics on, serves them on
/// `metrics_listen` and prints `metrics on ADDR` as the second line; opens the
/// store, serves until `shutdown`, then closes the store: queues drained,
/// fsynced, writers stopped.
///
/// # Errors
/// [`ServerError`] for a bad configuration, a store that does not open, an
/// address that cannot be bound, or a transport failure.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let options = config.log_options();
    let root = config.data_dir.clone();
    std::fs::create_dir_all(&root).map_err(|error| {
        ServerError::Config(format!(
            "cannot create data_dir {}: {error}",
            root.display()
        ))
    })?;
    let store = tokio::task::spawn_blocking(move || Store::open(&root, options)).await??;
    // Open every log now, so recovery (and damage) shows before serving.
    let store = Arc::new(store);
    let opener = Arc::clone(&store);
    let damaged = tokio::task::spawn_blocking(move || open_logs(&opener)).await??;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                address: config.listen,
                source,
            })?;
    let address = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            address: config.listen,
            source,
        })?;
    let (metrics, endpoint) = match config.metrics_listen {
        Some(metrics_address) => {
            let (metrics, endpoint) = Metrics::start(metrics_address)?;
            (metrics, Some(endpoint))
        }
        None => (Metrics::disabled(), None),
    };
    let metrics_address = endpoint.as_ref().map(MetricsEndpoint::address);
    tracing::info!(%address, metrics = ?metrics_address, data_dir = %config.data_dir.display(), durability = ?config.log.durability, "traild serving");
    println!("listening on {address}");
    if let Some(metrics_address) = metrics_address {
        println!("metrics on {metrics_address}");
    }

    let served = serve_opened(
        &config,
        Arc::clone(&store),
        damaged,
        listener,
        metrics,
        shutdown,
    )
    .await;
    drop(endpoint);
    let closer = Arc::clone(&store);
    let closed = tokio::task::spawn_blocking(move || closer.close()).await?;
    served?;
    closed?;
    tracing::info!("store closed; bye");
    Ok(())
}
