//! A real S3 server on loopback for the archive's tests: `s3s` + `s3s-fs`
//! serving a temporary directory, with SigV4 signatures checked (not a mock
//! of the object_store trait). It can be stopped and started again on the
//! same port, to test an outage.
#![allow(dead_code)]

pub mod moto;
pub mod served;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use trail_archive::{ArchiveTarget, TargetConfig};
use trail_log::{EventInput, LogName, LogOptions, Store};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const ACCESS_KEY: &str = "trail-test-key";
pub const SECRET_KEY: &str = "trail-test-secret";
pub const BUCKET: &str = "archive";

/// A running s3s-fs server.
pub struct S3Server {
    pub address: SocketAddr,
    pub root: PathBuf,
    connections: Option<JoinSet<()>>,
}

impl S3Server {
    /// Serves `root` (its subdirectory `archive` is the bucket) on a free
    /// loopback port.
    pub async fn start(root: &Path) -> std::io::Result<S3Server> {
        std::fs::create_dir_all(root.join(BUCKET))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        S3Server::serve(root, listener)
    }

    fn serve(root: &Path, listener: TcpListener) -> std::io::Result<S3Server> {
        let address = listener.local_addr()?;
        let file_system = s3s_fs::FileSystem::new(root)
            .map_err(|error| std::io::Error::other(format!("{error:?}")))?;
        let mut builder = S3ServiceBuilder::new(file_system);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let mut connections = JoinSet::new();
        connections.spawn(async move {
            let mut tasks = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tasks.spawn(async move {
                    let connection = ConnectionBuilder::new(TokioExecutor::new());
                    let _ = connection
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(S3Server {
            address,
            root: root.to_owned(),
            connections: Some(connections),
        })
    }

    /// Stops serving: the listener and every open connection go away.
    pub async fn stop(&mut self) {
        if let Some(mut connections) = self.connections.take() {
            connections.shutdown().await;
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.address).await?;
        let server = S3Server::serve(&self.root, listener)?;
        self.connections = server.connections;
        Ok(())
    }

    /// Where the bucket's objects are on disk (to alter them behind the
    /// store's back).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    pub fn config(&self, prefix: &str) -> TargetConfig {
        TargetConfig {
            url: format!("s3://{BUCKET}/{prefix}"),
            endpoint: format!("http://{}", self.address),
            region: "us-east-1".into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
        }
    }

    pub fn target(&self, prefix: &str) -> ArchiveTarget {
        ArchiveTarget::open(&self.config(prefix)).expect("target opens")
    }
}

/// The target settings for `bucket`/`prefix` on a moto server (moto takes
/// any keys).
pub fn moto_config(moto: &moto::Moto, bucket: &str, prefix: &str) -> TargetConfig {
    TargetConfig {
        url: format!("s3://{bucket}/{prefix}"),
        endpoint: moto.endpoint(),
        region: "us-east-1".into(),
        access_key_id: "moto".into(),
        secret_access_key: "moto".into(),
    }
}

/// The target `bucket`/`prefix` on a moto server.
pub fn moto_target(moto: &moto::Moto, bucket: &str, prefix: &str) -> ArchiveTarget {
    ArchiveTarget::open(&moto_config(moto, bucket, prefix)).expect("target opens")
}

pub fn log_name() -> LogName {
    LogName::new("audit").expect("valid name")
}

/// Small segments, so a few hundred events cross several.
pub fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 64 * 1024,
        group_bytes_max: 16 * 1024,
        append: trail_log::AppendLimits {
            event_bytes_max: 4 * 1024,
            ..trail_log::AppendLimits::default()
        },
        ..LogOptions::default()
    }
}

/// A log of `events` events of about 300 bytes each.
/// Blocking work (appends, close) from a multi-thread test runtime.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

pub fn write_log(
    root: &Path,
    events: usize,
) -> Result<(Store, Arc<trail_log::Log>), trail_log::LogError> {
    blocking(|| write_log_now(root, events))
}

fn write_log_now(
    root: &Path,
    events: usize,
) -> Result<(Store, Arc<trail_log::Log>), trail_log::LogError> {
    let store = Store::open(root, small_segments())?;
    let log = store.get_or_create(&log_name())?;
    for position in 0..events {
        let body = format!(
            "{{\"actor\":\"user-{}\",\"action\":\"login\",\"resource\":\"account/{position}\",\"padding\":\"{}\"}}",
            position % 17,
            "x".repeat(200)
        );
        log.append_blocking(
            vec![EventInput::new(format!("e-{position}"), body.into_bytes())],
            false,
        )?;
    }
    Ok((store, log))
}

/// Archives every sealed segment of `log` in order.
pub async fn archive_sealed(
    target: &ArchiveTarget,
    log: &trail_log::Log,
) -> Result<Vec<trail_archive::Manifest>, trail_archive::ArchiveError> {
    let name = log.name().clone();
    let mut previous: Option<trail_archive::Manifest> = None;
    let mut manifests = Vec::new();
    for info in log.segments().into_iter().filter(|info| info.sealed) {
        let prepared = trail_archive::prepare_segment(
            &name,
            &info,
            previous.as_ref(),
            trail_archive::Encoding::default(),
            1,
        )?;
        let manifest = trail_archive::upload_segment(target, &name, prepared).await?;
        previous = Some(manifest.clone());
        manifests.push(manifest);
    }
    Ok(manifests)
}
