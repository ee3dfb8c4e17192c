//! The `trail` CLI against a real `traild`: append JSON lines from a file,
//! read them back with `--json`, stop the server, verify and inspect the
//! files offline. Exit codes: 0 ok, 1 failure, 2 usage.

#![allow(clippy::unwrap_used)]

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trail_e2e::{read_log, trail_path, Error, Traild};
use trail_log::{EventInput, LogName, LogOptions, Store, WAL_DIR_NAME};
use trail_proto::v1::{Event, Outcome};

fn trail(args: &[&str]) -> Result<Output, Error> {
    Ok(Command::new(trail_path()).args(args).output()?)
}

fn json_lines(output: &Output) -> Result<Vec<serde_json::Value>, Error> {
    let text = String::from_utf8(output.stdout.clone())?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

#[test]
fn append_file_read_json_and_verify_offline() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = Traild::start(&data, &[])?;
    let addr = server.address.clone();

    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"event_id":"a1","actor":"alice","action":"create","resource":"doc/1","outcome":"success","payload":{"title":"hi"},"change":{"set":{"title":"hi"}},"attributes":{"ip":"10.0.0.1"},"trace_id":"t1"}"#,
            "\n",
            r#"{"event_id":"a2","actor":"bob","action":"edit","resource":"doc/1","outcome":"denied","change":{"json_patch":[{"op":"replace","path":"/title","value":"x"}]}}"#,
            "\n\n",
            r#"{"event_id":"a3","actor":"carol","action":"delete","resource":"doc/1","change":{"delete":true},"occurred_at_unix_nanos":5}"#,
            "\n"
        ),
    )?;
    let appended = trail(&[
        "--addr",
        &addr,
        "--json",
        "append",
        "--log",
        "cli",
        "--file",
        events.to_str().unwrap(),
        "--batch",
        "2",
    ])?;
    assert!(
        appended.status.success(),
        "{}",
        String::from_utf8_lossy(&appended.stderr)
    );
    let receipts = json_lines(&appended)?;
    assert_eq!(receipts.len(), 3);
    assert_eq!(receipts[2]["event_id"], "a3");
    assert_eq!(receipts[2]["lsn"], 3);
    assert_eq!(receipts[0]["duplicate"], false);

    // Appending the same file again: every receipt is the original.
    let again = trail(&[
        "--addr",
        &addr,
        "--json",
        "append",
        "--log",
        "cli",
        "--file",
        events.to_str().unwrap(),
    ])?;
    assert!(again.status.success());
    let again = json_lines(&again)?;
    assert!(again.iter().all(|receipt| receipt["duplicate"] == true));
    assert_eq!(again[1]["hash"], receipts[1]["hash"]);

    let read = trail(&[
        "--addr", &addr, "--json", "read", "--log", "cli", "--from", "1",
    ])?;
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let records = json_lines(&read)?;
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["hash"], receipts[0]["hash"]);
    assert_eq!(records[1]["prev_hash"], records[0]["hash"]);
    assert_eq!(records[0]["event"]["payload"]["title"], "hi");
    assert_eq!(records[0]["event"]["attributes"]["ip"], "10.0.0.1");
    assert_eq!(records[0]["event"]["trace_id"], "t1");
    assert_eq!(records[1]["event"]["outcome"], "denied");
    assert_eq!(
        records[1]["event"]["change"]["json_patch"][0]["op"],
        "replace"
    );
    assert_eq!(records[2]["event"]["change"]["delete"], true);
    assert_eq!(records[2]["event"]["occurred_at_unix_nanos"], 5);
    assert!(records[2]["recorded_at_unix_nanos"].as_i64().unwrap() > 0);

    // A bad line: reported by number, lines before it appended, none after.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        concat!(
            r#"{"event_id":"b1","actor":"a","action":"b","resource":"r"}"#,
            "\n",
            r#"{"event_id":"b2","actor":"a","action":"b"}"#,
            "\n",
            r#"{"event_id":"b3","actor":"a","action":"b","resource":"r"}"#,
            "\n"
        ),
    )?;
    let failed = trail(&[
        "--addr",
        &addr,
        "append",
        "--log",
        "cli",
        "--file",
        bad.to_str().unwrap(),
    ])?;
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let head = trail(&["--addr", &addr, "--json", "head", "--log", "cli"])?;
    assert_eq!(json_lines(&head)?[0]["lsn"], 4);

    // A server-side refusal is exit 1 with the field named.
    let refused = trail(&[
        "--addr",
        &addr,
        "append",
        "--log",
        "cli",
        "--actor",
        "",
        "--action",
        "x",
        "--resource",
        "r",
    ])?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("events[0].actor"));
    // Usage errors are exit 2.
    assert_eq!(trail(&["read", "--no-such-flag"])?.status.code(), Some(2));
    // Unknown log: exit 1.
    assert_eq!(
        trail(&["--addr", &addr, "head", "--log", "missing"])?
            .status
            .code(),
        Some(1)
    );

    let online = trail(&["--addr", &addr, "--json", "verify", "--log", "cli"])?;
    assert!(online.status.success());
    assert_eq!(json_lines(&online)?[0]["verified"], 4);

    let status = server.terminate()?;
    assert!(status.success(), "traild exited with {status}");

    let offline = trail(&[
        "--json",
        "verify",
        "--dir",
        data.to_str().unwrap(),
        "--log",
        "cli",
    ])?;
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    let report = &json_lines(&offline)?[0];
    assert_eq!(report["ok"], true);
    assert_eq!(report["verified"], 4);
    assert_eq!(
        report["head_hash"],
        records.get(2).map(|_| report["head_hash"].clone()).unwrap()
    );

    let inspect = trail(&["--json", "inspect", "--dir", data.to_str().unwrap()])?;
    assert!(inspect.status.success());
    let segments = json_lines(&inspect)?;
    assert!(segments
        .iter()
        .any(|segment| segment["log"] == "cli" && segment["first_lsn"] == 1));
    Ok(())
}

/// Events per log in the damage test: enough 1 KiB events for a few
/// 64 KiB segments.
const DAMAGE_EVENTS: u64 = 150;

/// Appends, through the engine, alice's login as `id` with a payload of
/// `payload` bytes, encoded as a producer would.
fn append_login(log: &trail_log::Log, id: &str, payload: usize) -> Result<(), Error> {
    let event = Event {
        event_id: id.to_owned(),
        actor: "alice".to_owned(),
        action: "login".to_owned(),
        resource: "user/alice".to_owned(),
        outcome: Outcome::Success as i32,
        payload: vec![b'x'; payload],
        ..Event::default()
    };
    log.append_blocking(
        vec![EventInput::new(
            event.event_id.clone(),
            event.encode_to_vec(),
        )],
        false,
    )?;
    Ok(())
}

/// Writes logs `good` and `bad` under `data` with small segments, then
/// flips a byte inside the first record of `bad`'s first (sealed) segment.
/// Returns that file.
fn two_logs_one_damaged(data: &Path) -> Result<PathBuf, Error> {
    let store = Store::open(
        data,
        LogOptions {
            segment_bytes: 64 << 10,
            group_bytes_max: 16 << 10,
            append: trail_log::AppendLimits {
                event_bytes_max: 4 << 10,
                ..trail_log::AppendLimits::default()
            },
            ..LogOptions::default()
        },
    )?;
    for log in ["good", "bad"] {
        let log = store.get_or_create(&LogName::new(log)?)?;
        for n in 1..=DAMAGE_EVENTS {
            append_login(&log, &format!("e{n}"), 1_000)?;
        }
    }
    store.close()?;
    drop(store);
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("bad").join(WAL_DIR_NAME))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|extension| extension == "seg"));
    files.sort();
    assert!(
        files.len() >= 2,
        "the damaged segment must be a sealed one: {files:?}"
    );
    let mut bytes = std::fs::read(&files[0])?;
    bytes[trail_log::segment::SEGMENT_HEADER_BYTES + 40] ^= 0x01;
    std::fs::write(&files[0], bytes)?;
    Ok(files[0].clone())
}

/// A damaged log: offline verify of its neighbour is not affected, its own
/// report (JSON) names file, offset and LSN; `traild` starts anyway, serves
/// the neighbour, and answers for the damaged one with its damage.
#[test]
fn a_damaged_log_is_reported_and_does_not_stop_the_others() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let damaged = two_logs_one_damaged(&data)?;
    let data_arg = data.to_str().unwrap();

    let good = trail(&["--json", "verify", "--dir", data_arg, "--log", "good"])?;
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let report = &json_lines(&good)?[0];
    assert_eq!(report["ok"], true);
    assert_eq!(report["verified"], DAMAGE_EVENTS);

    let bad = trail(&["--json", "verify", "--dir", data_arg, "--log", "bad"])?;
    assert_eq!(bad.status.code(), Some(1));
    let report = &json_lines(&bad)?[0];
    assert_eq!(report["ok"], false);
    assert_eq!(report["damage"]["file"], damaged.display().to_string());
    assert_eq!(report["damage"]["lsn"], 1);
    assert!(
        report["damage"]["offset"].as_u64().unwrap() >= 96,
        "{report}"
    );
    assert!(!report["damage"]["reason"].as_str().unwrap().is_empty());

    // Every outcome has a JSON report, a missing log too.
    let missing = trail(&["--json", "verify", "--dir", data_arg, "--log", "missing"])?;
    assert_eq!(missing.status.code(), Some(1));
    let report = &json_lines(&missing)?[0];
    assert_eq!(
        (report["log"].as_str(), report["ok"].as_bool()),
        (Some("missing"), Some(false))
    );
    assert!(
        report["error"].as_str().unwrap().contains("missing"),
        "{report}"
    );

    let server = Traild::start(&data, &[])?;
    let addr = server.address.clone();
    let head = trail(&["--addr", &addr, "--json", "head", "--log", "good"])?;
    assert!(
        head.status.success(),
        "{}",
        String::from_utf8_lossy(&head.stderr)
    );
    assert_eq!(json_lines(&head)?[0]["lsn"], DAMAGE_EVENTS);
    // traild opens `bad` (its sealed segments are trusted by their seals at
    // open) and takes it out of service as soon as background verification
    // has re-hashed the damaged segment: moments after start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let head = loop {
        let head = trail(&["--addr", &addr, "--json", "head", "--log", "bad"])?;
        if head.status.code() == Some(1) || std::time::Instant::now() > deadline {
            break head;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(head.status.code(), Some(1));
    let damage = json_lines(&head)?[0]["damage"].as_str().unwrap().to_owned();
    assert!(
        damage.contains(&damaged.display().to_string()) && damage.contains("(lsn 1)"),
        "{damage}"
    );
    let append = trail(&[
        "--addr",
        &addr,
        "append",
        "--log",
        "bad",
        "--actor",
        "a",
        "--action",
        "b",
        "--resource",
        "r",
    ])?;
    assert_eq!(append.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&append.stderr);
    assert!(
        stderr.contains("DataLoss") && stderr.contains("log bad is damaged"),
        "{stderr}"
    );
    let append = trail(&[
        "--addr",
        &addr,
        "append",
        "--log",
        "good",
        "--actor",
        "a",
        "--action",
        "b",
        "--resource",
        "r",
    ])?;
    assert!(
        append.status.success(),
        "{}",
        String::from_utf8_lossy(&append.stderr)
    );

    let log_file = server.log_file.clone();
    let status = server.terminate()?;
    assert!(status.success(), "traild exited with {status}");
    let log = read_log(&log_file);
    assert!(
        log.lines().any(|line| line.contains("ERROR")
            && line.contains("log is damaged")
            && line.contains("bad")),
        "{log}"
    );
    Ok(())
}

/// Offline verify of a copy whose active segment ends in a torn write: the
/// head is reported ok, and so is what the next start would cut (issue 12).
#[test]
fn offline_verify_reports_a_torn_tail() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    {
        let store = Store::open(&data, LogOptions::default())?;
        let log = store.get_or_create(&LogName::new("torn")?)?;
        for n in 1..=10 {
            append_login(&log, &format!("t{n}"), 0)?;
        }
        // Dropped, not closed: no clean-close marker, as after a crash.
    }
    let segment = data
        .join("torn")
        .join(WAL_DIR_NAME)
        .join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&segment)?;
    let mut end = trail_log::segment::SEGMENT_HEADER_BYTES;
    loop {
        let length = u32::from_le_bytes(bytes[end..end + 4].try_into()?) as usize;
        if length == 0 {
            break;
        }
        end += 8 + length;
    }
    // Half a frame of a write that never completed.
    bytes[end..end + 37].copy_from_slice(&[0xA5; 37]);
    std::fs::write(&segment, &bytes)?;
    let data_arg = data.to_str().ok_or("path")?;

    let json = trail(&["--json", "verify", "--dir", data_arg, "--log", "torn"])?;
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let report = &json_lines(&json)?[0];
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["head_lsn"], 10);
    assert_eq!(report["torn_tail"]["offset"], end as u64);
    assert_eq!(report["torn_tail"]["bytes"], 37);
    assert_eq!(report["torn_tail"]["kept_lsn"], 10);
    let text = trail(&["verify", "--dir", data_arg, "--log", "torn"])?;
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("torn tail: 37 bytes after lsn 10") && stdout.contains("would be cut"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&segment)?,
        bytes,
        "offline verify wrote nothing"
    );
    Ok(())
}
