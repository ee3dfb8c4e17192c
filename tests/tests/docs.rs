//! The documented defaults are the code's: the configuration reference in
//! `docs/OPERATIONS.md` must be what `traild --print-config` prints, key
//! for key, and every "`<key>` (default N)" in `docs/FORMAT.md` and
//! `docs/OPERATIONS.md` must state that key's default. The docs cannot
//! drift from the code unnoticed (they had: 256 vs 128 bytes for event ids,
//! 1 MiB vs 64 KiB for events).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use trail_e2e::{traild_path, Error};
use trail_log::LogOptions;

/// `section.key` -> value as written, from simple TOML (`[section]` and
/// `key = value` lines; `#` starts a comment; no `#` inside values).
fn flat_toml(text: &str) -> BTreeMap<String, String> {
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = format!("{name}.");
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            keys.insert(format!("{section}{}", key.trim()), value.trim().to_owned());
        }
    }
    keys
}

fn doc(name: &str) -> Result<String, Error> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    Ok(std::fs::read_to_string(&path).map_err(|error| format!("{}: {error}", path.display()))?)
}

/// The first ```toml block of `text`.
fn toml_block(text: &str) -> Option<&str> {
    let start = text.find("```toml\n")? + "```toml\n".len();
    let length = text[start..].find("```")?;
    Some(&text[start..start + length])
}

/// Every "`KEY` (default N" in `text` (whitespace, line breaks included,
/// counts as one space): (KEY, N).
fn stated_defaults(text: &str) -> Vec<(String, String)> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut found = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("` (default ") {
        let before = &rest[..at];
        let after = &rest[at + "` (default ".len()..];
        if let Some(open) = before.rfind('`') {
            let value: String = after.chars().take_while(char::is_ascii_digit).collect();
            found.push((before[open + 1..].to_owned(), value));
        }
        rest = after;
    }
    found
}

fn printed_config() -> Result<BTreeMap<String, String>, Error> {
    let output = Command::new(traild_path()).arg("--print-config").output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(flat_toml(&String::from_utf8(output.stdout)?))
}

#[test]
fn operations_md_config_reference_is_what_traild_prints() -> Result<(), Error> {
    let printed = printed_config()?;
    let operations = doc("OPERATIONS.md")?;
    let documented =
        flat_toml(toml_block(&operations).ok_or("OPERATIONS.md has no ```toml block")?);
    assert!(
        printed.contains_key("limits.event_id_bytes_max"),
        "{printed:?}"
    );
    assert_eq!(
        documented, printed,
        "docs/OPERATIONS.md's configuration block vs traild --print-config"
    );
    Ok(())
}

#[test]
fn defaults_stated_in_the_docs_are_the_code_s() -> Result<(), Error> {
    let printed = printed_config()?;
    let engine = LogOptions::default();
    let engine: BTreeMap<&str, String> = [
        (
            "AppendLimits::event_bytes_max",
            engine.append.event_bytes_max.to_string(),
        ),
        (
            "AppendLimits::event_id_bytes_max",
            engine.append.event_id_bytes_max.to_string(),
        ),
        (
            "LogOptions::group_bytes_max",
            engine.group_bytes_max.to_string(),
        ),
        (
            "LogOptions::segment_bytes",
            engine.segment_bytes.to_string(),
        ),
        ("LogOptions::queue_depth", engine.queue_depth.to_string()),
        (
            "AppendLimits::events_per_request_max",
            engine.append.events_per_request_max.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let mut checked = 0;
    for name in ["FORMAT.md", "OPERATIONS.md"] {
        for (key, value) in stated_defaults(&doc(name)?) {
            let actual = printed
                .get(&key)
                .cloned()
                .or_else(|| engine.get(key.as_str()).cloned())
                .ok_or_else(|| format!("docs/{name} states a default for {key}, which is no config key or engine option this test knows"))?;
            assert_eq!(value, actual, "docs/{name}: the default of `{key}`");
            checked += 1;
        }
    }
    // FORMAT.md states the event and event-id limits (traild's and the
    // engine's): a test that finds nothing checks nothing.
    assert!(checked >= 4, "only {checked} stated defaults found");
    Ok(())
}
