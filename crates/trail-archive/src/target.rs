//! The archive target: where objects go, through the `object_store` crate.
//! `file://PATH` (a directory; the embedded default lives under the data
//! dir) or `s3://BUCKET/PREFIX` on any S3-compatible store, path-style,
//! with credentials from the configuration or the usual AWS environment
//! variables. Plain HTTP is allowed only for a loopback endpoint. An S3
//! target also carries an [`ObjectLockClient`] for the same bucket and
//! credentials, and optionally a [`LockPolicy`] every archived object gets
//! (`lock.rs`); a `file://` target refuses one.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, RetryConfig};

use crate::error::{ArchiveError, LockFailure, Result};
use crate::layout::LogLayout;
use crate::lock::{LockPolicy, ObjectLockClient};

/// Retries inside one object-store call. Few and short: the compactor
/// retries whole uploads with its own backoff, and a CLI run should fail
/// fast on an unreachable store rather than wait for minutes.
const STORE_RETRIES_MAX: usize = 2;
/// The longest one call spends retrying.
const STORE_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The smallest part S3 takes in a multipart upload (all but the last).
pub const MULTIPART_PART_BYTES_MIN: u64 = 5 << 20;
/// The largest part S3 takes.
pub const MULTIPART_PART_BYTES_MAX: u64 = 5 << 30;
/// The most parts one S3 multipart upload may have.
pub const MULTIPART_PARTS_MAX: u64 = 10_000;

/// When an object goes up in parts (S3 multipart upload) instead of one
/// put: a large segment then needs no single request of its whole size,
/// and the parts go up two at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Multipart {
    /// Objects larger than this many bytes go up in parts.
    pub threshold_bytes: u64,
    /// Bytes of each part but the last.
    pub part_bytes: u64,
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart {
            threshold_bytes: 8 << 20,
            part_bytes: 8 << 20,
        }
    }
}

impl Multipart {
    /// Checks the bounds S3 sets: parts of 5 MiB..=5 GiB (only the last
    /// may be smaller), and a threshold of at least the smallest part (a
    /// smaller object is one put).
    ///
    /// # Errors
    /// [`ArchiveError::Config`] naming the setting out of bounds.
    pub fn validate(&self) -> Result<()> {
        if !(MULTIPART_PART_BYTES_MIN..=MULTIPART_PART_BYTES_MAX).contains(&self.part_bytes) {
            return Err(ArchiveError::Config(format!(
                "multipart part size {} bytes is outside {MULTIPART_PART_BYTES_MIN}..={MULTIPART_PART_BYTES_MAX} (S3 parts are 5 MiB to 5 GiB)",
                self.part_bytes
            )));
        }
        if self.threshold_bytes < MULTIPART_PART_BYTES_MIN {
            return Err(ArchiveError::Config(format!(
                "multipart threshold {} bytes is below {MULTIPART_PART_BYTES_MIN} (S3's smallest part): smaller objects go up in one put",
                self.threshold_bytes
            )));
        }
        Ok(())
    }
}

/// How to reach the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetConfig {
    /// `file:///absolute/path` or `s3://bucket/prefix`.
    pub url: String,
    /// S3 endpoint, e.g. `http://127.0.0.1:9000` (empty: AWS, or
    /// `AWS_ENDPOINT_URL` from the environment).
    pub endpoint: String,
    /// S3 region (empty: `AWS_REGION` / `AWS_DEFAULT_REGION`, else
    /// `us-east-1`).
    pub region: String,
    /// Access key id (empty: `AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// Secret access key (empty: `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
}

/// An open target.
#[derive(Clone, Debug)]
pub struct ArchiveTarget {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    pub(crate) multipart: Multipart,
    url: String,
    /// Object Lock calls on the bucket (S3 targets only).
    lock: Option<Arc<ObjectLockClient>>,
    /// The retention every archived object gets; `None`: no lock.
    lock_policy: Option<LockPolicy>,
}

impl ArchiveTarget {
    /// Opens the target `config` names. Does no network IO.
    ///
    /// # Errors
    /// [`ArchiveError::Config`] for an unknown scheme, a relative path, a
    /// missing bucket, or plain HTTP to a host that is not loopback.
    pub fn open(config: &TargetConfig) -> Result<ArchiveTarget> {
        let url = url::Url::parse(&config.url).map_err(|error| {
            ArchiveError::Config(format!(
                "archive url {:?} does not parse ({error}); use file:///path or s3://bucket/prefix",
                config.url
            ))
        })?;
        match url.scheme() {
            "file" => Self::open_directory(config, &url),
            "s3" => Self::open_s3(config, &url),
            other => Err(ArchiveError::Config(format!(
                "archive url scheme {other:?} is not supported; use file:///path or s3://bucket/prefix"
            ))),
        }
    }

    fn open_directory(config: &TargetConfig, url: &url::Url) -> Result<ArchiveTarget> {
        let path = url.to_file_path().map_err(|()| {
            ArchiveError::Config(format!(
                "archive url {:?} is not an absolute file path",
                config.url
            ))
        })?;
        std::fs::create_dir_all(&path).map_err(|error| ArchiveError::local(&path, error))?;
        let store = LocalFileSystem::new_with_prefix(&path).map_err(|error| {
            ArchiveError::Config(format!("archive directory {}: {error}", path.display()))
        })?;
        Ok(ArchiveTarget {
            store: Arc::new(store),
            prefix: Path::default(),
            multipart: Multipart::default(),
            url: config.url.clone(),
            lock: None,
            lock_policy: None,
        })
    }

    fn open_s3(config: &TargetConfig, url: &url::Url) -> Result<ArchiveTarget> {
        let bucket = url
            .host_str()
            .filter(|bucket| !bucket.is_empty())
            .ok_or_else(|| {
                ArchiveError::Config(format!(
                    "archive url {:?} names no bucket (s3://bucket/prefix)",
                    config.url
                ))
            })?;
        // from_env reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
        // AWS_REGION, AWS_ENDPOINT_URL, ...; explicit settings override it.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_retry(RetryConfig {
                max_retries: STORE_RETRIES_MAX,
                retry_timeout: STORE_RETRY_TIMEOUT,
                ..RetryConfig::default()
            });
        // The endpoint: configured, else the environment's. Plain http is
        // allowed for a loopback endpoint only, whatever AWS_ALLOW_HTTP says.
        let endpoint = [
            config.endpoint.clone(),
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_default(),
            std::env::var("AWS_ENDPOINT").unwrap_or_default(),
        ]
        .into_iter()
        .find(|endpoint| !endpoint.is_empty())
        .unwrap_or_default();
        let mut allow_http = false;
        if !endpoint.is_empty() {
            let parsed = url::Url::parse(&endpoint).map_err(|error| {
                ArchiveError::Config(format!(
                    "archive endpoint {endpoint:?} does not parse ({error})"
                ))
            })?;
            match parsed.scheme() {
                "https" => {}
                "http" if is_loopback(&parsed) => allow_http = true,
                "http" => {
                    return Err(ArchiveError::Config(format!(
                        "archive endpoint {endpoint:?} is plain http to a host that is not loopback; use https"
                    )))
                }
                other => {
                    return Err(ArchiveError::Config(format!(
                        "archive endpoint {endpoint:?} has scheme {other:?}; use https (or http to loopback)"
                    )))
                }
            }
            builder = builder.with_endpoint(endpoint.clone());
        }
        builder = builder.with_allow_http(allow_http);
        let region = if config.region.is_empty() {
            std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".into())
        } else {
            config.region.clone()
        };
        builder = builder.with_region(&region);
        if !config.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&config.access_key_id);
        }
        if !config.secret_access_key.is_empty() {
            builder = builder.with_secret_access_key(&config.secret_access_key);
        }
        let store = builder.build().map_err(|error| {
            ArchiveError::Config(format!("archive target {:?}: {error}", config.url))
        })?;
        let prefix = Path::from(url.path().trim_matches('/'));
        // Object Lock calls go to the same bucket, path-style, signed with
        // the same credential provider (lock.rs).
        let lock_endpoint = if endpoint.is_empty() {
            format!("https://s3.{region}.amazonaws.com")
        } else {
            endpoint
        };
        let lock = ObjectLockClient::new(
            &lock_endpoint,
            bucket,
            &region,
            allow_http,
            Arc::clone(store.credentials()),
        )?;
        Ok(ArchiveTarget {
            store: Arc::new(store),
            prefix,
            multipart: Multipart::default(),
            url: config.url.clone(),
            lock: Some(Arc::new(lock)),
            lock_policy: None,
        })
    }

    /// This target, locking every archived object with `policy` (S3
    /// Object Lock, WORM) before it counts as archived; `None` turns that
    /// off.
    ///
    /// # Errors
    /// [`ArchiveError::Config`] for a `file://` target (a directory cannot
    /// enforce Object Lock) or a zero retention.
    pub fn with_lock_policy(mut self, policy: Option<LockPolicy>) -> Result<ArchiveTarget> {
        if let Some(policy) = policy {
            if self.lock.is_none() {
                return Err(ArchiveError::Config(format!(
                    "{}: {}",
                    self.url,
                    LockFailure::NotS3
                )));
            }
            if policy.retention.is_zero() {
                return Err(ArchiveError::Config(
                    "an Object Lock retention must be longer than zero".into(),
                ));
            }
        }
        self.lock_policy = policy;
        Ok(self)
    }

    /// The retention archived objects get, `None` when they are not locked.
    #[must_use]
    pub fn lock_policy(&self) -> Option<LockPolicy> {
        self.lock_policy
    }

    /// Object Lock calls on this target's bucket.
    ///
    /// # Errors
    /// [`ArchiveError::Lock`] with [`LockFailure::NotS3`] for a `file://`
    /// target.
    pub fn lock_client(&self) -> Result<&ObjectLockClient> {
        self.lock.as_deref().ok_or_else(|| ArchiveError::Lock {
            operation: "reach the Object Lock API of",
            key: self.url.clone(),
            failure: LockFailure::NotS3,
        })
    }

    /// The object store itself (for the probe and tests).
    #[must_use]
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix every object of this target lives under.
    #[must_use]
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Runs the Object Lock probe ([`crate::lock::probe`]) against this
    /// target: [`crate::LockProbe::Off`] when no lock policy is set.
    pub async fn probe_lock(&self) -> crate::lock::LockProbe {
        if self.lock_policy.is_none() {
            return crate::lock::LockProbe::Off;
        }
        match self.lock.as_deref() {
            Some(lock) => crate::lock::probe(self.store.as_ref(), lock, &self.prefix).await,
            None => crate::lock::LockProbe::Unsupported(LockFailure::NotS3.to_string()),
        }
    }

    /// This target, putting objects larger than `multipart.threshold_bytes`
    /// in parts of `multipart.part_bytes` (the default: 8 MiB and 8 MiB).
    ///
    /// # Errors
    /// [`ArchiveError::Config`] for settings outside S3's bounds
    /// ([`Multipart::validate`]).
    pub fn with_multipart(mut self, multipart: Multipart) -> Result<ArchiveTarget> {
        multipart.validate()?;
        self.multipart = multipart;
        Ok(self)
    }

    /// When objects go up in parts.
    #[must_use]
    pub fn multipart(&self) -> Multipart {
        self.multipart
    }

    /// The URL it was opened with.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where `log`'s objects live.
    #[must_use]
    pub fn layout(&self, log: &str) -> LogLayout {
        LogLayout::new(&self.prefix, log)
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        Some(url::Host::Domain(name)) => {
            name == "localhost"
                || name
                    .parse::<IpAddr>()
                    .is_ok_and(|address| address.is_loopback())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: &str) -> TargetConfig {
        TargetConfig {
            url: "s3://bucket/trail/prod".into(),
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            access_key_id: "key".into(),
            secret_access_key: "secret".into(),
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(ArchiveTarget::open(&s3("http://127.0.0.1:9000")).is_ok());
        assert!(ArchiveTarget::open(&s3("http://localhost:9000")).is_ok());
        assert!(ArchiveTarget::open(&s3("http://[::1]:9000")).is_ok());
        assert!(matches!(
            ArchiveTarget::open(&s3("http://10.0.0.5:9000")),
            Err(ArchiveError::Config(_))
        ));
        assert!(ArchiveTarget::open(&s3("https://s3.example.invalid")).is_ok());
        assert!(ArchiveTarget::open(&s3("ftp://127.0.0.1:21")).is_err());
        let target = ArchiveTarget::open(&s3("http://127.0.0.1:9000")).expect("opens");
        assert_eq!(target.prefix.as_ref(), "trail/prod");
    }

    #[test]
    fn multipart_settings_stay_within_s3_bounds() {
        let target = ArchiveTarget::open(&s3("http://127.0.0.1:9000")).expect("opens");
        assert_eq!(target.multipart(), Multipart::default());
        assert!(Multipart::default().validate().is_ok());
        let edge = Multipart {
            threshold_bytes: MULTIPART_PART_BYTES_MIN,
            part_bytes: MULTIPART_PART_BYTES_MAX,
        };
        assert_eq!(
            target
                .clone()
                .with_multipart(edge)
                .map(|t| t.multipart())
                .ok(),
            Some(edge)
        );
        for wrong in [
            Multipart {
                part_bytes: MULTIPART_PART_BYTES_MIN - 1,
                ..Multipart::default()
            },
            Multipart {
                part_bytes: MULTIPART_PART_BYTES_MAX + 1,
                ..Multipart::default()
            },
            Multipart {
                threshold_bytes: MULTIPART_PART_BYTES_MIN - 1,
                ..Multipart::default()
            },
        ] {
            assert!(
                matches!(
                    target.clone().with_multipart(wrong),
                    Err(ArchiveError::Config(_))
                ),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn refuses_unknown_schemes_and_relative_paths() {
        for url in [
            "ftp://x/y",
            "file://remote-host/x",
            "s3:///prefix",
            "not a url",
        ] {
            let config = TargetConfig {
                url: url.into(),
                ..TargetConfig::default()
            };
            assert!(
                matches!(ArchiveTarget::open(&config), Err(ArchiveError::Config(_))),
                "{url}"
            );
        }
    }
}
