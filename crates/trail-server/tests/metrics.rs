//! Prometheus metrics over HTTP: a server with metrics on a free loopback
//! port counts appends by log and outcome, and `/metrics` shows them.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use trail_log::Store;
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{AppendRequest, Event};
use trail_server::{Limits, Metrics};

mod common;

use common::{sample, scrape, scrape_until, sync_options, test_config, Result, Served};

fn event(id: &str) -> Event {
    common::login_event(id)
}

fn append(log: &str, ids: &[&str]) -> AppendRequest {
    AppendRequest {
        log: log.to_owned(),
        events: ids.iter().map(|id| event(id)).collect(),
        atomic: false,
    }
}

#[tokio::test]
async fn appends_show_up_on_the_metrics_endpoint() -> Result {
    let dir = tempfile::tempdir()?;
    let config = test_config(Limits::default());
    let options = sync_options(&config);
    let store = Arc::new(Store::open(dir.path(), options)?);
    let (metrics, endpoint) = Metrics::start(([127, 0, 0, 1], 0).into())?;
    let metrics_address = endpoint.address();
    assert!(metrics_address.ip().is_loopback() && metrics_address.port() != 0);

    let served = Served::start(config, Arc::clone(&store), metrics).await?;
    let address = served.address.clone();
    let mut client = LogClient::connect(address).await?;

    client.append(append("audit", &["a", "b", "c"])).await?;
    client.append(append("audit", &["d", "e"])).await?;
    // A retry: one duplicate event, one new one.
    client.append(append("audit", &["e", "f"])).await?;
    let mut refused = append("audit", &["g"]);
    refused.events[0].actor.clear();
    assert!(client.append(refused).await.is_err());
    // A bad log name: no log to name, so `_unknown`.
    assert!(client.append(append("Bad/Name", &["h"])).await.is_err());

    let ok = [("log", "audit"), ("outcome", "ok")];
    let body = scrape(metrics_address).await?;
    assert_eq!(
        sample(&body, "trail_append_events_total", &ok),
        Some(6.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "trail_append_events_total",
            &[("log", "audit"), ("outcome", "duplicate")]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "trail_append_requests_total", &ok),
        Some(3.0),
        "{body}"
    );
    let invalid = [("log", "audit"), ("outcome", "invalid_argument")];
    assert_eq!(
        sample(&body, "trail_append_requests_total", &invalid),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "trail_append_events_total", &invalid),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "trail_append_requests_total",
            &[("log", "_unknown"), ("outcome", "invalid_argument")]
        ),
        Some(1.0),
        "{body}"
    );
    let audit = [("log", "audit")];
    assert_eq!(
        sample(&body, "trail_append_latency_seconds_count", &audit),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "trail_append_request_events_count", &audit),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "trail_append_request_events_sum", &audit),
        Some(7.0),
        "{body}"
    );
    let bytes = sample(&body, "trail_append_bytes_total", &audit).ok_or("no bytes counter")?;
    assert!(bytes > 0.0, "{body}");
    // `_unknown` has only the refusal counters.
    assert!(!body.contains(r#"log="_unknown",outcome="ok""#), "{body}");
    assert!(
        sample(
            &body,
            "trail_append_latency_seconds_count",
            &[("log", "_unknown")]
        )
        .is_none(),
        "{body}"
    );

    // The writer's counters are sampled every second: wait (bounded) for them.
    let body = scrape_until(metrics_address, |body| {
        sample(body, "trail_log_records_total", &audit) == Some(6.0)
    })
    .await?;
    let groups = sample(&body, "trail_log_groups_total", &audit).unwrap_or(0.0);
    assert!((1.0..=6.0).contains(&groups), "{body}");
    assert!(
        sample(&body, "trail_log_syncs_total", &audit).unwrap_or(0.0) >= 1.0,
        "{body}"
    );
    // Six small records fit the first segment.
    assert_eq!(
        sample(&body, "trail_log_segments_started_total", &audit),
        Some(1.0),
        "{body}"
    );
    // The writer waits for the preparer's spare, so it fills none.
    assert_eq!(
        sample(&body, "trail_log_segments_prepared_inline_total", &audit),
        Some(0.0),
        "{body}"
    );
    assert!(
        sample(&body, "trail_log_written_bytes_total", &audit).unwrap_or(0.0) > bytes,
        "{body}"
    );
    assert_eq!(
        sample(&body, "trail_log_queue_depth", &audit),
        Some(0.0),
        "{body}"
    );

    served.stop().await?;
    drop(endpoint);
    store.close()?;
    Ok(())
}

/// The writer's page-cache drops and queue polls are exported as they are
/// counted: a log of 64 KiB segments sealed several times, with one sealed
/// segment kept cached, shows one drop per seal but the first; one client
/// appending one event at a time to a polling writer shows polls that
/// found the next append. Each series equals the engine's own counter.
#[tokio::test]
async fn cache_drops_and_writer_polls_show_up_on_the_metrics_endpoint() -> Result {
    let dir = tempfile::tempdir()?;
    let mut config = test_config(Limits {
        event_bytes_max: 4 * 1024,
        ..Limits::default()
    });
    config.log.segment_bytes = 64 * 1024;
    config.log.group_bytes_max = 16 * 1024;
    config.log.cached_sealed_segments = 1;
    config.log.writer_spin_us = u64::try_from(trail_log::WRITER_SPIN_MAX.as_micros())?;
    let options = sync_options(&config);
    let store = Arc::new(Store::open(dir.path(), options)?);
    let (metrics, endpoint) = Metrics::start(([127, 0, 0, 1], 0).into())?;
    let metrics_address = endpoint.address();
    let served = Served::start(config, Arc::clone(&store), metrics).await?;
    let mut client = LogClient::connect(served.address.clone()).await?;

    for request in 0..40 {
        let ids: Vec<String> = (0..50)
            .map(|event| format!("e-{request}-{event}"))
            .collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        client.append(append("audit", &ids)).await?;
    }
    for index in 0..50 {
        client
            .append(append("audit", &[format!("one-{index}").as_str()]))
            .await?;
    }
    let log = store
        .get(&trail_log::LogName::new("audit")?)?
        .ok_or("the log is not open")?;
    // The preparer's thread drops a segment's pages before its next fill
    // and the server samples the counters every second: wait (bounded)
    // until every drop is made and the sample shows it.
    let audit = [("log", "audit")];
    #[allow(clippy::cast_precision_loss)]
    let shows_every_drop = |body: &str| {
        let stats = log.stats();
        // Every seal but the first drops the segment sealed before it.
        stats.segments_uncached + 2 == stats.segments_started
            && sample(body, "trail_log_segments_uncached_total", &audit)
                == Some(stats.segments_uncached as f64)
            && sample(body, "trail_log_writer_spin_catches_total", &audit)
                == Some(stats.spin_catches as f64)
    };
    scrape_until(metrics_address, shows_every_drop).await?;
    let stats = log.stats();
    assert!(
        stats.segments_started >= 4,
        "2,050 records fill several 64 KiB segments: {stats:?}"
    );
    // A test task descheduled for 10 ms misses a poll: half is asked.
    assert!(stats.spin_catches >= 25, "{stats:?}");

    served.stop().await?;
    drop(endpoint);
    drop(log);
    store.close()?;
    Ok(())
}

#[test]
fn a_taken_metrics_port_is_a_listen_error() -> Result {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let error = Metrics::start(taken.local_addr()?)
            .err()
            .ok_or("bound a taken port")?;
        assert!(
            matches!(error, trail_server::ServerError::Listen { .. }),
            "{error}"
        );
        Ok(())
    })
}
