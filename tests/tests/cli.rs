//! The `trail` CLI against a real `traild`: append JSON lines from a file,
//! read them back with `--json`, stop the server, verify and inspect the
//! files offline. Exit codes: 0 ok, 1 failure, 2 usage.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use trail_e2e::{trail_path, Error, Traild};

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
