//! The archive's metrics (issue "Tiered storage", part 2): the compactor
//! counts each segment it uploads and verifies (segments, stored bytes, one
//! latency sample each), a failed round once, and samples the log's local
//! (hot) and archived bytes, per log, as `/metrics` renders them.

use std::sync::Arc;

use trail_log::{EventInput, LogName, LogOptions, Store};
use trail_server::compactor::Compactor;
use trail_server::config::ArchiveConfig;
use trail_server::Metrics;

mod common;

use common::Result;

fn options() -> LogOptions {
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

/// The value of `name{log="audit"}` in a Prometheus text exposition.
fn value(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{log=\"audit\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|number| number.trim().parse().ok())
}

async fn append(log: &trail_log::Log, from: usize, count: usize) -> Result {
    for position in from..from + count {
        let body = format!("{{\"n\":{position},\"padding\":\"{}\"}}", "x".repeat(250));
        log.append(
            vec![EventInput::new(format!("e-{position}"), body.into_bytes())],
            false,
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_metrics_count_uploads_sizes_and_failures() -> Result {
    let directory = tempfile::tempdir()?;
    let archive = directory.path().join("archive");
    let store = Arc::new(Store::open(&directory.path().join("data"), options())?);
    let name = LogName::new("audit")?;
    let log = store.get_or_create(&name)?;
    append(&log, 0, 500).await?;

    let (metrics, _endpoint) = Metrics::start("127.0.0.1:0".parse()?)?;
    let config = ArchiveConfig {
        url: format!("file://{}", archive.display()),
        archive_after_secs: 0,
        // Nothing is removed locally: the local bytes stay what they were.
        local_retention_secs: 3600,
        ..ArchiveConfig::default()
    };
    let compactor =
        Compactor::new(&config, Arc::clone(&store), metrics.clone())?.ok_or("archiving is on")?;
    let (status, uploaded) = compactor
        .archive_now(&name)
        .await?
        .ok_or("the log exists")?;
    assert!(
        uploaded >= 3,
        "500 events fill several segments: {uploaded}"
    );
    assert_eq!(status.archived_segments, uploaded);

    let text = metrics.render();
    #[allow(clippy::cast_precision_loss)]
    let (uploaded_f, archived_f, local_f) = (
        uploaded as f64,
        status.archived_bytes as f64,
        status.local_bytes as f64,
    );
    assert_eq!(
        value(&text, "trail_archive_uploaded_segments_total"),
        Some(uploaded_f),
        "{text}"
    );
    assert_eq!(
        value(&text, "trail_archive_uploaded_bytes_total"),
        Some(archived_f),
        "every archived byte was uploaded by this process"
    );
    assert_eq!(
        value(&text, "trail_archive_upload_latency_seconds_count"),
        Some(uploaded_f),
        "one latency sample per segment"
    );
    assert_eq!(
        value(&text, "trail_archive_archived_bytes"),
        Some(archived_f)
    );
    assert_eq!(value(&text, "trail_archive_local_bytes"), Some(local_f));
    assert!(local_f > 0.0);
    assert_eq!(value(&text, "trail_archive_failures_total"), Some(0.0));
    assert!(
        text.contains("# HELP trail_archive_uploaded_segments_total"),
        "described"
    );

    // The target becomes unwritable (a file where its directory was): the
    // next round fails, is counted once, and uploads nothing.
    std::fs::remove_dir_all(&archive)?;
    std::fs::write(&archive, b"not a directory")?;
    append(&log, 500, 10).await?;
    let failed = compactor.archive_now(&name).await;
    assert!(failed.is_err(), "{failed:?}");
    let text = metrics.render();
    assert_eq!(value(&text, "trail_archive_failures_total"), Some(1.0));
    assert_eq!(
        value(&text, "trail_archive_uploaded_segments_total"),
        Some(uploaded_f)
    );
    drop(log);
    tokio::task::spawn_blocking(move || store.close()).await??;
    Ok(())
}
