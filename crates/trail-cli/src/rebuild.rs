//! `trail index rebuild`: rebuilds a log's derived stores (the query index
//! and the resource-state store) from its log, offline (the store's lock
//! keeps a running server out), with a progress bar.

use std::path::Path;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};

use crate::print_json;

/// What a rebuild did (`trail_index::RebuildReport`).
struct Report {
    head_lsn: u64,
    records: u64,
    seconds: f64,
}

/// Rebuilds `log` under `dir` and prints `rebuilt the query index and
/// resource state of log L: N records through lsn H in S s` (or a JSON
/// object with `--json`).
pub fn run(json: bool, dir: &Path, log: &str) -> anyhow::Result<()> {
    let name = trail_log::LogName::new(log).map_err(|error| anyhow!("--log: {error}"))?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::no_length()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} records indexed {per_sec} {eta}")
    {
        bar.set_style(style);
    }
    let result = rebuild_offline(dir, &name, &mut |done, head| {
        bar.set_length(head);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = result.map_err(|error| {
        anyhow!(
            "rebuilding the index of log {name} in {}: {error}",
            dir.display()
        )
    })?;
    if json {
        print_json(&serde_json::json!({
            "log": name.as_str(),
            "ok": true,
            "head_lsn": report.head_lsn,
            "records": report.records,
            "seconds": report.seconds,
        }))
    } else {
        println!(
            "rebuilt the query index and resource state of log {name}: {} records through lsn {} in {:.2} s",
            report.records, report.head_lsn, report.seconds
        );
        Ok(())
    }
}

/// The call into trail-index, kept apart so the rest of the command does
/// not depend on its error type.
fn rebuild_offline(
    dir: &Path,
    name: &trail_log::LogName,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, String> {
    trail_index::rebuild_offline(dir, name, progress)
        .map(|report| Report {
            head_lsn: report.head_lsn,
            records: report.records,
            seconds: report.seconds,
        })
        .map_err(|error| error.to_string())
}
