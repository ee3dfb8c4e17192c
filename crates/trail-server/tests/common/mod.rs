//! A real server on a free 127.0.0.1 port for the integration tests: start
//! it over a store, stop it (bounded wait); and reading its `/metrics`.
#![allow(dead_code)] // each test binary uses a part

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use trail_log::{Durability, LogOptions, Store};
use trail_server::{Config, Limits, Metrics, ServerError};

pub type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// How long a stopping server may take before the test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The tests' configuration: these limits, a short shutdown grace.
/// A small valid event: alice logged in, with `id` as its event id.
pub fn login_event(id: &str) -> trail_proto::v1::Event {
    trail_proto::v1::Event {
        event_id: id.to_owned(),
        actor: "alice".to_owned(),
        action: "login".to_owned(),
        resource: "user/alice".to_owned(),
        outcome: trail_proto::v1::Outcome::Success as i32,
        ..trail_proto::v1::Event::default()
    }
}

pub fn test_config(limits: Limits) -> Config {
    Config {
        limits,
        shutdown_grace_ms: 5_000,
        ..Config::default()
    }
}

/// The configuration's log options in `Sync` mode (whatever the default).
pub fn sync_options(config: &Config) -> LogOptions {
    LogOptions {
        durability: Durability::Sync,
        ..config.log_options()
    }
}

/// A running server.
pub struct Served {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::result::Result<(), ServerError>>,
}

impl Served {
    /// Serves `store` on a free loopback port.
    pub async fn start(config: Config, store: Arc<Store>, metrics: Metrics) -> Result<Served> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            trail_server::serve_with_metrics(&config, store, listener, metrics, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Served {
            address,
            stop: Some(stop),
            task,
        })
    }

    /// Shuts the server down and waits for it; fails if it returned an error
    /// or took longer than [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> Result {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STOP_TIMEOUT, self.task).await???;
        Ok(())
    }
}

/// A server with default limits over a store in a directory, and a client:
/// what the derived-state and compensation tests start and restart.
pub struct StoreServer {
    pub served: Served,
    pub store: Arc<Store>,
    pub client: trail_proto::v1::log_client::LogClient<tonic::transport::Channel>,
    /// `http://127.0.0.1:PORT`
    pub address: String,
}

impl StoreServer {
    /// Opens (or reopens) the store in `dir` and serves it.
    pub async fn start(dir: &std::path::Path) -> Result<StoreServer> {
        let config = test_config(Limits::default());
        let store = Arc::new(Store::open(dir, sync_options(&config))?);
        let served = Served::start(config, Arc::clone(&store), Metrics::disabled()).await?;
        let address = served.address.clone();
        let client = trail_proto::v1::log_client::LogClient::connect(address.clone()).await?;
        Ok(StoreServer {
            served,
            store,
            client,
            address,
        })
    }

    /// Stops the server and closes the store.
    pub async fn stop(self) -> Result {
        drop(self.client);
        self.served.stop().await?;
        self.store.close()?;
        Ok(())
    }
}

/// `GET /metrics` over a plain TCP connection; the response body.
pub async fn scrape(address: std::net::SocketAddr) -> Result<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address)).await??;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await??;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("no end of headers in the response")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_owned())
}

/// Scrapes `/metrics` until `done` accepts the body (the server samples
/// some series once a second), for at most 10 s; that body, or an error
/// with the last one.
pub async fn scrape_until(
    address: std::net::SocketAddr,
    mut done: impl FnMut(&str) -> bool,
) -> Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(address).await?;
        if done(&body) {
            return Ok(body);
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("the metrics never showed what was waited for: {body}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `name{labels}` in a text exposition, whatever
/// order the labels come in.
pub fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
        if series_name != name {
            return None;
        }
        let rest = rest.strip_suffix('}')?;
        let mut found: Vec<(&str, &str)> = rest
            .split(',')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key, value.trim_matches('"')))
            })
            .collect();
        found.sort_unstable();
        let mut wanted = labels.to_vec();
        wanted.sort_unstable();
        (found == wanted).then(|| value.parse().ok()).flatten()
    })
}
