//! An outage *during* an upload (issue "Tiered storage", part 2): the S3
//! server goes away in the middle of a segment object's put, with part of
//! its body sent. A cutting proxy in front of the real S3 server makes that
//! happen at the same place every run: it forwards traffic until one
//! request has sent more than a threshold (only a segment's put is that
//! large), then drops every connection and stops listening, as a server
//! that dies does. The round fails as transient, nothing local is removed,
//! no manifest names the cut object, appends go on; when the server is back
//! the archive resumes from where it was and the bucket verifies as one
//! chain with every segment once.
//!
//! The same for a segment above the multipart threshold (S3 multipart
//! upload, parts of 5 MiB): it archives, verifies and restores; an upload
//! cut after its first part retries, drops nothing locally, leaves no
//! object until it completes, and ends with exactly one object per segment.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{blocking, log_name, write_log, S3Server, TestResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trail_archive::{
    restore_log, verify_archive, ArchiveTarget, Archiver, ArchiverConfig, Compression, Encoding,
    Multipart, MULTIPART_PART_BYTES_MIN,
};
use trail_log::{EventInput, Log, LogOptions, Lsn, SegmentInfo, Store};

/// Connections one proxy run accepts at most (the archiver pools a few).
const CONNECTIONS_MAX: usize = 256;
/// Reads one direction of one connection makes at most.
const READS_MAX: usize = 100_000;

/// A TCP proxy to the S3 server that can die mid-request.
struct CuttingProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    /// Turns true when the proxy cut everything.
    down: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
}

impl CuttingProxy {
    /// Proxies to `upstream`; the first request to send more than
    /// `cut_request_bytes` (0: never) is cut half way and the proxy dies.
    async fn start(upstream: SocketAddr, cut_request_bytes: u64) -> std::io::Result<CuttingProxy> {
        CuttingProxy::start_letting_through(upstream, cut_request_bytes, 0).await
    }

    /// As [`CuttingProxy::start`], letting the first `let_through` requests
    /// of more than `cut_request_bytes` pass (the parts of a multipart
    /// upload before the one cut).
    async fn start_letting_through(
        upstream: SocketAddr,
        cut_request_bytes: u64,
        let_through: u64,
    ) -> std::io::Result<CuttingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        CuttingProxy::serve(listener, upstream, cut_request_bytes, let_through)
    }

    fn serve(
        listener: TcpListener,
        upstream: SocketAddr,
        cut_request_bytes: u64,
        let_through: u64,
    ) -> std::io::Result<CuttingProxy> {
        let address = listener.local_addr()?;
        let (cut, down) = watch::channel(false);
        let cut = Arc::new(cut);
        let passes = Arc::new(AtomicU64::new(let_through));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            let mut watching = cut.subscribe();
            for _ in 0..CONNECTIONS_MAX {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = watching.wait_for(|down| *down) => break,
                };
                let Ok((client, _)) = accepted else { break };
                let cut = Arc::clone(&cut);
                connections.spawn(relay(
                    client,
                    upstream,
                    cut_request_bytes,
                    Arc::clone(&passes),
                    cut,
                ));
            }
            // Dying: the listener and every connection go at once.
            let _ = watching.wait_for(|down| *down).await;
            connections.shutdown().await;
        });
        Ok(CuttingProxy {
            address,
            upstream,
            down,
            task: Some(task),
        })
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Waits until the cut has closed everything.
    async fn wait_down(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Serves again on the same port, cutting nothing.
    async fn restart(&mut self) -> std::io::Result<()> {
        self.wait_down().await;
        let listener = TcpListener::bind(self.address).await?;
        let restarted = CuttingProxy::serve(listener, self.upstream, 0, 0)?;
        *self = restarted;
        Ok(())
    }
}

/// Relays one connection both ways. Bytes the client sent since the
/// server last answered are one request; past `cut_request_bytes` the
/// relay forwards half of the chunk and cuts everything, unless `passes`
/// still lets one through (taking one).
async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    cut_request_bytes: u64,
    passes: Arc<AtomicU64>,
    cut: Arc<watch::Sender<bool>>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let request_bytes = Arc::new(AtomicU64::new(0));
    let cutting = Arc::new(AtomicBool::new(false));
    // This request was let through: it is not cut later either.
    let passed = Arc::new(AtomicBool::new(false));
    let sent = Arc::clone(&request_bytes);
    let upward = async {
        let mut buffer = vec![0u8; 16 * 1024];
        for _ in 0..READS_MAX {
            let Ok(read) = client_read.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            let total = sent.fetch_add(read as u64, Ordering::SeqCst) + read as u64;
            let large = cut_request_bytes > 0 && total > cut_request_bytes;
            if large
                && !passed.load(Ordering::SeqCst)
                && passes
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok()
            {
                passed.store(true, Ordering::SeqCst);
            }
            if large && !passed.load(Ordering::SeqCst) {
                let _ = server_write.write_all(&buffer[..read / 2]).await;
                cutting.store(true, Ordering::SeqCst);
                cut.send_replace(true);
                return;
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    let downward = async {
        let mut buffer = vec![0u8; 16 * 1024];
        for _ in 0..READS_MAX {
            let Ok(read) = server_read.read(&mut buffer).await else {
                return;
            };
            if read == 0 || cutting.load(Ordering::SeqCst) {
                return;
            }
            // The server answers: the next bytes up are a new request.
            request_bytes.store(0, Ordering::SeqCst);
            passed.store(false, Ordering::SeqCst);
            if client_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    let mut down = cut.subscribe();
    tokio::select! {
        () = upward => {}
        () = downward => {}
        _ = down.wait_for(|down| *down) => {}
    }
}

fn config() -> ArchiverConfig {
    ArchiverConfig {
        // Uncompressed, so a segment's put is far larger than any other
        // request and the cut lands in it.
        encoding: Encoding {
            compression: Compression::None,
            zstd_level: 0,
        },
        archive_after: Duration::ZERO,
        hot_bytes_max: u64::MAX,
        local_retention: Duration::ZERO,
        nice: trail_archive::ARCHIVE_NICE_DEFAULT,
    }
}

fn objects(server: &S3Server, extension: &str) -> std::io::Result<Vec<String>> {
    let directory = server.object_path("cut/audit/segments");
    if !directory.exists() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = std::fs::read_dir(directory)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(extension))
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_cut_half_way_fails_the_round_and_resumes_cleanly() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let data = tempfile::tempdir()?;
    let (store, log) = write_log(data.path(), 700)?;
    let sealed: Vec<_> = log
        .segments()
        .into_iter()
        .filter(|info| info.sealed)
        .collect();
    assert!(sealed.len() >= 3);
    // Every request but a segment's put is a few KiB at most.
    let mut proxy = CuttingProxy::start(server.address, 16 * 1024).await?;
    let mut target_config = server.config("cut");
    target_config.endpoint = proxy.endpoint();
    let target = ArchiveTarget::open(&target_config)?;
    let mut archiver = Archiver::new(target.clone(), Arc::clone(&log), config());

    let started = Instant::now();
    let error = archiver
        .step(false)
        .await
        .expect_err("the server died mid-put");
    assert!(proxy.is_down(), "the cut happened: {error}");
    assert!(error.is_transient(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "within the retry budget"
    );
    let status = archiver.status();
    assert_eq!((status.failures, status.uploads), (1, 0), "{status:?}");
    assert_eq!(log.first_local_lsn(), Lsn(1), "nothing local is dropped");
    assert!(sealed.iter().all(|info| info.path.exists()));
    assert!(
        objects(&server, ".manifest")?.is_empty(),
        "no manifest names the cut object"
    );
    assert!(
        objects(&server, ".seg")?.is_empty(),
        "a put cut half way leaves no object (S3 puts are all or nothing)"
    );

    // Appends go on while the store is gone.
    let appended = Instant::now();
    let receipts = blocking(|| {
        log.append_blocking(
            vec![EventInput::new("during-outage".into(), b"x".to_vec())],
            false,
        )
    })?;
    assert!(appended.elapsed() < Duration::from_secs(2));
    assert_eq!(receipts[0].lsn, Lsn(701));

    // Back: the archive resumes and catches up, each segment once.
    proxy.restart().await?;
    let archived_through = sealed.last().map(|info| info.last_lsn).ok_or("one")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.first_local_lsn() <= archived_through {
        assert!(Instant::now() < deadline, "{:?}", archiver.status());
        archiver.step(false).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = archiver.status();
    assert_eq!(status.uploads, sealed.len() as u64, "{status:?}");
    assert_eq!(status.last_error, None);
    assert_eq!(objects(&server, ".manifest")?.len(), sealed.len());
    assert_eq!(objects(&server, ".seg")?.len(), sealed.len());
    let report = verify_archive(&target, &log_name(), &mut |_| {}).await?;
    assert_eq!(report.segments, sealed.len() as u64);
    assert_eq!(report.last_lsn, archived_through);
    let local = blocking(|| {
        log.read(log.first_local_lsn(), log.first_local_lsn())
            .next()
    })
    .ok_or("a local record")??;
    assert_eq!(
        local.record.prev_hash, report.last_hash,
        "one chain across the boundary"
    );

    drop(archiver);
    drop(log);
    blocking(|| store.close())?;
    Ok(())
}

/// Multipart settings for the tests below: S3's smallest parts, so a
/// segment of about 12 MiB goes up in three.
fn small_parts() -> Multipart {
    Multipart {
        threshold_bytes: MULTIPART_PART_BYTES_MIN,
        part_bytes: MULTIPART_PART_BYTES_MIN,
    }
}

/// A store, its log and the log's sealed segments.
type LargeLog = (Store, Arc<Log>, Vec<SegmentInfo>);

/// A log whose segments are about 12 MiB, of events that do not compress,
/// with at least one sealed segment; its sealed segments.
fn write_large_segments(root: &std::path::Path) -> Result<LargeLog, Box<dyn std::error::Error>> {
    let options = LogOptions {
        segment_bytes: 12 << 20,
        group_bytes_max: 1 << 20,
        append: trail_log::AppendLimits {
            event_bytes_max: 64 * 1024,
            ..trail_log::AppendLimits::default()
        },
        ..LogOptions::default()
    };
    let store = blocking(|| Store::open(root, options))?;
    let log = blocking(|| store.get_or_create(&log_name()))?;
    // xorshift: bytes zstd cannot shrink, the same every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = |length: usize| {
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect::<Vec<u8>>()
    };
    // 16 MiB in 16-event batches: one sealed segment and part of another.
    for batch in 0..32 {
        let events = (0..16)
            .map(|index| EventInput::new(format!("big-{batch}-{index}"), noise(32 * 1024)))
            .collect();
        blocking(|| log.append_blocking(events, false))?;
    }
    let sealed: Vec<_> = log
        .segments()
        .into_iter()
        .filter(|info| info.sealed)
        .collect();
    assert!(!sealed.is_empty(), "a sealed segment");
    assert!(
        sealed
            .iter()
            .all(|info| info.file_bytes > 2 * MULTIPART_PART_BYTES_MIN),
        "segments of more than two parts: {sealed:?}"
    );
    Ok((store, log, sealed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_above_the_multipart_threshold_archives_verifies_and_restores() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let data = tempfile::tempdir()?;
    let (store, log, sealed) = write_large_segments(data.path())?;
    let target = server.target("cut").with_multipart(small_parts())?;
    // Read now: the archiver removes them locally once archived.
    let originals = sealed
        .iter()
        .map(|info| std::fs::read(&info.path))
        .collect::<Result<Vec<_>, _>>()?;
    let mut archiver = Archiver::new(target.clone(), Arc::clone(&log), config());
    let uploaded = archiver.step(false).await?;
    assert_eq!(uploaded, sealed.len() as u64);
    for info in &sealed {
        let name = format!("{:020}-{:020}.seg", info.first_lsn.0, info.last_lsn.0);
        let stored = std::fs::metadata(server.object_path(&format!("cut/audit/segments/{name}")))?;
        // Uncompressed: the object is the segment, larger than the threshold.
        assert_eq!(stored.len(), info.file_bytes);
        assert!(stored.len() > MULTIPART_PART_BYTES_MIN);
    }
    let report = verify_archive(&target, &log_name(), &mut |_| {}).await?;
    assert_eq!(report.segments, sealed.len() as u64);
    let restored = tempfile::tempdir()?;
    let restored_report = restore_log(&target, &log_name(), restored.path(), &mut |_| {}).await?;
    assert_eq!(restored_report, report);
    for (info, original) in sealed.iter().zip(&originals) {
        let file = info.path.file_name().ok_or("a file name")?;
        let copy = std::fs::read(restored.path().join("audit/wal").join(file))?;
        assert!(copy == *original, "restored byte for byte");
    }
    drop(archiver);
    drop(log);
    blocking(|| store.close())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_cut_half_way_retries_and_leaves_one_object() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let data = tempfile::tempdir()?;
    let (store, log, sealed) = write_large_segments(data.path())?;
    // Only the parts are larger than 1 MiB: the first goes through, the
    // second is cut half way and the server "dies".
    let mut proxy = CuttingProxy::start_letting_through(server.address, 1 << 20, 1).await?;
    let mut target_config = server.config("cut");
    target_config.endpoint = proxy.endpoint();
    let target = ArchiveTarget::open(&target_config)?.with_multipart(small_parts())?;
    let mut archiver = Archiver::new(target.clone(), Arc::clone(&log), config());

    let started = Instant::now();
    let error = archiver
        .step(false)
        .await
        .expect_err("the server died mid-upload");
    assert!(proxy.is_down(), "the cut happened: {error}");
    assert!(error.is_transient(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "within the retry budget"
    );
    assert_eq!(log.first_local_lsn(), Lsn(1), "nothing local is dropped");
    assert!(sealed.iter().all(|info| info.path.exists()));
    assert!(objects(&server, ".manifest")?.is_empty());
    assert!(
        objects(&server, ".seg")?.is_empty(),
        "an upload never completed is no object"
    );
    // Nothing in the bucket a verify would accept as a segment.
    let nothing = verify_archive(&target, &log_name(), &mut |_| {}).await;
    assert!(
        matches!(&nothing, Ok(report) if report.segments == 0) || nothing.is_err(),
        "{nothing:?}"
    );

    // Appends go on while the store is gone.
    let appended = Instant::now();
    let head = log.head().lsn;
    let receipts = blocking(|| {
        log.append_blocking(
            vec![EventInput::new("during-outage".into(), b"x".to_vec())],
            false,
        )
    })?;
    assert!(appended.elapsed() < Duration::from_secs(2));
    assert_eq!(receipts[0].lsn, head.next());

    // Back: the upload is made again from the start, once per segment.
    proxy.restart().await?;
    let archived_through = sealed.last().map(|info| info.last_lsn).ok_or("one")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.first_local_lsn() <= archived_through {
        assert!(Instant::now() < deadline, "{:?}", archiver.status());
        archiver.step(false).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(objects(&server, ".seg")?.len(), sealed.len());
    assert_eq!(objects(&server, ".manifest")?.len(), sealed.len());
    let report = verify_archive(&target, &log_name(), &mut |_| {}).await?;
    assert_eq!(report.segments, sealed.len() as u64);
    assert_eq!(report.last_lsn, archived_through);
    drop(archiver);
    drop(log);
    blocking(|| store.close())?;
    Ok(())
}
