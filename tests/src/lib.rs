//! Helpers shared by the end-to-end tests in `tests/tests/`: build and find
//! the real `traild` and `trail` binaries, start `traild` on a free loopback
//! port over a data directory, and stop or kill it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

/// Errors in test helpers, as text.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory that holds the binaries of the profile these tests were
/// built with (`target/debug`), with `traild` and `trail` built into it.
///
/// Test executables live in `<target>/<profile>/deps/`; cargo does not build
/// another package's binaries for a test, so the first call runs
/// `cargo build --bins -p trail-server -p trail-cli` into the same target
/// directory (a no-op when they are fresh). Works on a fresh clone.
///
/// # Panics
/// When the binaries cannot be built.
#[must_use]
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match build_bins() {
        Ok(dir) => dir,
        Err(error) => panic!("cannot build traild and trail: {error}"),
    })
}

fn build_bins() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("test executable is not in <target>/<profile>/deps")?
        .to_path_buf();
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or("no profile directory")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(["-p", "trail-server", "-p", "trail-cli", "--bins"]);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!("cargo build failed: {status}").into());
    }
    for name in ["traild", "trail"] {
        let path = profile_dir.join(name);
        if !path.exists() {
            return Err(format!("{} is missing after the build", path.display()).into());
        }
    }
    Ok(profile_dir)
}

/// The path of the `traild` binary.
#[must_use]
pub fn traild_path() -> PathBuf {
    bin_dir().join("traild")
}

/// The path of the `trail` binary.
#[must_use]
pub fn trail_path() -> PathBuf {
    bin_dir().join("trail")
}

/// A running `traild`.
pub struct Traild {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The server's stderr (its logs).
    pub log_file: PathBuf,
}

impl Traild {
    /// Starts `traild` over `data_dir` on a free loopback port (port 0; the
    /// server prints the address it bound), with metrics on another free
    /// loopback port, and waits until it serves.
    ///
    /// # Errors
    /// When it does not start within a minute.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Result<Traild, Error> {
        let log_file = data_dir.with_extension(format!("traild-{}.log", unique()));
        let stderr = std::fs::File::create(&log_file)?;
        let mut child = Command::new(traild_path())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            // Several servers run at once: none may take the default
            // metrics port.
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let mut sink = String::new();
            while reader
                .read_line(&mut sink)
                .map(|read| read > 0)
                .unwrap_or(false)
            {
                sink.clear();
            }
        });
        let line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(
                    format!("traild did not start; its log:\n{}", read_log(&log_file)).into(),
                );
            }
        };
        let Some(address) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(
                format!("traild printed {line:?}; its log:\n{}", read_log(&log_file)).into(),
            );
        };
        Ok(Traild {
            address: format!("http://{address}"),
            child,
            log_file,
        })
    }

    /// The server's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush.
    ///
    /// # Errors
    /// When the process cannot be killed.
    pub fn kill(mut self) -> Result<(), Error> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits (bounded) for a graceful exit.
    ///
    /// # Errors
    /// When the signal cannot be sent or the server does not exit in time.
    pub fn terminate(mut self) -> Result<ExitStatus, Error> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            return Err("kill -TERM failed".into());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "traild did not exit 30 s after SIGTERM; log:\n{}",
                    read_log(&self.log_file)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Traild {
    fn drop(&mut self) {
        // A test that failed half-way must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's log, for failure messages.
#[must_use]
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A number unique within this process run, for file names and ids.
#[must_use]
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos() % 1_000_000_007).unwrap_or(0)
        });
    nanos * 1_000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Every record of `log`, from LSN 1 to the head, through `Read`.
///
/// # Errors
/// The RPC's status, or a stream error.
pub async fn read_all(
    client: &mut trail_proto::v1::log_client::LogClient<tonic::transport::Channel>,
    log: &str,
) -> Result<Vec<trail_proto::v1::Record>, Error> {
    use tokio_stream::StreamExt;
    let mut stream = client
        .read(trail_proto::v1::ReadRequest {
            log: log.to_owned(),
            from_lsn: 1,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.next().await {
        records.push(record?);
    }
    Ok(records)
}

/// A process's threads and memory from `/proc/PID/status`; as peaks when
/// sampled over time.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessPeaks {
    /// `Threads:`.
    pub threads: u64,
    /// `VmRSS:`, KiB.
    pub rss_kib: u64,
    /// `VmHWM:` (the kernel's own peak RSS), KiB.
    pub hwm_kib: u64,
    /// How many readings the peaks come from.
    pub samples: u64,
}

/// One reading of `pid`'s `/proc/PID/status`.
///
/// # Errors
/// When the process is gone or the file lacks a field.
pub fn process_status(pid: u32) -> Result<ProcessPeaks, Error> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64, Error> {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no {name}").into())
    };
    Ok(ProcessPeaks {
        threads: field("Threads:")?,
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        samples: 1,
    })
}

/// Reads `pid`'s status every 20 ms until `stop` (bounded at 2 minutes) and
/// returns the peaks.
#[must_use]
pub fn sample_process(
    pid: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<ProcessPeaks, String>> {
    std::thread::spawn(move || {
        let give_up = Instant::now() + Duration::from_secs(120);
        let mut peaks = ProcessPeaks::default();
        while !stop.load(Ordering::Relaxed) && Instant::now() < give_up {
            let now = process_status(pid).map_err(|error| format!("traild went away: {error}"))?;
            peaks.threads = peaks.threads.max(now.threads);
            peaks.rss_kib = peaks.rss_kib.max(now.rss_kib);
            peaks.hwm_kib = peaks.hwm_kib.max(now.hwm_kib);
            peaks.samples += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(peaks)
    })
}
