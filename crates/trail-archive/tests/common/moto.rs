//! A second real S3 server for the Object Lock tests: moto (`moto[server]`
//! from PyPI), which implements and enforces Object Lock retention and
//! legal holds (s3s-fs has no Object Lock). It does not check signatures.
//!
//! [`Moto::start`] installs a pinned moto into a venv under the workspace's
//! `target/` directory once (`target/moto-venv`, reused while its marker
//! file names the pinned version; bounded in time; a file lock keeps two
//! test processes from installing at once), starts `moto_server` on a free
//! loopback port, and kills it on drop. When Python, venv or pip fail, the
//! test fails with the reason: it is never silently skipped.
//!
//! It depends on std alone, so that `tests/tests/archive_cli.rs` (the CLI
//! end to end) includes the same file.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The moto release the tests run against (what docs/OPERATIONS.md's
/// "which servers enforce it" was checked with).
pub const MOTO_VERSION: &str = "5.2.5";
/// The longest creating the venv may take.
const VENV_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `pip install` may take.
const PIP_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest moto may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports tried when the one picked was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// A running moto server.
pub struct Moto {
    pub address: SocketAddr,
    child: Child,
    /// Its output (quoted in the error when it does not start; removed
    /// with it).
    log_path: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// The workspace's target directory (`CARGO_TARGET_DIR`, else `target/`
/// beside the workspace's Cargo.lock, found from the crate whose test this
/// is: this file is shared by crates/trail-archive and tests/).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest
                .ancestors()
                .find(|dir| dir.join("Cargo.lock").exists())
                .unwrap_or(manifest)
                .join("target")
        }
    }
}

/// Runs `command` until it exits, at most `timeout`; its output on failure.
fn run(command: Command, what: &str, timeout: Duration) -> Result<(), String> {
    let log = target_dir().join(format!("moto-install-{}.log", std::process::id()));
    let outcome = run_logged(command, what, timeout, &log);
    let _ = std::fs::remove_file(&log);
    outcome
}

fn run_logged(
    mut command: Command,
    what: &str,
    timeout: Duration,
    log: &Path,
) -> Result<(), String> {
    let output =
        std::fs::File::create(log).map_err(|error| format!("{}: {error}", log.display()))?;
    let errors = output
        .try_clone()
        .map_err(|error| format!("{}: {error}", log.display()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .spawn()
        .map_err(|error| format!("{what}: cannot start: {error}"))?;
    let deadline = Instant::now() + timeout;
    // Bounded by the deadline.
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("{what} failed ({status}):\n{text}"));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(error) => return Err(format!("{what}: {error}")),
        }
    }
}

/// The venv with the pinned moto, installed when missing. Serialized
/// across processes by a file lock.
fn venv() -> Result<PathBuf, String> {
    let target = target_dir();
    std::fs::create_dir_all(&target).map_err(|error| format!("{}: {error}", target.display()))?;
    let venv = target.join("moto-venv");
    let marker = venv.join(format!("trail-moto-{MOTO_VERSION}.installed"));
    let lock_path = target.join("moto-venv.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|error| format!("{}: {error}", lock_path.display()))?;
    lock.lock()
        .map_err(|error| format!("locking {}: {error}", lock_path.display()))?;
    if marker.exists() && venv.join("bin/moto_server").exists() {
        return Ok(venv);
    }
    let python = std::env::var("TRAIL_PYTHON").unwrap_or_else(|_| "python3".into());
    if !venv.join("bin/python").exists() {
        let mut command = Command::new(&python);
        command.arg("-m").arg("venv").arg(&venv);
        run(command, &format!("{python} -m venv {}", venv.display()), VENV_TIMEOUT).map_err(
            |error| {
                format!(
                    "the Object Lock tests need moto[server]=={MOTO_VERSION} from PyPI in a venv, and creating it failed (install python3 with venv, or set TRAIL_PYTHON): {error}"
                )
            },
        )?;
    }
    let mut command = Command::new(venv.join("bin/python"));
    command
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "-q",
        ])
        .arg(format!("moto[server]=={MOTO_VERSION}"));
    run(
        command,
        &format!("pip install moto[server]=={MOTO_VERSION}"),
        PIP_TIMEOUT,
    )
    .map_err(|error| {
        format!("the Object Lock tests need moto[server]=={MOTO_VERSION} from PyPI: {error}")
    })?;
    std::fs::write(&marker, MOTO_VERSION)
        .map_err(|error| format!("{}: {error}", marker.display()))?;
    Ok(venv)
}

/// One plain HTTP/1.1 request to `address` (moto does not check
/// signatures; a placeholder `Authorization` header is enough for the
/// calls that look for one). Returns the status and body.
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|error| format!("connecting to moto at {address}: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|error| error.to_string())?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=moto/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|error| format!("writing to moto: {error}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|error| format!("reading from moto: {error}"))?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("moto answered no HTTP status: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| error.to_string())
}

impl Moto {
    /// Installs moto if needed and starts it on a free loopback port.
    ///
    /// # Errors
    /// Why moto could not be installed or started, in words (the caller
    /// fails the test with it).
    pub fn start() -> Result<Moto, String> {
        let venv = venv()?;
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let log_path = target_dir().join(format!("moto-{port}.log"));
            let log = std::fs::File::create(&log_path)
                .map_err(|error| format!("{}: {error}", log_path.display()))?;
            let errors = log.try_clone().map_err(|error| error.to_string())?;
            let child = Command::new(venv.join("bin/moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(errors)
                .spawn()
                .map_err(|error| format!("starting moto_server: {error}"))?;
            let mut moto = Moto {
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
                log_path: log_path.clone(),
            };
            match moto.wait_ready() {
                Ok(()) => return Ok(moto),
                Err(error) => {
                    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last = format!("{error}\n{text}");
                }
            }
        }
        Err(format!("moto_server did not start: {last}"))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        // Bounded by the deadline.
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto_server exited: {status}"));
            }
            if let Ok((200, _)) = http(self.address, "GET", "/", &[], b"") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "moto_server did not answer within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates `bucket`, with Object Lock enabled (and so versioning) when
    /// `object_lock`.
    pub fn create_bucket(&self, bucket: &str, object_lock: bool) -> Result<(), String> {
        let headers: &[(&str, &str)] = if object_lock {
            &[("x-amz-bucket-object-lock-enabled", "true")]
        } else {
            &[]
        };
        match http(self.address, "PUT", &format!("/{bucket}"), headers, b"")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("creating bucket {bucket}: {status} {body}")),
        }
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}
