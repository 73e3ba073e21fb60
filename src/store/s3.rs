//! S3 object store (AWS S3 and S3-compatible servers such as MinIO or SeaweedFS).
//!
//! URL: `s3://BUCKET[/PREFIX]`; object `K` is stored at `PREFIX/K` (or `K` without a prefix).
//!
//! Configuration comes from the environment:
//! - `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`: a custom endpoint, addressed path-style;
//! - `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile's region, else `us-east-1`;
//! - credentials: environment variables, the shared profile files (`AWS_PROFILE`), web identity
//!   tokens and container (ECS/EKS) credentials. The EC2 instance metadata service is never
//!   probed implicitly (only a profile that names it as `credential_source` uses it);
//! - `QUACKFS_S3_RETRY_TIMEOUT` (e.g. `5s`, default 30 s): how long transient failures (network,
//!   5xx, throttling) are retried before an operation fails.
//!
//! Objects are created with a conditional `If-None-Match: *` PUT, so an existing object is never
//! replaced. Files above [`S3Options::multipart_threshold`] are uploaded in parts straight from
//! disk; the completion is conditional too, preceded by a HEAD check for servers that ignore the
//! condition there. Request checksums are only computed where S3 requires them (several
//! S3-compatible servers reject the SDK's default CRC checksums); layer objects carry their own
//! crc32c per extent.
//!
//! TLS trusts the system roots (which honour `SSL_CERT_FILE` / `SSL_CERT_DIR`) and, when
//! `AWS_CA_BUNDLE` names a PEM file, the certificates in it as well (as the AWS CLI does), so an
//! endpoint behind a private CA works. A bundle that cannot be read or holds no certificate is a
//! configuration error, reported before any request.

use super::{validate_key, ObjectMeta, ObjectStore, StoreError};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

/// Default for how long transient failures are retried.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variable overriding [`DEFAULT_RETRY_TIMEOUT`] (humantime syntax: `5s`, `2m`).
pub const RETRY_TIMEOUT_ENV: &str = "QUACKFS_S3_RETRY_TIMEOUT";
/// Default bound on concurrent requests per store.
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;
/// Files larger than this are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
/// Default part size of multipart uploads.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;

/// S3's limits on multipart uploads.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// Time to establish a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time one attempt of a request is given, however little of the retry budget is left.
const MIN_ATTEMPT_TIME: Duration = Duration::from_secs(2);
/// Slowest transfer rate assumed when bounding an attempt that moves a body of known size.
const MIN_TRANSFER_RATE: u64 = 1024 * 1024;
/// First and largest pause between attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Chunk size when comparing a stored object with local bytes.
const COMPARE_CHUNK: u64 = 8 * 1024 * 1024;

/// A configuration problem (bad URL or settings); nothing was contacted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct S3ConfigError(String);

/// Tunables of an [`S3Store`]; [`S3Options::from_env`] reads them from the environment.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Custom endpoint (addressed path-style), e.g. `http://127.0.0.1:9000`.
    pub endpoint_url: Option<String>,
    /// Region; `None`: from the environment or profile, else `us-east-1`.
    pub region: Option<String>,
    /// Explicit credentials instead of the credential chain.
    pub credentials: Option<Credentials>,
    /// How long transient failures are retried (per operation).
    pub retry_timeout: Duration,
    /// Most requests in flight at once.
    pub max_concurrency: usize,
    /// Files larger than this are uploaded in parts.
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (raised when needed to stay within 10 000 parts).
    pub part_size: u64,
    /// Parts of one upload sent at once.
    pub part_concurrency: usize,
    /// A PEM file of extra CA certificates to trust (`AWS_CA_BUNDLE`).
    pub ca_bundle: Option<std::path::PathBuf>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint_url: None,
            region: None,
            credentials: None,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            part_concurrency: 4,
            ca_bundle: None,
        }
    }
}

impl S3Options {
    /// Defaults, with the endpoint from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` and the retry
    /// timeout from `QUACKFS_S3_RETRY_TIMEOUT`.
    pub fn from_env() -> Result<S3Options, S3ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoint_url = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"));
        let retry_timeout = crate::tuning::duration(RETRY_TIMEOUT_ENV)
            .map_err(S3ConfigError)?
            .unwrap_or(DEFAULT_RETRY_TIMEOUT);
        Ok(S3Options {
            endpoint_url,
            retry_timeout,
            ca_bundle: var("AWS_CA_BUNDLE").map(std::path::PathBuf::from),
            ..S3Options::default()
        })
    }
}

/// An HTTPS client (rustls, as the SDK's default) that trusts the system roots plus the
/// certificates of the PEM file `bundle`.
fn https_client_trusting(
    bundle: &std::path::Path,
) -> Result<aws_sdk_s3::config::SharedHttpClient, S3ConfigError> {
    use aws_smithy_http_client::tls;
    let pem = std::fs::read(bundle).map_err(|e| {
        S3ConfigError(format!(
            "AWS_CA_BUNDLE={}: cannot read the CA bundle: {e}",
            bundle.display()
        ))
    })?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(S3ConfigError(format!(
            "AWS_CA_BUNDLE={}: no PEM certificate in the file",
            bundle.display()
        )));
    }
    let trust = tls::TrustStore::empty()
        .with_native_roots(true)
        .with_pem_certificate(pem);
    let ctx = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| {
            S3ConfigError(format!(
                "AWS_CA_BUNDLE={}: unusable CA bundle: {e}",
                bundle.display()
            ))
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(ctx)
        .build_https())
}

/// Bucket and key prefix of an `s3://BUCKET[/PREFIX]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]` (a trailing `/` is ignored).
    pub fn parse(url: &str) -> Result<S3Location, S3ConfigError> {
        let bad = |why: &str| {
            S3ConfigError(format!(
                "invalid S3 URL {url:?}: {why} (expected s3://BUCKET[/PREFIX])"
            ))
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        if rest.contains(['?', '#', '@']) {
            return Err(bad(
                "query strings, fragments and credentials are not allowed",
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, '.' or '-'",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && validate_key(prefix).is_err() {
            return Err(bad(
                "the prefix must be '/'-separated names of letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    /// The canonical URL.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
            .trim_end_matches('/')
            .to_string()
    }
}

/// An [`ObjectStore`] on an S3 bucket.
pub struct S3Store {
    client: Client,
    loc: S3Location,
    /// For messages: the endpoint URL, or "AWS S3 (REGION)".
    endpoint: String,
    opts: S3Options,
    permits: Arc<Semaphore>,
    /// Set once the bucket is known to exist (checked before the first write).
    bucket_ok: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.loc.url())
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// How one attempt failed.
enum Fail {
    /// Returned as is, no retry.
    Final(StoreError),
    /// Worth retrying; describes the failure.
    Transient(String),
}

/// What an SDK error says, in a form the store's mapping can match on.
struct Failure {
    status: Option<u16>,
    code: Option<String>,
    /// A network-level or server-side problem that may go away.
    transient: bool,
    /// Full description (error chain).
    text: String,
    /// `x-amz-bucket-region` of the response, if any.
    bucket_region: Option<String>,
}

impl Failure {
    fn from_sdk<E>(e: &SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let bucket_region = e
            .raw_response()
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_string);
        let code = e.code().map(str::to_string);
        let transient = match e {
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
            // Everything but a request the SDK could not even build: refused and reset
            // connections, timeouts, and "other" (a connection that closed before the response
            // came, as when the server is killed mid-request). Retrying a create is safe: a
            // retried PUT that finds the object checks it holds our bytes (`settle`).
            // Certificate problems are told apart in `fail` and never retried.
            SdkError::DispatchFailure(d) => !d.is_user(),
            SdkError::ServiceError(_) => {
                matches!(status, Some(408 | 429 | 500 | 502 | 503 | 504))
                    || matches!(
                        code.as_deref(),
                        Some(
                            "SlowDown"
                                | "Throttling"
                                | "ThrottlingException"
                                | "RequestThrottled"
                                | "RequestTimeout"
                                | "InternalError"
                                | "ServiceUnavailable"
                                | "ConditionalRequestConflict"
                                | "OperationAborted"
                        )
                    )
            }
            _ => false,
        };
        let text = match (e.code(), e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            _ => match status {
                Some(s) => format!("HTTP {s}: {}", error_chain(e)),
                None => error_chain(e),
            },
        };
        // One line: the credential chain reports each provider on a line of its own.
        let text = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Failure {
            status,
            code,
            transient,
            text,
            bucket_region,
        }
    }

    /// A TLS handshake that failed on the server's certificate: retrying cannot help.
    fn is_untrusted_certificate(&self) -> bool {
        self.status.is_none()
            && self.text.contains("TLS handshake")
            && (self.text.contains("certificate") || self.text.contains("Certificate"))
    }

    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    fn not_found(&self) -> bool {
        !self.is("NoSuchBucket")
            && (self.status == Some(404) || self.is("NoSuchKey") || self.is("NotFound"))
    }

    fn precondition_failed(&self) -> bool {
        self.status == Some(412) || self.is("PreconditionFailed")
    }
}

/// `e` and its sources joined by ": ", skipping a source already contained in the text before.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn modified_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    // Unknown: "now" keeps a fresh object safe from age-based cleanup.
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

/// Pause before attempt `attempt + 1`: exponential, capped, with jitter (50 to 100 %).
fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let jitter = 500 + (uuid::Uuid::new_v4().as_u128() % 501) as u32; // per mille
    base * jitter / 1000
}

fn size_allowance(bytes: u64) -> Duration {
    Duration::from_secs(bytes / MIN_TRANSFER_RATE)
}

impl S3Store {
    /// Opens `s3://BUCKET[/PREFIX]` with options from the environment. Contacts nothing: a
    /// wrong endpoint, bucket or credentials show up on the first request (or [`check`](Self::check)).
    pub async fn open(url: &str) -> Result<S3Store, S3ConfigError> {
        S3Store::open_with(url, S3Options::from_env()?).await
    }

    /// Opens `s3://BUCKET[/PREFIX]` with explicit options.
    pub async fn open_with(url: &str, opts: S3Options) -> Result<S3Store, S3ConfigError> {
        let loc = S3Location::parse(url)?;
        if opts.max_concurrency == 0 || opts.part_concurrency == 0 {
            return Err(S3ConfigError(
                "S3 concurrency limits must be at least 1".into(),
            ));
        }
        if opts.part_size < MIN_PART_SIZE {
            return Err(S3ConfigError(format!(
                "S3 part size {} is below S3's minimum of 5 MiB",
                opts.part_size
            )));
        }
        if let Some(ep) = &opts.endpoint_url {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(S3ConfigError(format!(
                    "invalid S3 endpoint {ep:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
                )));
            }
        }

        // Region: explicit, environment, profile, else us-east-1 (never instance metadata).
        let region = match &opts.region {
            Some(r) => Region::new(r.clone()),
            None => RegionProviderChain::first_try(
                aws_config::environment::EnvironmentVariableRegionProvider::new(),
            )
            .or_else(aws_config::profile::ProfileFileRegionProvider::new())
            .or_else(Region::from_static("us-east-1"))
            .region()
            .await
            .unwrap_or_else(|| Region::from_static("us-east-1")),
        };

        // Credentials: the default chain minus the EC2 instance metadata provider.
        let credentials = match &opts.credentials {
            Some(c) => SharedCredentialsProvider::new(c.clone()),
            None => {
                let conf = ProviderConfig::default().with_region(Some(region.clone()));
                SharedCredentialsProvider::new(
                    CredentialsProviderChain::first_try(
                        "Environment",
                        aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
                    )
                    .or_else(
                        "Profile",
                        aws_config::profile::ProfileFileCredentialsProvider::builder()
                            .configure(&conf)
                            .build(),
                    )
                    .or_else(
                        "WebIdentityToken",
                        aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder()
                            .configure(&conf)
                            .build(),
                    )
                    .or_else(
                        "EcsContainer",
                        aws_config::ecs::EcsCredentialsProvider::builder()
                            .configure(&conf)
                            .build(),
                    ),
                )
            }
        };

        let connect_timeout = CONNECT_TIMEOUT.min(opts.retry_timeout.max(MIN_ATTEMPT_TIME));
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(bundle) = &opts.ca_bundle {
            loader = loader.http_client(https_client_trusting(bundle)?);
        }
        let shared = loader
            .region(region.clone())
            .credentials_provider(credentials)
            // Retries are ours (bounded by time, with messages naming the endpoint).
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(connect_timeout)
                    .build(),
            )
            .load()
            .await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &opts.endpoint_url {
            conf = conf.endpoint_url(ep.clone()).force_path_style(true);
        }
        let endpoint = match &opts.endpoint_url {
            Some(ep) => ep.clone(),
            None => format!("AWS S3 ({region})"),
        };
        Ok(S3Store {
            client: Client::from_conf(conf.build()),
            loc,
            endpoint,
            permits: Arc::new(Semaphore::new(opts.max_concurrency)),
            bucket_ok: tokio::sync::OnceCell::new(),
            opts,
        })
    }

    /// The endpoint, for messages: its URL, or `AWS S3 (REGION)`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Checks that the bucket exists and the credentials give access to it (one HEAD request).
    pub async fn check(&self) -> Result<(), StoreError> {
        self.head_bucket(false).await
    }

    /// HEAD of the bucket; with `tolerate_denied`, a 403 counts as success (a policy may allow
    /// object access under the prefix but not this request).
    async fn head_bucket(&self, tolerate_denied: bool) -> Result<(), StoreError> {
        let what = format!("HEAD s3://{}", self.loc.bucket);
        self.retry(&what, Some(Duration::ZERO), |_| async {
            match self
                .client
                .head_bucket()
                .bucket(&self.loc.bucket)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let f = Failure::from_sdk(&e);
                    if f.status == Some(404) {
                        Err(Fail::Final(self.no_bucket()))
                    } else if tolerate_denied && f.status == Some(403) {
                        Ok(())
                    } else {
                        Err(self.fail("HEAD", "", f))
                    }
                }
            }
        })
        .await
    }

    /// Before the first write, makes sure the bucket exists: some servers (SeaweedFS) create a
    /// missing bucket on PUT, so a mistyped bucket name would silently get one.
    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        self.bucket_ok
            .get_or_try_init(|| self.head_bucket(true))
            .await
            .map(|_| ())
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.loc.prefix)
    }

    fn no_bucket(&self) -> StoreError {
        StoreError::Backend(format!(
            "bucket {} does not exist at {}",
            self.loc.bucket, self.endpoint
        ))
    }

    /// The generic mapping of a failed request `op` on `key` (empty for bucket-level requests).
    fn fail(&self, op: &str, key: &str, f: Failure) -> Fail {
        let target = if key.is_empty() {
            self.loc.url()
        } else {
            format!("{}/{key}", self.loc.url())
        };
        let ep = &self.endpoint;
        if f.is("NoSuchBucket") {
            return Fail::Final(self.no_bucket());
        }
        if f.not_found() {
            return Fail::Final(StoreError::NotFound(key.to_string()));
        }
        if f.is_untrusted_certificate() {
            return Fail::Final(StoreError::Backend(format!(
                "{ep}: {op} {target}: the server's TLS certificate is not trusted ({}): if the \
                 endpoint uses a private CA, point AWS_CA_BUNDLE at a PEM file holding it",
                f.text
            )));
        }
        if f.transient {
            return Fail::Transient(f.text);
        }
        let msg = if matches!(
            f.code.as_deref(),
            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied")
        ) || (f.status == Some(403) && f.code.is_none())
        {
            format!(
                "{ep} refused {op} {target} ({}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
                 (or AWS_PROFILE) and the bucket's permissions",
                f.text
            )
        } else if f.is("RequestTimeTooSkewed") {
            format!(
                "{ep} refused {op} {target} ({}): the system clock is off",
                f.text
            )
        } else if f.status == Some(301)
            || matches!(
                f.code.as_deref(),
                Some("PermanentRedirect" | "AuthorizationHeaderMalformed")
            )
        {
            let hint = match &f.bucket_region {
                Some(r) => format!("the bucket is in region {r}: set AWS_REGION={r}"),
                None => "check AWS_REGION".to_string(),
            };
            format!("{ep} refused {op} {target} ({}): {hint}", f.text)
        } else if f.text.contains("credential") {
            format!(
                "{op} {target} at {ep}: no usable AWS credentials ({}): set \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
                f.text
            )
        } else {
            format!("{op} {target} at {ep} failed: {}", f.text)
        };
        Fail::Final(StoreError::Backend(msg))
    }

    /// Runs `attempt` (given the attempt number, from 1) until it succeeds, fails for good, or
    /// transient failures have lasted the retry timeout. Each attempt holds a concurrency permit
    /// and, when `extra` is set, is cut off after the remaining budget (at least
    /// [`MIN_ATTEMPT_TIME`]) plus `extra`; with `extra = None` the attempt bounds itself.
    async fn retry<T, F, Fut>(
        &self,
        what: &str,
        extra: Option<Duration>,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        let budget = self.opts.retry_timeout;
        let mut start = None;
        let mut n = 0u32;
        loop {
            n += 1;
            let result = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| StoreError::Backend("S3 store closed".into()))?;
                let started = *start.get_or_insert_with(Instant::now);
                match extra {
                    Some(extra) => {
                        let limit = budget
                            .saturating_sub(started.elapsed())
                            .max(MIN_ATTEMPT_TIME)
                            + extra;
                        match tokio::time::timeout(limit, attempt(n)).await {
                            Ok(r) => r,
                            Err(_) => Err(Fail::Transient(format!("no answer within {limit:?}"))),
                        }
                    }
                    None => attempt(n).await,
                }
            };
            let msg = match result {
                Ok(v) => return Ok(v),
                Err(Fail::Final(e)) => return Err(e),
                Err(Fail::Transient(msg)) => msg,
            };
            let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
            if elapsed >= budget {
                return Err(StoreError::Backend(format!(
                    "{what} at {} (bucket {}) still failing after {n} attempt{} in {:.1}s: {msg} \
                     (retried for up to {}; {RETRY_TIMEOUT_ENV} changes this)",
                    self.endpoint,
                    self.loc.bucket,
                    if n == 1 { "" } else { "s" },
                    elapsed.as_secs_f64(),
                    humantime::format_duration(budget),
                )));
            }
            tracing::debug!(what, attempt = n, error = %msg, "S3 request failed, retrying");
            // The last pause is shortened so that a final attempt starts within the budget.
            tokio::time::sleep(backoff(n).min(budget - elapsed)).await;
        }
    }

    /// Whether the object at `key` holds exactly `data` (used when a retried create finds the
    /// object present: the earlier attempt may have succeeded without us hearing of it).
    async fn holds_bytes(&self, key: &str, data: &Bytes) -> Result<bool, StoreError> {
        match self.get(key).await {
            Ok(stored) => Ok(stored == *data),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Like [`holds_bytes`](Self::holds_bytes), against the file at `path` of `size` bytes,
    /// compared a chunk at a time.
    async fn holds_file(&self, key: &str, path: &Path, size: u64) -> Result<bool, StoreError> {
        match self.head(key).await {
            Ok(m) if m.size == size => {}
            Ok(_) | Err(StoreError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::from_io(key, e))?;
        let mut offset = 0;
        while offset < size {
            let end = (offset + COMPARE_CHUNK).min(size);
            let stored = self.get_range(key, offset, end).await?;
            let mut local = vec![0u8; (end - offset) as usize];
            file.read_exact(&mut local)
                .await
                .map_err(|e| StoreError::from_io(key, e))?;
            if stored[..] != local[..] {
                return Ok(false);
            }
            offset = end;
        }
        Ok(true)
    }

    /// Settles a conditional create that found the key taken on attempt `n`: on the first attempt
    /// the object is someone else's; after a retry it may be our own earlier attempt, which
    /// `ours` checks.
    async fn settle<Fut>(
        &self,
        key: &str,
        outcome: Created,
        ours: impl FnOnce() -> Fut,
    ) -> Result<(), StoreError>
    where
        Fut: Future<Output = Result<bool, StoreError>>,
    {
        match outcome {
            Created::Yes => Ok(()),
            Created::Exists(1) => Err(StoreError::AlreadyExists(key.to_string())),
            Created::Exists(_) => {
                if ours().await? {
                    Ok(())
                } else {
                    Err(StoreError::AlreadyExists(key.to_string()))
                }
            }
        }
    }

    /// One conditional PUT of the file at `path` (`size` bytes), streamed from disk.
    async fn put_file_single(&self, key: &str, path: &Path, size: u64) -> Result<(), StoreError> {
        let full = self.full_key(key);
        let what = format!("PUT {}/{key}", self.loc.url());
        let outcome = self
            .retry(&what, Some(size_allowance(size)), |n| {
                let full = full.clone();
                async move {
                    let body = ByteStream::read_from()
                        .path(path)
                        .length(Length::Exact(size))
                        .build()
                        .await
                        .map_err(|e| Fail::Final(StoreError::from_io(key, io_error(e))))?;
                    match self
                        .client
                        .put_object()
                        .bucket(&self.loc.bucket)
                        .key(full)
                        .if_none_match("*")
                        .content_length(size as i64)
                        .body(body)
                        .send()
                        .await
                    {
                        Ok(_) => Ok(Created::Yes),
                        Err(e) => {
                            let f = Failure::from_sdk(&e);
                            if f.precondition_failed() {
                                Ok(Created::Exists(n))
                            } else {
                                Err(self.fail("PUT", key, f))
                            }
                        }
                    }
                }
            })
            .await?;
        self.settle(key, outcome, || self.holds_file(key, path, size))
            .await
    }

    /// Multipart upload of the file at `path` (`size` bytes), parts streamed from disk; aborted
    /// on failure.
    async fn put_file_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), StoreError> {
        // Fail early when the key is taken (the completion checks again).
        match self.head(key).await {
            Ok(_) => return Err(StoreError::AlreadyExists(key.to_string())),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let full = self.full_key(key);
        let target = format!("{}/{key}", self.loc.url());
        let upload_id = self
            .retry(
                &format!("start of the multipart upload of {target}"),
                Some(Duration::ZERO),
                |_| async {
                    let out = self
                        .client
                        .create_multipart_upload()
                        .bucket(&self.loc.bucket)
                        .key(&full)
                        .send()
                        .await
                        .map_err(|e| self.fail_upload("CreateMultipartUpload", key, &e))?;
                    out.upload_id.ok_or_else(|| {
                        Fail::Final(StoreError::Backend(format!(
                            "{} gave no upload id for {target}",
                            self.endpoint
                        )))
                    })
                },
            )
            .await?;
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.loc.bucket.clone(),
            key: full.clone(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let result = self
            .upload_and_complete(key, &full, &upload_id, path, size)
            .await;
        if result.is_err() {
            self.abort_upload(&full, &upload_id).await;
        }
        guard.armed = false;
        result
    }

    async fn upload_and_complete(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), StoreError> {
        let target = format!("{}/{key}", self.loc.url());
        let part_size = self.opts.part_size.max(size.div_ceil(MAX_PARTS));
        let count = size.div_ceil(part_size);
        let mut parts: Vec<CompletedPart> = futures::stream::iter(0..count)
            .map(|i| {
                let offset = i * part_size;
                let len = part_size.min(size - offset);
                self.upload_part(key, full, upload_id, path, i as i32 + 1, offset, len)
            })
            .buffer_unordered(self.opts.part_concurrency)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number);

        // Servers that ignore If-None-Match on completion still get this check (racy there).
        match self.head(key).await {
            Ok(_) => return Err(StoreError::AlreadyExists(key.to_string())),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        let conditional = std::sync::atomic::AtomicBool::new(true);
        let outcome = self
            .retry(
                &format!("completion of the multipart upload of {target}"),
                Some(size_allowance(size / 16)),
                |n| {
                    let upload = upload.clone();
                    let conditional = &conditional;
                    async move {
                        let mut req = self
                            .client
                            .complete_multipart_upload()
                            .bucket(&self.loc.bucket)
                            .key(full)
                            .upload_id(upload_id)
                            .multipart_upload(upload);
                        let with_condition = conditional.load(std::sync::atomic::Ordering::Relaxed);
                        if with_condition {
                            req = req.if_none_match("*");
                        }
                        match req.send().await {
                            Ok(_) => Ok(Created::Yes),
                            Err(e) => {
                                let f = Failure::from_sdk(&e);
                                if f.precondition_failed() {
                                    Ok(Created::Exists(n))
                                } else if n > 1 && f.is("NoSuchUpload") {
                                    // An earlier attempt may have completed it.
                                    Ok(Created::Exists(n))
                                } else if with_condition
                                    && (f.status == Some(501) || f.is("NotImplemented"))
                                {
                                    tracing::warn!(
                                        endpoint = %self.endpoint,
                                        "no conditional CompleteMultipartUpload here: \
                                         relying on the HEAD check"
                                    );
                                    conditional.store(false, std::sync::atomic::Ordering::Relaxed);
                                    Err(Fail::Transient(f.text))
                                } else {
                                    Err(self.fail_upload("CompleteMultipartUpload", key, &e))
                                }
                            }
                        }
                    }
                },
            )
            .await?;
        self.settle(key, outcome, || self.holds_file(key, path, size))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        path: &Path,
        number: i32,
        offset: u64,
        len: u64,
    ) -> Result<CompletedPart, StoreError> {
        let what = format!("upload of part {number} of {}/{key}", self.loc.url());
        self.retry(&what, Some(size_allowance(len)), |_| async move {
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| Fail::Final(StoreError::from_io(key, io_error(e))))?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.loc.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| self.fail_upload("UploadPart", key, &e))?;
            let etag = out.e_tag.ok_or_else(|| {
                Fail::Final(StoreError::Backend(format!(
                    "{} gave no ETag for part {number} of {}/{key}",
                    self.endpoint,
                    self.loc.url()
                )))
            })?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .e_tag(etag)
                .build())
        })
        .await
    }

    /// Mapping for requests about a multipart upload: a missing upload is not a missing object.
    fn fail_upload<E>(&self, op: &str, key: &str, e: &SdkError<E, HttpResponse>) -> Fail
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let f = Failure::from_sdk(e);
        if f.is("NoSuchUpload") || f.not_found() {
            return Fail::Final(StoreError::Backend(format!(
                "{op} {}/{key} at {}: the multipart upload is gone ({})",
                self.loc.url(),
                self.endpoint,
                f.text
            )));
        }
        self.fail(op, key, f)
    }

    /// Best-effort abort of a failed multipart upload (one attempt, bounded).
    async fn abort_upload(&self, full: &str, upload_id: &str) {
        let req = self
            .client
            .abort_multipart_upload()
            .bucket(&self.loc.bucket)
            .key(full)
            .upload_id(upload_id);
        match tokio::time::timeout(CONNECT_TIMEOUT, req.send()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if Failure::from_sdk(&e).is("NoSuchUpload") => {}
            Ok(Err(e)) => tracing::warn!(
                key = full, upload_id, error = %error_chain(&e),
                "cannot abort multipart upload (a bucket lifecycle rule can clean it up)"
            ),
            Err(_) => tracing::warn!(
                key = full,
                upload_id,
                "abort of multipart upload timed out (a bucket lifecycle rule can clean it up)"
            ),
        }
    }

    /// GET of the object or a range of it, retried. Returns the body and whether the server
    /// answered with a range (`Content-Range`); 416 gives `None`.
    async fn fetch(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<Option<(Bytes, bool)>, StoreError> {
        let what = format!("GET {}/{key}", self.loc.url());
        self.retry(&what, None, |_| {
            let range = range.clone();
            async move {
                let Some(out) = self.send_get(key, range).await? else {
                    return Ok(None);
                };
                let ranged = out.content_range().is_some();
                let len = out.content_length().unwrap_or(0).max(0) as u64;
                let limit = self.body_time(len);
                let body = match tokio::time::timeout(limit, out.body.collect()).await {
                    Err(_) => {
                        return Err(Fail::Transient(format!(
                            "body of {len} bytes not received within {limit:?}"
                        )))
                    }
                    Ok(Err(e)) => return Err(body_error(&e)),
                    Ok(Ok(body)) => body.into_bytes(),
                };
                // A Content-Length of 0 may mean "not sent": only a positive one is checked.
                if len > 0 && body.len() as u64 != len {
                    return Err(Fail::Transient(format!(
                        "body truncated: {} of {len} bytes",
                        body.len()
                    )));
                }
                Ok(Some((body, ranged)))
            }
        })
        .await
    }

    /// One GET of `key` (a `range` of it), its body not read yet; `None` for 416 (the range
    /// starts past the end).
    async fn send_get(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, Fail> {
        let budget = self.opts.retry_timeout.max(MIN_ATTEMPT_TIME);
        let sent = self
            .client
            .get_object()
            .bucket(&self.loc.bucket)
            .key(self.full_key(key))
            .set_range(range)
            .send();
        match tokio::time::timeout(budget, sent).await {
            Err(_) => Err(Fail::Transient(format!("no answer within {budget:?}"))),
            Ok(Ok(out)) => Ok(Some(out)),
            Ok(Err(e)) => {
                let f = Failure::from_sdk(&e);
                if f.status == Some(416) || f.is("InvalidRange") {
                    return Ok(None);
                }
                Err(self.fail("GET", key, f))
            }
        }
    }

    /// How long a body of `len` bytes may take to arrive.
    fn body_time(&self, len: u64) -> Duration {
        self.opts.retry_timeout.max(MIN_ATTEMPT_TIME) + size_allowance(len)
    }
}

/// The `Range` header for bytes `[start, end)` (`end > start`).
fn range_header(start: u64, end: u64) -> String {
    // Servers parse positions as signed 64-bit numbers: ask for "to the end" past that.
    if end > i64::MAX as u64 {
        format!("bytes={start}-")
    } else {
        format!("bytes={start}-{}", end - 1)
    }
}

/// Most bytes `get_range_pieces` reserves up front (a longer range grows its buffer).
const MAX_PIECES_BUFFER: u64 = 64 * 1024 * 1024;

/// A body that could not be read to its end: transient.
fn body_error(e: &(dyn std::error::Error + 'static)) -> Fail {
    Fail::Transient(format!("reading the body: {}", error_chain(e)))
}

fn io_error(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

/// Outcome of a conditional create.
enum Created {
    Yes,
    /// The key existed (412) on attempt `n` (or the upload vanished after a retry).
    Exists(u32),
}

/// Aborts a multipart upload if the future driving it is dropped half way.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let req = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id);
            handle.spawn(async move {
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, req.send()).await;
            });
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        self.ensure_bucket().await?;
        let full = self.full_key(key);
        let what = format!("PUT {}/{key}", self.loc.url());
        let len = data.len() as u64;
        let outcome = self
            .retry(&what, Some(size_allowance(len)), |n| {
                let (full, data) = (full.clone(), data.clone());
                async move {
                    match self
                        .client
                        .put_object()
                        .bucket(&self.loc.bucket)
                        .key(full)
                        .if_none_match("*")
                        .content_length(len as i64)
                        .body(ByteStream::from(data))
                        .send()
                        .await
                    {
                        Ok(_) => Ok(Created::Yes),
                        Err(e) => {
                            let f = Failure::from_sdk(&e);
                            if f.precondition_failed() {
                                Ok(Created::Exists(n))
                            } else {
                                Err(self.fail("PUT", key, f))
                            }
                        }
                    }
                }
            })
            .await?;
        self.settle(key, outcome, || self.holds_bytes(key, &data))
            .await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        validate_key(key)?;
        let meta = tokio::fs::symlink_metadata(path)
            .await
            .map_err(|e| StoreError::from_io(key, e))?;
        if !meta.is_file() {
            return Err(StoreError::from_io(
                key,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} is not a regular file", path.display()),
                ),
            ));
        }
        let size = meta.len();
        self.ensure_bucket().await?;
        if size > self.opts.multipart_threshold {
            self.put_file_multipart(key, path, size).await?;
        } else {
            self.put_file_single(key, path, size).await?;
        }
        if let Err(e) = tokio::fs::remove_file(path).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove uploaded file");
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        Ok(self
            .fetch(key, None)
            .await?
            .map(|(body, _)| body)
            .unwrap_or_default())
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        if end <= start {
            return Ok(Bytes::new());
        }
        match self.fetch(key, Some(range_header(start, end))).await? {
            None => Ok(Bytes::new()),
            Some((body, true)) => {
                // Never more than asked for, whatever the server sent.
                let want = usize::try_from(end - start).unwrap_or(usize::MAX);
                Ok(body.slice(..body.len().min(want)))
            }
            Some((body, false)) => {
                // The server ignored the range and sent the whole object.
                let len = body.len() as u64;
                let (s, e) = (start.min(len) as usize, end.min(len) as usize);
                Ok(body.slice(s..e))
            }
        }
    }

    async fn get_range_pieces(
        &self,
        key: &str,
        start: u64,
        lens: &[u32],
        piece: &mut (dyn FnMut(usize, Bytes) + Send),
    ) -> Result<(), StoreError> {
        validate_key(key)?;
        // Each piece is handed over as soon as the body has brought its bytes (cut from one
        // buffer, no copy beyond reading the body into it). A failed attempt is retried from the
        // first piece not handed over yet.
        let what = format!("GET {}/{key}", self.loc.url());
        // The next piece to hand over and where it starts, kept across attempts.
        let next = std::sync::Mutex::new((0usize, start, piece));
        let next = &next;
        let lock = || next.lock().unwrap_or_else(|p| p.into_inner());
        self.retry(&what, None, |_| async move {
            let (first, from) = {
                let n = lock();
                (n.0, n.1)
            };
            let want = super::span(&lens[first.min(lens.len())..]);
            if want == 0 {
                // (Empty pieces are all that is left.)
                let mut n = lock();
                while n.0 < lens.len() {
                    let i = n.0;
                    (n.2)(i, Bytes::new());
                    n.0 += 1;
                }
                return Ok(());
            }
            let range = range_header(from, from.saturating_add(want));
            let Some(out) = self.send_get(key, Some(range)).await? else {
                return Ok(());
            };
            // A server that ignored the range sends the whole object: its head is skipped.
            let mut skip = if out.content_range().is_some() {
                0
            } else {
                from
            };
            let len = out.content_length().unwrap_or(0).max(0) as u64;
            let limit = self.body_time(len.min(want));
            let mut body = out.body;
            let mut buf = bytes::BytesMut::with_capacity(want.min(MAX_PIECES_BUFFER) as usize);
            let mut got = 0u64;
            let read = async {
                while let Some(chunk) = body.try_next().await.map_err(|e| body_error(&e))? {
                    got += chunk.len() as u64;
                    let cut = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                    skip -= cut as u64;
                    buf.extend_from_slice(&chunk[cut..]);
                    let mut n = lock();
                    while let Some(&l) = lens.get(n.0) {
                        if buf.len() < l as usize {
                            break;
                        }
                        let bytes = buf.split_to(l as usize).freeze();
                        let i = n.0;
                        (n.2)(i, bytes);
                        n.0 += 1;
                        n.1 += u64::from(l);
                    }
                    if n.0 == lens.len() {
                        // (All handed over: whatever more a server sends is not read.)
                        return Ok(());
                    }
                }
                // A Content-Length of 0 may mean "not sent": only a positive one is checked.
                if len > 0 && got != len {
                    return Err(Fail::Transient(format!(
                        "body truncated: {got} of {len} bytes"
                    )));
                }
                Ok(())
            };
            match tokio::time::timeout(limit, read).await {
                Err(_) => Err(Fail::Transient(format!(
                    "body of {len} bytes not received within {limit:?}"
                ))),
                Ok(r) => r,
            }
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let full = self.full_key(key);
        let what = format!("HEAD {}/{key}", self.loc.url());
        self.retry(&what, Some(Duration::ZERO), |_| {
            let full = full.clone();
            async move {
                let out = self
                    .client
                    .head_object()
                    .bucket(&self.loc.bucket)
                    .key(full)
                    .send()
                    .await
                    .map_err(|e| self.fail("HEAD", key, Failure::from_sdk(&e)))?;
                Ok(ObjectMeta {
                    key: key.to_string(),
                    size: out.content_length().unwrap_or(0).max(0) as u64,
                    modified: modified_time(out.last_modified()),
                })
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let full = self.full_key(key);
        let what = format!("DELETE {}/{key}", self.loc.url());
        let result = self
            .retry(&what, Some(Duration::ZERO), |_| {
                let full = full.clone();
                async move {
                    self.client
                        .delete_object()
                        .bucket(&self.loc.bucket)
                        .key(full)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| self.fail("DELETE", key, Failure::from_sdk(&e)))
                }
            })
            .await;
        match result {
            Err(StoreError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let root = &self.loc.prefix;
        let full_prefix = format!("{root}{prefix}");
        let what = format!("LIST {}/{prefix}*", self.loc.url());
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry(&what, Some(Duration::ZERO), |_| {
                    let (full_prefix, token) = (full_prefix.clone(), token.clone());
                    async move {
                        self.client
                            .list_objects_v2()
                            .bucket(&self.loc.bucket)
                            .prefix(full_prefix)
                            .set_continuation_token(token)
                            .send()
                            .await
                            .map_err(|e| {
                                let f = Failure::from_sdk(&e);
                                if f.status == Some(404) {
                                    Fail::Final(self.no_bucket())
                                } else {
                                    self.fail("LIST", "", f)
                                }
                            })
                    }
                })
                .await?;
            for obj in page.contents() {
                let Some(rel) = obj.key().and_then(|k| k.strip_prefix(root.as_str())) else {
                    continue;
                };
                if !rel.starts_with(prefix) || validate_key(rel).is_err() {
                    continue; // directory markers and foreign names
                }
                out.push(ObjectMeta {
                    key: rel.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: modified_time(obj.last_modified()),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) if token.as_deref() != Some(next) => {
                    token = Some(next.to_string())
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    fn describe(&self) -> String {
        self.loc.url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let loc = S3Location::parse("s3://my-bucket").unwrap();
        assert_eq!(
            (loc.bucket.as_str(), loc.prefix.as_str()),
            ("my-bucket", "")
        );
        assert_eq!(loc.url(), "s3://my-bucket");
        let loc = S3Location::parse("s3://my-bucket/").unwrap();
        assert_eq!(loc.prefix, "");
        let loc = S3Location::parse("s3://b.example/a/b/").unwrap();
        assert_eq!(
            (loc.bucket.as_str(), loc.prefix.as_str()),
            ("b.example", "a/b/")
        );
        assert_eq!(loc.url(), "s3://b.example/a/b");
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-bucket",
            "s3://bucket/../x",
            "s3://bucket//x",
            "s3://bucket/x?y=1",
            "s3://key:secret@bucket",
            "file:///tmp",
            "s3://bucket/sp ace",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= FIRST_BACKOFF && backoff(1) >= FIRST_BACKOFF / 2);
        assert!(backoff(4) >= FIRST_BACKOFF * 4);
        assert!(backoff(40) <= MAX_BACKOFF);
    }
}
