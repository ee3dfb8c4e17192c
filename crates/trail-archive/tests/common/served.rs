//! `traild`'s service in the test process, on a loopback port of its own,
//! over a store the test opened: started with a configuration, stopped
//! (gracefully, bounded in time) and the store closed.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;

use trail_log::Store;
use trail_proto::v1::admin_client::AdminClient;
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{ArchiveStatusRequest, ArchiveStatusResponse, ReadRequest, Record};
use trail_server::{Config, Metrics};

use super::{blocking, small_segments};

/// How long connecting and stopping may take.
const SERVED_WAIT: Duration = Duration::from_secs(60);

/// A running server over a store, with a client for each service.
pub struct Served {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), trail_server::ServerError>>,
    pub store: Arc<Store>,
    pub admin: AdminClient<tonic::transport::Channel>,
    pub client: LogClient<tonic::transport::Channel>,
}

impl Served {
    /// Serves the store at `data` (opened with [`small_segments`]).
    pub async fn start(data: &Path, config: Config) -> Result<Served, Box<dyn Error>> {
        let store = blocking(|| Store::open(data, small_segments()))?;
        Served::start_with(store, config).await
    }

    /// Serves `store` with `config` (checked first, as `traild` does).
    pub async fn start_with(store: Store, config: Config) -> Result<Served, Box<dyn Error>> {
        config.validate()?;
        let store = Arc::new(store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
        let served_store = Arc::clone(&store);
        let task = tokio::spawn(async move {
            trail_server::serve_with_metrics(
                &config,
                served_store,
                listener,
                Metrics::disabled(),
                async {
                    let _ = stopping.await;
                },
            )
            .await
        });
        let channel = tonic::transport::Endpoint::from_shared(address)?
            .connect_timeout(SERVED_WAIT)
            .connect()
            .await?;
        Ok(Served {
            stop,
            task,
            store,
            admin: AdminClient::new(channel.clone()),
            client: LogClient::new(channel),
        })
    }

    /// Stops the server (its clients first) and closes the store.
    pub async fn stop(self) -> Result<(), Box<dyn Error>> {
        let Served {
            stop,
            task,
            store,
            admin,
            client,
        } = self;
        drop((admin, client));
        let _ = stop.send(());
        tokio::time::timeout(SERVED_WAIT, task).await???;
        blocking(|| store.close())?;
        Ok(())
    }

    /// Log `audit`'s records `from..=to` through `Read`, each within
    /// [`SERVED_WAIT`] of the one before.
    pub async fn read(&mut self, from: u64, to: u64) -> Result<Vec<Record>, tonic::Status> {
        let mut stream = self
            .client
            .read(ReadRequest {
                log: "audit".into(),
                from_lsn: from,
                to_lsn: to,
            })
            .await?
            .into_inner();
        let mut records = Vec::new();
        loop {
            let next = tokio::time::timeout(SERVED_WAIT, stream.next())
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("read stalled"))?;
            match next {
                Some(record) => records.push(record?),
                None => return Ok(records),
            }
        }
    }

    /// Log `audit`'s archive status.
    pub async fn archive_status(&mut self) -> Result<ArchiveStatusResponse, tonic::Status> {
        Ok(self
            .admin
            .archive_status(ArchiveStatusRequest {
                log: "audit".into(),
            })
            .await?
            .into_inner())
    }
}
