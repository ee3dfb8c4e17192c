//! S3 Object Lock (WORM) calls, the one job of this module. The
//! `object_store` crate (0.14) sends no Object Lock headers and has no
//! retention or legal-hold calls, so these few requests are built here and
//! signed with the same crate's SigV4 signer ([`AwsAuthorizer`]) and the
//! same credential provider the target's store uses (configuration,
//! environment, instance or web identity), over the same reqwest-based HTTP
//! client: no second signer, no second TLS stack (DECISIONS.md #39).
//!
//! - PutObjectRetention / GetObjectRetention (`?retention`),
//! - PutObjectLegalHold / GetObjectLegalHold (`?legal-hold`),
//! - DeleteObject of one version (the start-up [`probe`] only);
//!
//! and what the archive does with them: [`lock_segment`] and
//! [`hold_segment`] over one archived segment's three objects.
//!
//! Bodies that S3 requires an integrity header for carry `Content-MD5`
//! (AWS, MinIO and Ceph RGW all take it; MD5 here is an integrity check the
//! protocol asks for, not a security measure: the SigV4 signature covers
//! the body's SHA-256).
//!
//! No call retries by itself: the compactor retries whole uploads with its
//! own backoff, and every call is bounded by [`LOCK_CALL_TIMEOUT`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use md5::{Digest as _, Md5};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{
    HttpClient, HttpConnector, HttpRequest, HttpRequestBody, HttpResponse, ReqwestConnector,
};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use trail_log::Lsn;

use crate::error::{ArchiveError, LockFailure, Result};
use crate::layout::{INDEX_SUFFIX, MANIFEST_SUFFIX, SEGMENT_SUFFIX};
use crate::target::ArchiveTarget;

/// The longest one Object Lock call may take, connection included.
pub const LOCK_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest XML answer read (S3's retention, legal-hold and error
/// documents are a few hundred bytes).
const XML_ANSWER_BYTES_MAX: u64 = 64 << 10;
/// How long the probe object is locked. GOVERNANCE for one day: long
/// enough that the lock is surely still in force seconds later when the
/// probe tries to delete it (the store judges by its own clock, which may
/// be off from ours by minutes), short enough that the probe objects of
/// many restarts do not pile up: in GOVERNANCE mode an operator with
/// `s3:BypassGovernanceRetention` can remove them at once (the probe tries
/// that itself), and after a day anyone can; a COMPLIANCE lock would pin
/// them, and their storage bill, for the whole period with no way out.
pub const PROBE_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Where probe objects go, under the target's prefix. Log names match
/// `[a-z0-9][a-z0-9_-]*`, so no log's objects ever live here.
pub const PROBE_DIR: &str = "_probe";

/// S3's XML namespace.
const S3_XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Characters percent-encoded in a key's path segments and in query
/// values: all but RFC 3986's unreserved ones, as SigV4 canonicalizes.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An Object Lock retention mode. `Compliance` is the stronger: nobody,
/// not even the account's root user, may shorten it or delete the version
/// before its date; `Governance` may be lifted by a user holding
/// `s3:BypassGovernanceRetention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    /// S3 `GOVERNANCE`.
    Governance,
    /// S3 `COMPLIANCE`.
    Compliance,
}

impl LockMode {
    /// The mode as S3 spells it.
    #[must_use]
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// The mode as the configuration spells it (`governance`,
    /// `compliance`).
    #[must_use]
    pub fn as_config(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }

    /// Parses S3's or the configuration's spelling (any case).
    #[must_use]
    pub fn parse(text: &str) -> Option<LockMode> {
        match text.to_ascii_lowercase().as_str() {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// The retention every archived object gets: `mode`, until `retention`
/// after it was locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockPolicy {
    /// The mode.
    pub mode: LockMode,
    /// How long after locking an object stays locked; more than zero.
    pub retention: Duration,
}

/// One object version's retention, as the store reports it (whole
/// seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The mode.
    pub mode: LockMode,
    /// Until when, unix seconds.
    pub retain_until_unix_secs: i64,
}

impl Retention {
    /// Whether this retention is at least as strong as `other`: the same or
    /// a stronger mode, and at least as long.
    #[must_use]
    pub fn covers(&self, other: &Retention) -> bool {
        self.mode >= other.mode && self.retain_until_unix_secs >= other.retain_until_unix_secs
    }
}

/// What the start-up probe found out about the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LockProbe {
    /// Lock mode is off: nothing was probed.
    #[default]
    Off,
    /// Not run yet (the compactor probes at start).
    Pending,
    /// A GOVERNANCE-locked probe version could not be deleted (403
    /// AccessDenied): the store enforces Object Lock.
    Enforced,
    /// The store took the retention but then deleted the locked version:
    /// it does not enforce Object Lock.
    NotEnforced(String),
    /// The bucket has no Object Lock configuration (S3 answers
    /// PutObjectRetention with InvalidRequest): it must be created with
    /// Object Lock enabled (which also turns versioning on).
    NotEnabled(String),
    /// The store does not implement the Object Lock API.
    Unsupported(String),
    /// The probe could not finish (the store unreachable, a refusal that
    /// says nothing about enforcement): tried again later.
    Failed(String),
}

impl LockProbe {
    /// A short name for logs and the CLI.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            LockProbe::Off => "off",
            LockProbe::Pending => "pending",
            LockProbe::Enforced => "enforced",
            LockProbe::NotEnforced(_) => "not enforced",
            LockProbe::NotEnabled(_) => "not enabled on the bucket",
            LockProbe::Unsupported(_) => "not supported by the store",
            LockProbe::Failed(_) => "probe failed",
        }
    }

    /// What was found, in words (empty for `Off`, `Pending`, `Enforced`).
    #[must_use]
    pub fn detail(&self) -> &str {
        match self {
            LockProbe::Off | LockProbe::Pending | LockProbe::Enforced => "",
            LockProbe::NotEnforced(detail)
            | LockProbe::NotEnabled(detail)
            | LockProbe::Unsupported(detail)
            | LockProbe::Failed(detail) => detail,
        }
    }
}

/// Object Lock calls against one S3 bucket.
#[derive(Clone, Debug)]
pub struct ObjectLockClient {
    http: HttpClient,
    credentials: AwsCredentialProvider,
    /// `https://endpoint/bucket` (path-style, as the target's store).
    bucket_url: url::Url,
    region: String,
}

/// An answer read: status, its S3 error code and message (for errors),
/// the headers, and the body when it is XML.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    xml: String,
}

impl Answer {
    fn code(&self) -> String {
        xml_text(&self.xml, "Code").unwrap_or_default()
    }

    fn failure(&self) -> LockFailure {
        let code = self.code();
        let message = xml_text(&self.xml, "Message").unwrap_or_default();
        let status = self.status.as_u16();
        if self.status.is_server_error() && self.status != StatusCode::NOT_IMPLEMENTED {
            return LockFailure::Unreachable(format!("{status} {code} {message}"));
        }
        match (status, code.as_str()) {
            (400, "InvalidRequest") => LockFailure::NotEnabled(message),
            (501, _) | (405, _) | (_, "NotImplemented") => {
                LockFailure::Unsupported(format!("{status} {code} {message}"))
            }
            _ => LockFailure::Refused {
                status,
                code,
                message,
            },
        }
    }
}

impl ObjectLockClient {
    /// A client for `bucket` at `endpoint` (`https://host[:port]`, or
    /// `http://` to loopback when `allow_http`), signing with
    /// `credentials` for `region`. Does no IO.
    ///
    /// # Errors
    /// [`ArchiveError::Config`] when the URL does not parse or the HTTP
    /// client cannot be built.
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        allow_http: bool,
        credentials: AwsCredentialProvider,
    ) -> Result<ObjectLockClient> {
        let bucket_url = url::Url::parse(&format!(
            "{}/{}",
            endpoint.trim_end_matches('/'),
            utf8_percent_encode(bucket, STRICT)
        ))
        .map_err(|error| {
            ArchiveError::Config(format!(
                "object lock: endpoint {endpoint:?} with bucket {bucket:?} is no URL ({error})"
            ))
        })?;
        let options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(LOCK_CALL_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        let http = ReqwestConnector::default()
            .connect(&options)
            .map_err(|error| ArchiveError::Config(format!("object lock: HTTP client: {error}")))?;
        Ok(ObjectLockClient {
            http,
            credentials,
            bucket_url,
            region: region.to_owned(),
        })
    }

    fn url(&self, key: &Path, subresource: &str, version: Option<&str>) -> url::Url {
        let mut path = self.bucket_url.path().trim_end_matches('/').to_owned();
        for segment in key.as_ref().split('/') {
            path.push('/');
            path.extend(utf8_percent_encode(segment, STRICT));
        }
        let mut url = self.bucket_url.clone();
        url.set_path(&path);
        let mut query = subresource.to_owned();
        if let Some(version) = version {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("versionId=");
            query.extend(utf8_percent_encode(version, STRICT));
        }
        url.set_query((!query.is_empty()).then_some(query.as_str()));
        url
    }

    /// Sends one signed request; reads the body only when it is XML.
    async fn call(
        &self,
        operation: &'static str,
        key: &Path,
        method: Method,
        url: url::Url,
        body: Option<String>,
        extra_headers: &[(&'static str, &'static str)],
    ) -> Result<Answer> {
        let fail = |failure: LockFailure| ArchiveError::Lock {
            operation,
            key: key.to_string(),
            failure,
        };
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|error| fail(LockFailure::Unreachable(format!("credentials: {error}"))))?;
        let mut builder = http::Request::builder().method(method).uri(url.as_str());
        let payload = match body {
            Some(body) => {
                let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
                builder = builder
                    .header("content-type", "application/xml")
                    .header("content-md5", md5);
                HttpRequestBody::from(Bytes::from(body))
            }
            None => HttpRequestBody::empty(),
        };
        for (name, value) in extra_headers {
            builder = builder.header(*name, HeaderValue::from_static(value));
        }
        let mut request: HttpRequest = builder.body(payload).map_err(|error| {
            fail(LockFailure::Refused {
                status: 0,
                code: "InvalidRequest".into(),
                message: format!("request not built: {error}"),
            })
        })?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|error| fail(LockFailure::Unreachable(format!("signing: {error}"))))?;
        let response: HttpResponse = self
            .http
            .execute(request)
            .await
            .map_err(|error| fail(LockFailure::Unreachable(error.to_string())))?;
        let (parts, body) = response.into_parts();
        let is_xml = parts
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("xml"));
        let length = parts
            .headers
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        // Only XML documents are read (a retention, a legal hold, an
        // error); anything else (moto answers GetObjectRetention with the
        // object itself) is dropped unread.
        let xml = if is_xml && length.is_none_or(|length| length <= XML_ANSWER_BYTES_MAX) {
            let bytes = body
                .bytes()
                .await
                .map_err(|error| fail(LockFailure::Unreachable(error.to_string())))?;
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            String::new()
        };
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            xml,
        })
    }

    /// Sets `retention` on `key` (the version `version`, else the current
    /// one): PutObjectRetention.
    ///
    /// # Errors
    /// [`ArchiveError::Lock`]: `NotEnabled` for a bucket without Object
    /// Lock, `Refused` when the store refuses (shortening a lock, lifting a
    /// COMPLIANCE one, no permission), `Unreachable` to retry later.
    pub async fn put_retention(
        &self,
        key: &Path,
        version: Option<&str>,
        retention: Retention,
    ) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"{S3_XMLNS}\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            retention.mode.as_s3(),
            format_date(retention.retain_until_unix_secs)
        );
        self.put_setting("set the retention of", key, "retention", version, body)
            .await
    }

    /// The retention of `key` (the version `version`, else the current
    /// one), `None` when it has none: GetObjectRetention. Reads S3's
    /// `<Retention>` document, or, when a store answers with the object
    /// and its `x-amz-object-lock-*` headers instead (moto 5.2 does), those
    /// headers.
    ///
    /// # Errors
    /// [`ArchiveError::Lock`] when the store fails or refuses.
    pub async fn get_retention(
        &self,
        key: &Path,
        version: Option<&str>,
    ) -> Result<Option<Retention>> {
        const OPERATION: &str = "read the retention of";
        let url = self.url(key, "retention", version);
        let answer = self
            .call(OPERATION, key, Method::GET, url, None, &[])
            .await?;
        if answer.status.is_success() {
            let from_xml =
                xml_text(&answer.xml, "Mode").zip(xml_text(&answer.xml, "RetainUntilDate"));
            let header = |name: &str| {
                answer
                    .headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            };
            let from_headers =
                header("x-amz-object-lock-mode").zip(header("x-amz-object-lock-retain-until-date"));
            let Some((mode, until)) = from_xml.or(from_headers) else {
                return Ok(None);
            };
            let parsed = LockMode::parse(&mode).zip(parse_date(&until));
            return match parsed {
                Some((mode, retain_until_unix_secs)) => Ok(Some(Retention {
                    mode,
                    retain_until_unix_secs,
                })),
                None => Err(ArchiveError::Lock {
                    operation: OPERATION,
                    key: key.to_string(),
                    failure: LockFailure::NotApplied(format!(
                        "the store reports mode {mode:?} until {until:?}, which do not parse"
                    )),
                }),
            };
        }
        // S3 answers an object without retention with 404
        // NoSuchObjectLockConfiguration.
        if answer.status == StatusCode::NOT_FOUND
            && answer.code() == "NoSuchObjectLockConfiguration"
        {
            return Ok(None);
        }
        Err(ArchiveError::Lock {
            operation: OPERATION,
            key: key.to_string(),
            failure: answer.failure(),
        })
    }

    /// Makes sure `key`'s version `version` is locked at least as `policy`
    /// asks from `now_unix_secs` on, and reads it back: a lock already
    /// there that covers it (an earlier attempt's, a longer bucket default)
    /// is kept; a weaker one is extended (never shortened, never turned
    /// from COMPLIANCE to GOVERNANCE, which S3 refuses). Returns the
    /// retention the store reports after.
    ///
    /// # Errors
    /// [`ArchiveError::Lock`] when a call fails, or `NotApplied` when the
    /// store accepted the retention but reads back a weaker one.
    pub async fn ensure_retention(
        &self,
        key: &Path,
        version: Option<&str>,
        policy: LockPolicy,
        now_unix_secs: i64,
    ) -> Result<Retention> {
        let retention_secs = i64::try_from(policy.retention.as_secs()).unwrap_or(i64::MAX);
        let wanted = Retention {
            mode: policy.mode,
            retain_until_unix_secs: now_unix_secs.saturating_add(retention_secs),
        };
        let current = self.get_retention(key, version).await?;
        if let Some(current) = current {
            if current.covers(&wanted) {
                return Ok(current);
            }
        }
        let target = match current {
            Some(current) => Retention {
                mode: current.mode.max(wanted.mode),
                retain_until_unix_secs: current
                    .retain_until_unix_secs
                    .max(wanted.retain_until_unix_secs),
            },
            None => wanted,
        };
        self.put_retention(key, version, target).await?;
        match self.get_retention(key, version).await? {
            Some(after) if after.covers(&target) => Ok(after),
            after => Err(ArchiveError::Lock {
                operation: "verify the retention of",
                key: key.to_string(),
                failure: LockFailure::NotApplied(format!(
                    "asked for {} until {}, the store reports {}",
                    target.mode.as_s3(),
                    format_date(target.retain_until_unix_secs),
                    after.map_or_else(
                        || "no retention".to_owned(),
                        |after| format!(
                            "{} until {}",
                            after.mode.as_s3(),
                            format_date(after.retain_until_unix_secs)
                        )
                    )
                )),
            }),
        }
    }

    /// Sets (`on`) or clears the legal hold of `key`'s version `version`
    /// (else the current one): PutObjectLegalHold.
    ///
    /// # Errors
    /// [`ArchiveError::Lock`] when the store fails or refuses.
    pub async fn put_legal_hold(&self, key: &Path, version: Option<&str>, on: bool) -> Result<()> {
        let body = format!(
            "<LegalHold xmlns=\"{S3_XMLNS}\"><Status>{}</Status></LegalHold>",
            if on { "ON" } else { "OFF" }
        );
        self.put_setting("set the legal hold of", key, "legal-hold", version, body)
            .await
    }

    /// PUTs an XML `body` to `key`'s `subresource` (`retention`,
    /// `legal-hold`) of version `version`; any answer but success is a
    /// [`ArchiveError::Lock`] naming `operation`.
    async fn put_setting(
        &self,
        operation: &'static str,
        key: &Path,
        subresource: &str,
        version: Option<&str>,
        body: String,
    ) -> Result<()> {
        let url = self.url(key, subresource, version);
        let answer = self
            .call(operation, key, Method::PUT, url, Some(body), &[])
            .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        Err(ArchiveError::Lock {
            operation,
            key: key.to_string(),
            failure: answer.failure(),
        })
    }

    /// Whether `key`'s version `version` (else the current one) is under a
    /// legal hold: GetObjectLegalHold.
    ///
    /// # Errors
    /// [`ArchiveError::Lock`] when the store fails or refuses.
    pub async fn get_legal_hold(&self, key: &Path, version: Option<&str>) -> Result<bool> {
        const OPERATION: &str = "read the legal hold of";
        let url = self.url(key, "legal-hold", version);
        let answer = self
            .call(OPERATION, key, Method::GET, url, None, &[])
            .await?;
        if answer.status.is_success() {
            return Ok(xml_text(&answer.xml, "Status").is_some_and(|status| status == "ON"));
        }
        if answer.status == StatusCode::NOT_FOUND
            && answer.code() == "NoSuchObjectLockConfiguration"
        {
            return Ok(false);
        }
        Err(ArchiveError::Lock {
            operation: OPERATION,
            key: key.to_string(),
            failure: answer.failure(),
        })
    }

    /// Deletes `key`'s version `version` (the current one when `None`);
    /// with `bypass_governance`, asks to lift a GOVERNANCE lock
    /// (`x-amz-bypass-governance-retention`). For the probe, and for tests.
    ///
    /// # Errors
    /// [`ArchiveError::Lock`], `Refused` with status 403 and code
    /// `AccessDenied` when a lock (or a legal hold) keeps the version.
    pub async fn delete_version(
        &self,
        key: &Path,
        version: Option<&str>,
        bypass_governance: bool,
    ) -> Result<()> {
        const OPERATION: &str = "delete the version of";
        let url = self.url(key, "", version);
        let bypass: &[(&'static str, &'static str)] = if bypass_governance {
            &[("x-amz-bypass-governance-retention", "true")]
        } else {
            &[]
        };
        let answer = self
            .call(OPERATION, key, Method::DELETE, url, None, bypass)
            .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        Err(ArchiveError::Lock {
            operation: OPERATION,
            key: key.to_string(),
            failure: answer.failure(),
        })
    }
}

/// Whether `error` is a store refusing to delete a locked version: 403
/// AccessDenied.
#[must_use]
pub fn is_access_denied(error: &ArchiveError) -> bool {
    matches!(
        error,
        ArchiveError::Lock {
            failure: LockFailure::Refused { status: 403, code, .. },
            ..
        } if code == "AccessDenied"
    )
}

/// Finds out whether the target enforces Object Lock: puts a small probe
/// object under `<prefix>/_probe/lock-<unix-nanos>`, locks it in
/// GOVERNANCE mode for [`PROBE_RETENTION`], then tries to delete that
/// version without the bypass header. Refused with 403 AccessDenied:
/// enforced (the probe then lifts its own lock with the bypass header,
/// best effort). Deleted: not enforced. A bucket without Object Lock
/// (InvalidRequest) or a store without the API is reported as such (and
/// the probe object removed). Never fails: a probe that cannot finish is
/// [`LockProbe::Failed`].
pub async fn probe(store: &dyn ObjectStore, lock: &ObjectLockClient, prefix: &Path) -> LockProbe {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let key = prefix
        .clone()
        .join(PROBE_DIR)
        .join(format!("lock-{}", now.as_nanos()));
    let put = store
        .put(
            &key,
            PutPayload::from_static(b"trail object lock probe: safe to delete\n"),
        )
        .await;
    let version = match put {
        Ok(result) => result.version,
        Err(error) => return LockProbe::Failed(format!("putting the probe object {key}: {error}")),
    };
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let retention = Retention {
        mode: LockMode::Governance,
        retain_until_unix_secs: now_secs
            .saturating_add(i64::try_from(PROBE_RETENTION.as_secs()).unwrap_or(i64::MAX)),
    };
    let remove_unlocked = || async {
        // Best effort: the probe object is not locked, anyone may delete it.
        let _ = store.delete(&key).await;
    };
    match lock
        .put_retention(&key, version.as_deref(), retention)
        .await
    {
        Ok(()) => {}
        Err(ArchiveError::Lock { failure, .. }) => {
            remove_unlocked().await;
            return match failure {
                LockFailure::NotEnabled(message) => LockProbe::NotEnabled(format!(
                    "PutObjectRetention answered InvalidRequest ({message}): the bucket has no Object Lock; create it with Object Lock enabled (x-amz-bucket-object-lock-enabled: true), which turns versioning on"
                )),
                LockFailure::Unsupported(message) => LockProbe::Unsupported(format!(
                    "PutObjectRetention answered {message}: this store does not implement the Object Lock API"
                )),
                other => LockProbe::Failed(format!("PutObjectRetention on {key}: {other}")),
            };
        }
        Err(other) => {
            remove_unlocked().await;
            return LockProbe::Failed(other.to_string());
        }
    }
    let Some(version) = version else {
        // A store that took a retention but names no versions: delete the
        // current object and see whether it goes.
        return match lock.delete_version(&key, None, false).await {
            Ok(()) if store.head(&key).await.is_err() => LockProbe::NotEnforced(format!(
                "the store accepted a retention on {key} but names no object versions, and deleted the locked object"
            )),
            Ok(()) => LockProbe::NotEnforced(format!(
                "the store accepted a retention on {key} but names no object versions (versioning is off); Object Lock needs versioning"
            )),
            Err(error) if is_access_denied(&error) => LockProbe::Enforced,
            Err(error) => LockProbe::Failed(format!("deleting the probe object: {error}")),
        };
    };
    match lock.delete_version(&key, Some(&version), false).await {
        Ok(()) => LockProbe::NotEnforced(format!(
            "the store accepted a GOVERNANCE retention on {key} (version {version}) and then deleted that locked version"
        )),
        Err(error) if is_access_denied(&error) => {
            // Lift our own short lock where the credentials may (best
            // effort: otherwise it expires in a day).
            if let Err(error) = lock.delete_version(&key, Some(&version), true).await {
                tracing::debug!(%error, key = %key, "the probe object stays until its one-day lock expires");
            }
            LockProbe::Enforced
        }
        Err(error) => LockProbe::Failed(format!("deleting the locked probe version: {error}")),
    }
}

/// Now, unix seconds.
#[must_use]
pub fn unix_secs_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// The keys of the archived segment `first..=last` of `log` in the order
/// they are written: segment, sidecar, manifest.
#[must_use]
pub fn segment_keys(target: &ArchiveTarget, log: &str, first: Lsn, last: Lsn) -> [Path; 3] {
    let layout = target.layout(log);
    [SEGMENT_SUFFIX, INDEX_SUFFIX, MANIFEST_SUFFIX].map(|suffix| layout.key(first, last, suffix))
}

/// The current version of `key` (`None` where the store names none).
async fn current_version(target: &ArchiveTarget, key: &Path) -> Result<Option<String>> {
    target
        .store()
        .head(key)
        .await
        .map(|meta| meta.version)
        .map_err(|error| ArchiveError::store("head", key, error))
}

/// Makes sure every object of the archived segment `first..=last` is
/// locked as the target's policy asks (after a crash between an upload and
/// its lock, or for segments archived before lock mode was on). Returns
/// how many objects it checked; 0 without a policy.
///
/// # Errors
/// As [`ObjectLockClient::ensure_retention`]; [`ArchiveError::Store`] when
/// an object cannot be looked up.
pub async fn lock_segment(target: &ArchiveTarget, log: &str, first: Lsn, last: Lsn) -> Result<u64> {
    let Some(policy) = target.lock_policy() else {
        return Ok(0);
    };
    let lock = target.lock_client()?;
    let mut checked = 0;
    for key in segment_keys(target, log, first, last) {
        let version = current_version(target, &key).await?;
        lock.ensure_retention(&key, version.as_deref(), policy, unix_secs_now())
            .await?;
        checked += 1;
    }
    Ok(checked)
}

/// Sets (`on`) or clears the legal hold of every object of the archived
/// segment `first..=last` (their current versions). Returns how many.
///
/// # Errors
/// [`ArchiveError::Lock`] (`NotS3` for a `file://` target) or
/// [`ArchiveError::Store`].
pub async fn hold_segment(
    target: &ArchiveTarget,
    log: &str,
    first: Lsn,
    last: Lsn,
    on: bool,
) -> Result<u64> {
    let lock = target.lock_client()?;
    let mut changed = 0;
    for key in segment_keys(target, log, first, last) {
        let version = current_version(target, &key).await?;
        lock.put_legal_hold(&key, version.as_deref(), on).await?;
        changed += 1;
    }
    Ok(changed)
}

/// `2026-12-03T13:00:00.000Z`, the form S3 writes (and moto parses).
#[must_use]
pub fn format_date(unix_secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix_secs, 0).map_or_else(
        || "9999-12-31T23:59:59.000Z".to_owned(),
        |date| date.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

/// Unix seconds of an RFC 3339 date (`2026-12-03T13:00:00.000Z`,
/// `2026-12-03T13:00:00Z`).
#[must_use]
pub fn parse_date(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|date| date.timestamp())
}

/// The text of the first element named `name` in `xml` (S3's answers are
/// small documents without entities in these fields).
fn xml_text(xml: &str, name: &str) -> Option<String> {
    use quick_xml::events::Event;
    if xml.is_empty() {
        return None;
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    // Bounded: every event consumes input, and the input is at most
    // XML_ANSWER_BYTES_MAX bytes.
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => inside = start.local_name().as_ref() == name.as_bytes(),
            Ok(Event::Text(text)) if inside => {
                return text.decode().ok().map(|text| text.trim().to_owned());
            }
            Ok(Event::End(_)) if inside => return Some(String::new()),
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_in_the_form_s3_writes() {
        assert_eq!(format_date(1_796_302_800), "2026-12-03T13:00:00.000Z");
        assert_eq!(parse_date("2026-12-03T13:00:00.000Z"), Some(1_796_302_800));
        assert_eq!(parse_date("2026-12-03T13:00:00Z"), Some(1_796_302_800));
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn modes_order_and_parse() {
        assert!(LockMode::Compliance > LockMode::Governance);
        assert_eq!(LockMode::parse("GOVERNANCE"), Some(LockMode::Governance));
        assert_eq!(LockMode::parse("compliance"), Some(LockMode::Compliance));
        assert_eq!(LockMode::parse(""), None);
        let strong = Retention {
            mode: LockMode::Compliance,
            retain_until_unix_secs: 100,
        };
        let weak = Retention {
            mode: LockMode::Governance,
            retain_until_unix_secs: 50,
        };
        assert!(strong.covers(&weak));
        assert!(!weak.covers(&strong));
        assert!(!Retention {
            retain_until_unix_secs: 200,
            ..weak
        }
        .covers(&strong));
    }

    #[test]
    fn reads_s3_documents() {
        let retention = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode><RetainUntilDate>2026-12-03T13:00:00.000Z</RetainUntilDate></Retention>";
        assert_eq!(xml_text(retention, "Mode").as_deref(), Some("COMPLIANCE"));
        assert_eq!(
            xml_text(retention, "RetainUntilDate").as_deref(),
            Some("2026-12-03T13:00:00.000Z")
        );
        let error = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(xml_text(error, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_text("<LegalHold xmlns=\"x\"/>", "Status"), None);
        assert_eq!(xml_text("", "Code"), None);
        assert_eq!(xml_text("not xml at all <", "Code"), None);
    }
}
