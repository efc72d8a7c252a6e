//! S3 and S3-compatible storage through `aws-sdk-s3`.
//!
//! Credentials come from aws-config's default chain (environment, profile, SSO, web
//! identity, IMDS), so walfetch never sees or stores a secret of its own. The SDK's own
//! retries are off: each call here is one request, classified; the [`super::retry`]
//! decorator retries them so that every retry is logged with its object and cause. A
//! body cut short is resumed here, with a ranged GET from the byte where it broke
//! (pinned to the object's ETag), instead of starting over.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::RequestPayer;
use aws_sdk_s3::Client;
use bytes::{Buf, Bytes};
use tokio::runtime::{Handle, Runtime};

use super::retry::{is_transient, Schedule};
use super::{Chunk, ObjectMeta, ObjectReader, Page, PendingRange, RangeAnswer, Storage};
use crate::constants::CONNECT_TIMEOUT;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::settings::{Connection, Location, S3Options};

/// An S3 bucket (and key prefix) as archive storage.
pub struct S3Storage {
    runtime: Runtime,
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    timeout: Duration,
    client: Client,
    bucket: String,
    prefix: String,
    remote: Arc<Remote>,
    /// Resumes of a body cut short, at most (`WALFETCH_MAX_RETRIES`).
    max_retries: usize,
}

impl S3Storage {
    /// Builds a client from the settings and aws-config's default credential chain.
    pub fn connect(settings: &Connection) -> Result<Self> {
        let Location::S3 { bucket, prefix } = &settings.location else {
            unreachable!("S3Storage::connect called for a non-S3 location")
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::LocalIo, format!("cannot start the I/O runtime: {e}")))?;
        let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new("us-east-1"));
        let timeout = settings.tuning.io_timeout;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .read_timeout(timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::disabled());
        if let Some(bundle) = &settings.s3.ca_cert_file {
            loader = loader.http_client(https_trusting(bundle)?);
        }
        if let Some(given) = settings.credentials.clone() {
            // pgBackRest's repo1-s3-key and -key-secret: the settings are the credentials.
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                given.key,
                given.secret,
                given.token,
                None,
                "pgbackrest-settings",
            ));
        }
        let sdk_config = runtime.block_on(loader.load());
        let credentials = sdk_config.credentials_provider();
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(settings.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        tracing::debug!(bucket, prefix, endpoint = ?settings.endpoint, path_style = settings.path_style, "S3 storage configured");
        Ok(S3Storage {
            runtime,
            credentials,
            timeout,
            client,
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            remote: Arc::new(Remote {
                bucket: bucket.clone(),
                endpoint: settings.endpoint.clone().unwrap_or_else(|| "S3".to_string()),
                options: settings.s3.clone(),
            }),
            max_retries: settings.tuning.max_retries,
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn object_url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key(key))
    }

    /// A reader of the whole of `key`, not yet started.
    fn reader(&self, key: &str) -> S3Reader {
        S3Reader::new(
            ReaderContext {
                handle: self.runtime.handle().clone(),
                timeout: self.timeout,
                max_retries: self.max_retries,
                client: self.client.clone(),
                remote: Arc::clone(&self.remote),
            },
            self.full_key(key),
            self.object_url(key),
        )
    }

    /// One ListObjectsV2 request below `prefix` (relative to the archive root).
    fn list_request(
        &self,
        prefix: &str,
        recursive: bool,
        token: Option<String>,
        start_after: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<ListObjectsV2Output> {
        let full_prefix = self.full_key(prefix);
        let url = format!("s3://{}/{}", self.bucket, full_prefix);
        let fut = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .set_delimiter((!recursive).then(|| "/".to_string()))
            .set_continuation_token(token)
            .set_start_after(start_after)
            .set_max_keys(max_keys)
            .set_request_payer(self.remote.payer())
            .send();
        match self.runtime.block_on(async { tokio::time::timeout(self.timeout, fut).await }) {
            Err(_) => Err(Error::new(ErrorKind::Unreachable, format!("listing {url}: request timed out"))),
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(classify(&self.remote, Op::List, &format!("listing {url}"), &e)),
        }
    }

    /// The objects of one listing page, with keys relative to the archive root.
    fn objects_of(&self, page: &ListObjectsV2Output) -> Vec<ObjectMeta> {
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        page.contents()
            .iter()
            .filter_map(|o| {
                // "Folder" markers (zero-byte keys ending in `/`, made by consoles and
                // tools) are no objects of the archive.
                let key = o.key().filter(|k| !k.ends_with('/'))?;
                Some(ObjectMeta {
                    key: key.get(strip..)?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                })
            })
            .collect()
    }
}

/// What a request was, for classifying its failure: only a GET can prove an object
/// absent, and only with S3's own `NoSuchKey` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Head,
    List,
    Put,
}

/// The bucket and server requests go to (for messages), and what every request to it
/// must carry.
#[derive(Debug)]
struct Remote {
    bucket: String,
    /// The endpoint URL, or "S3" for AWS's own.
    endpoint: String,
    /// SSE-C and requester-pays.
    options: S3Options,
}

impl Remote {
    /// `x-amz-request-payer`, when the requester pays.
    fn payer(&self) -> Option<RequestPayer> {
        self.options.requester_pays.then_some(RequestPayer::Requester)
    }

    /// The SSE-C headers: algorithm, key, key MD5 (all `None` without a key).
    fn sse_c(&self) -> (Option<String>, Option<String>, Option<String>) {
        match &self.options.sse_c {
            Some(k) => (Some("AES256".into()), Some(k.key_base64.clone()), Some(k.md5_base64.clone())),
            None => (None, None, None),
        }
    }
}

/// An HTTPS client that trusts the certificates in the PEM file `bundle` instead of
/// the system's roots (`WALG_S3_CA_CERT_FILE`, as wal-g does).
fn https_trusting(bundle: &std::path::Path) -> Result<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let pem = std::fs::read(bundle).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("WALG_S3_CA_CERT_FILE={}: cannot read it: {e}", bundle.display()),
        )
    })?;
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
        .build()
        .map_err(|e| Error::new(ErrorKind::Config, format!("WALG_S3_CA_CERT_FILE={}: {e}", bundle.display())))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

/// Turns an SDK error into a classified walfetch error naming `what`.
fn classify<E>(remote: &Remote, op: Op, what: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            let message = service.err().message().unwrap_or("");
            let status = service.raw().status().as_u16();
            tracing::debug!(what, status, code, "storage answered with an error");
            classify_status(remote, op, what, status, code, message)
        }
        SdkError::TimeoutError(_) => Error::new(ErrorKind::Unreachable, format!("{what}: request timed out")),
        SdkError::DispatchFailure(failure) => {
            if let Some(creds) = credentials_error(err) {
                return Error::new(
                    ErrorKind::Credentials,
                    format!(
                        "{what}: no usable AWS credentials for bucket {} ({creds}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE with a credentials file, or an instance role",
                        remote.bucket
                    ),
                );
            }
            let cause = causes(err);
            if failure.is_io() || failure.is_timeout() {
                Error::connect_failure(format!("{what}: cannot connect to {} ({cause})", remote.endpoint))
            } else {
                Error::new(ErrorKind::Config, format!("{what}: the request could not be sent ({cause})"))
            }
        }
        SdkError::ResponseError(_) => Error::new(
            ErrorKind::Unreachable,
            format!(
                "{what}: {} answered with something other than S3 ({}); check the endpoint",
                remote.endpoint,
                causes(err)
            ),
        ),
        _ => match credentials_error(err) {
            Some(creds) => Error::new(ErrorKind::Credentials, format!("{what}: {creds}")),
            None => Error::new(ErrorKind::Config, format!("{what}: {}", causes(err))),
        },
    }
}

/// The message of a credentials failure somewhere in `err`'s causes, on one line.
fn credentials_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(creds) = e.downcast_ref::<CredentialsError>() {
            return Some(match creds {
                CredentialsError::CredentialsNotLoaded(_) => {
                    "none found: not in the environment, a profile, web identity or instance metadata".to_string()
                }
                other => causes(other),
            });
        }
        current = e.source();
    }
    None
}

/// `err` and its causes by their `Display` (never `Debug`), the last two distinct
/// ones, on one line: "tcp connect error: Connection refused (os error 111)".
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut all: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !all.iter().any(|a| a.contains(&text)) {
            all.push(text);
        }
        current = e.source();
    }
    let start = all.len().saturating_sub(2);
    all[start..].join(": ")
}

/// The answers an access policy written by someone else gives, each said for what it is
/// (all credentials errors: never "absent"):
/// - an object encrypted with a KMS key this identity may not use: S3 answers 403
///   AccessDenied with KMS's message;
/// - a GET or HEAD answered 403 AccessDenied: without `s3:ListBucket`, that is also how
///   S3 answers for an object that does not exist, so the message names both;
/// - a listing answered 403 AccessDenied: the policy lacks `s3:ListBucket`.
fn access_shape(remote: &Remote, op: Op, what: &str, status: u16, code: &str, message: &str) -> Option<Error> {
    let bucket = &remote.bucket;
    let kms = ["kms:", "KMS", "customer master key", "ciphertext refers to"]
        .iter()
        .any(|m| message.contains(m))
        || code.starts_with("KMS.");
    let denied = status == 403 && matches!(code, "AccessDenied" | "" | "Forbidden");
    if kms && (status == 403 || code.starts_with("KMS.")) {
        return Some(Error::new(
            ErrorKind::Credentials,
            format!(
                "{what}: the object is encrypted with a KMS key these credentials may not use ({code}: {message}); ask the bucket's owner for kms:Decrypt on that key (s3:GetObject alone does not read SSE-KMS objects)"
            ),
        ));
    }
    if !denied {
        return None;
    }
    Some(Error::new(
        ErrorKind::Credentials,
        match op {
            Op::List => format!(
                "{what}: access denied to listing bucket {bucket} (HTTP 403): the credentials work but the policy lacks s3:ListBucket (for this prefix); ask for it: walfetch lists to find backups and WAL, and without it S3 answers 403 for objects that do not exist"
            ),
            Op::Get | Op::Head => format!(
                "{what}: access denied (HTTP 403 {}): either these credentials may not read it (s3:GetObject), or the object does not exist and the policy lacks s3:ListBucket (then S3 answers 403 for a missing object, not 404); walfetch cannot tell which, so it is never taken for absent: run `walfetch check`, which tests the list permission",
                if code.is_empty() { "Forbidden" } else { code }
            ),
            Op::Put => format!(
                "{what}: access denied writing to bucket {bucket} (HTTP 403): the policy lacks s3:PutObject for this prefix"
            ),
        },
    ))
}

/// The classification rules, separated from the SDK types so they can be unit-tested.
fn classify_status(remote: &Remote, op: Op, what: &str, status: u16, code: &str, message: &str) -> Error {
    let bucket = &remote.bucket;
    let detail = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    match (op, status, code) {
        // S3 says NoSuchKey in the body of a GET's 404; only that proves absence.
        (Op::Get, 404, "NoSuchKey") => return Error::new(ErrorKind::NotFound, format!("{what}: no such object")),
        // A HEAD answer has no body: any 404 reads "NotFound". Trusted only by writers
        // deciding whether to upload, never to call an object absent to a reader.
        (Op::Head, 404, _) => return Error::new(ErrorKind::NotFound, format!("{what}: no such object")),
        _ => {}
    }
    if let Some(e) = access_shape(remote, op, what, status, code, message) {
        return e;
    }
    match code {
        "NoSuchBucket" => {
            return Error::new(
                ErrorKind::Config,
                format!("{what}: bucket {bucket} does not exist; check the prefix"),
            )
        }
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "TokenRefreshRequired"
        | "InvalidToken"
        | "AccessDenied"
        | "AllAccessDisabled"
        | "AccountProblem" => {
            return Error::new(
                ErrorKind::Credentials,
                format!("{what}: credentials rejected by bucket {bucket} ({detail}); check the access key, secret and session token"),
            )
        }
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
            return Error::new(
                ErrorKind::Config,
                format!("{what}: bucket {bucket} is in another region ({detail}); set AWS_REGION or --region"),
            )
        }
        "SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout" | "InternalError" | "ServiceUnavailable" => {
            return Error::new(ErrorKind::Unreachable, format!("{what}: storage busy ({detail}, HTTP {status})"))
        }
        _ => {}
    }
    match status {
        // A 404 without S3's NoSuchKey: no S3 said it (a proxy, a load balancer, a wrong
        // host or path answered), so nothing is known about the object.
        404 => Error::new(
            ErrorKind::Unreachable,
            format!(
                "{what}: {} answered 404 without an S3 error code ({}), so the object's absence is not proven: something other than S3 answered (a proxy, a gateway, a wrong endpoint); check the endpoint",
                remote.endpoint,
                if code.is_empty() || code == "NotFound" { "no NoSuchKey" } else { code }
            ),
        ),
        401 | 403 => Error::new(
            ErrorKind::Credentials,
            format!(
                "{what}: credentials rejected by bucket {bucket} (HTTP {status} {detail}); check the access key, secret and session token"
            ),
        ),
        301 => Error::new(
            ErrorKind::Config,
            format!("{what}: bucket {bucket} answered with a redirect; set AWS_REGION, or --path-style for S3-compatible servers"),
        ),
        408 | 429 | 500..=599 => Error::new(ErrorKind::Unreachable, format!("{what}: storage error HTTP {status} {detail}")),
        412 => Error::new(ErrorKind::Corrupt, format!("{what}: object changed while it was being read")),
        _ => Error::new(
            ErrorKind::Config,
            format!("{what}: storage refused the request (HTTP {status} {detail})"),
        ),
    }
}

impl Storage for S3Storage {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn open(&self, key: &str) -> Result<ObjectReader> {
        let mut reader = self.reader(key);
        // Open eagerly so that absence and credential errors surface here, not mid-read.
        reader.start_body()?;
        Ok(Box::new(reader))
    }

    fn request_range(&self, key: &str, start: u64, end: u64, etag: Option<&str>) -> Option<PendingRange> {
        Some(self.reader(key).range(start, end, etag.map(str::to_string)).requested())
    }

    fn stat(&self, key: &str) -> Result<Option<u64>> {
        let url = self.object_url(key);
        let (algorithm, sse_key, sse_md5) = self.remote.sse_c();
        let fut = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_sse_customer_algorithm(algorithm)
            .set_sse_customer_key(sse_key)
            .set_sse_customer_key_md5(sse_md5)
            .set_request_payer(self.remote.payer())
            .send();
        match self.runtime.block_on(async { tokio::time::timeout(self.timeout, fut).await }) {
            Err(_) => Err(Error::new(ErrorKind::Unreachable, format!("{url}: request timed out"))),
            Ok(Ok(out)) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Ok(Err(e)) => match classify(&self.remote, Op::Head, &url, &e) {
                err if err.kind() == ErrorKind::NotFound => Ok(None),
                err => Err(err),
            },
        }
    }

    fn list_chunk(&self, prefix: &str, recursive: bool, token: Option<&str>) -> Result<Chunk> {
        let page = self.list_request(prefix, recursive, token.map(str::to_string), None, None)?;
        let next = page
            .next_continuation_token()
            .filter(|_| page.is_truncated().unwrap_or(false))
            .map(str::to_string);
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let folders = page
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().and_then(|f| f.get(strip..)).map(str::to_string))
            .collect();
        Ok(Chunk {
            objects: self.objects_of(&page),
            folders,
            next,
        })
    }

    fn list_page(&self, prefix: &str, start_after: Option<&str>, max_keys: usize) -> Result<Page> {
        let start_after = start_after.map(|k| self.full_key(k));
        let max_keys = i32::try_from(max_keys).unwrap_or(i32::MAX);
        let page = self.list_request(prefix, false, None, start_after, Some(max_keys))?;
        Ok(Page {
            objects: self.objects_of(&page),
            truncated: page.is_truncated().unwrap_or(false),
        })
    }

    fn is_remote(&self) -> bool {
        true
    }

    /// One listing of a few keys under the prefix: folder markers do not count.
    fn holds_objects(&self) -> Result<bool> {
        let page = self.list_request("", true, None, None, Some(100))?;
        Ok(!self.objects_of(&page).is_empty())
    }

    fn credentials_expiry(&self) -> Result<Option<std::time::SystemTime>> {
        use aws_credential_types::provider::ProvideCredentials;
        let Some(provider) = &self.credentials else {
            return Err(Error::new(
                ErrorKind::Credentials,
                format!("no AWS credentials configured for bucket {}", self.bucket),
            ));
        };
        let creds = self.runtime.block_on(async { provider.provide_credentials().await }).map_err(|e| {
            Error::new(
                ErrorKind::Credentials,
                format!("loading AWS credentials for bucket {}: {}", self.bucket, causes(&e)),
            )
        })?;
        Ok(creds.expiry())
    }

    fn put(&self, key: &str, source: &std::fs::File) -> Result<()> {
        let url = self.object_url(key);
        let file = crate::fsutil::reread(source).map_err(|e| Error::local_io(&url, &e))?;
        let (algorithm, sse_key, sse_md5) = self.remote.sse_c();
        self.runtime.block_on(async {
            let body = ByteStream::read_from()
                .file(tokio::fs::File::from_std(file))
                .build()
                .await
                .map_err(|e| Error::new(ErrorKind::LocalIo, format!("reading the upload for {url}: {e}")))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .set_sse_customer_algorithm(algorithm)
                .set_sse_customer_key(sse_key)
                .set_sse_customer_key_md5(sse_md5)
                .set_request_payer(self.remote.payer())
                .body(body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&self.remote, Op::Put, &format!("uploading {url}"), &e))
        })
    }
}

/// Body bytes gathered per wait: the reading thread wakes once per batch instead of
/// once per network chunk (hyper hands over a few KiB at a time; waking per chunk cost
/// a tenth of an S3 restore's CPU in context switches).
const BATCH: usize = 128 * 1024;

/// Streams one object, or the bytes `[base, end)` of it; resumes with a ranged GET
/// (pinned to the first ETag) when the connection breaks, the body stalls, or it ends
/// before its Content-Length.
struct S3Reader {
    ctx: ReaderContext,
    key: String,
    url: String,
    /// First byte of the object this reader reads.
    base: u64,
    /// End (exclusive) of the bytes this reader reads; `None`: the end of the object.
    end: Option<u64>,
    body: Option<ByteStream>,
    /// Received and not yet read, in order.
    chunks: VecDeque<Bytes>,
    /// A failure met after the bytes in `chunks`: handled once they are read.
    deferred: Option<Error>,
    /// The body has ended and was complete.
    ended: bool,
    /// Bytes read so far, from `base`.
    offset: u64,
    /// Bytes this reader returns in all (the first response's Content-Length).
    size: Option<u64>,
    /// The whole object's size, from the first response's Content-Range (ranged reads).
    total: Option<u64>,
    etag: Option<String>,
}

/// What every reader of a storage shares.
#[derive(Clone)]
struct ReaderContext {
    handle: Handle,
    timeout: Duration,
    /// Resumes of a body cut short, at most.
    max_retries: usize,
    client: Client,
    remote: Arc<Remote>,
}

/// How waiting for a batch of body bytes ended.
enum BatchEnd {
    Full,
    End,
    Stalled,
    Broke(String),
}

impl S3Reader {
    /// A reader of `key` (full key; `url` names it in messages), not yet started.
    fn new(ctx: ReaderContext, key: String, url: String) -> S3Reader {
        S3Reader {
            ctx,
            key,
            url,
            base: 0,
            end: None,
            body: None,
            chunks: VecDeque::new(),
            deferred: None,
            ended: false,
            offset: 0,
            size: None,
            total: None,
            etag: None,
        }
    }

    /// Restricts the reader to the bytes `[base, end)`, of the version `etag` if given.
    fn range(mut self, base: u64, end: u64, etag: Option<String>) -> S3Reader {
        self.base = base;
        self.end = Some(end);
        self.etag = etag;
        self
    }

    /// The GET for what is left to read, as a future that owns what it needs (so it
    /// can also run as a task while this reader waits elsewhere).
    fn request(&self) -> impl std::future::Future<Output = Result<GetObjectOutput>> + Send + 'static {
        let (algorithm, sse_key, sse_md5) = self.ctx.remote.sse_c();
        let mut req = self
            .ctx
            .client
            .get_object()
            .bucket(&self.ctx.remote.bucket)
            .key(&self.key)
            .set_sse_customer_algorithm(algorithm)
            .set_sse_customer_key(sse_key)
            .set_sse_customer_key_md5(sse_md5)
            .set_request_payer(self.ctx.remote.payer());
        let from = self.base + self.offset;
        if from > 0 || self.end.is_some() {
            let to = self.end.map(|e| (e - 1).to_string()).unwrap_or_default();
            req = req.range(format!("bytes={from}-{to}")).set_if_match(self.etag.clone());
        }
        let (timeout, remote, url) = (self.ctx.timeout, Arc::clone(&self.ctx.remote), self.url.clone());
        async move {
            match tokio::time::timeout(timeout, req.send()).await {
                Err(_) => Err(Error::new(ErrorKind::Unreachable, format!("{url}: request timed out"))),
                // Past the first byte, the object was there: gone now, it changed under the reader.
                Ok(Err(e)) => match classify(&remote, Op::Get, &url, &e) {
                    err if err.kind() == ErrorKind::NotFound && from > 0 => Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("{url}: the object disappeared while it was being read (at byte {from})"),
                    )),
                    err => Err(err),
                },
                Ok(Ok(out)) => Ok(out),
            }
        }
    }

    /// Takes the answer to [`Self::request`]: its body, and on the first answer the
    /// length, the object's size and its ETag. A server that ignored the range sent the
    /// whole object: this reader then reads (and resumes) the whole object.
    fn accept(&mut self, out: GetObjectOutput) {
        if self.offset == 0 {
            self.size = out.content_length().map(|l| l.max(0) as u64);
            self.total = out.content_range().and_then(|r| r.rsplit('/').next()).and_then(|t| t.parse().ok());
            if self.total.is_none() && self.base == 0 {
                self.end = None;
            }
            if self.etag.is_none() {
                self.etag = out.e_tag().map(str::to_string);
            }
        }
        self.body = Some(out.body);
    }

    fn start_body(&mut self) -> Result<()> {
        let out = self.ctx.handle.block_on(self.request())?;
        self.accept(out);
        Ok(())
    }

    /// Sends the request at once on the runtime and returns what waits for its answer
    /// (one attempt: [`super::retry::Retrying`] retries).
    fn requested(mut self) -> PendingRange {
        let answer = self.ctx.handle.spawn(self.request());
        Box::new(move || {
            let out = match self.ctx.handle.block_on(answer) {
                Ok(result) => result?,
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Unreachable,
                        format!("{}: request task failed: {e}", self.url),
                    ))
                }
            };
            self.accept(out);
            Ok(RangeAnswer {
                total: self.total,
                etag: self.etag.clone(),
                reader: Box::new(self),
            })
        })
    }

    /// Waits for the next batch of body bytes (called with nothing left unread). Bytes
    /// received before a failure are queued first and the failure deferred, so a resume
    /// starts where the reader stopped. `Ok(false)`: the body ended complete.
    fn next_batch(&mut self) -> Result<bool> {
        let Some(body) = self.body.as_mut() else {
            return Ok(false);
        };
        let timeout = self.ctx.timeout;
        let (chunks, end) = self.ctx.handle.block_on(async move {
            let mut chunks = Vec::new();
            let mut got = 0;
            let end = loop {
                match tokio::time::timeout(timeout, body.next()).await {
                    Err(_) => break BatchEnd::Stalled,
                    Ok(Some(Ok(bytes))) => {
                        got += bytes.len();
                        chunks.push(bytes);
                        if got >= BATCH {
                            break BatchEnd::Full;
                        }
                    }
                    Ok(Some(Err(e))) => break BatchEnd::Broke(causes(&e)),
                    Ok(None) => break BatchEnd::End,
                }
            };
            (chunks, end)
        });
        let at = self.offset + chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        // Messages give offsets in the object, also for a reader of one range of it.
        let byte = self.base + at;
        let failure = match end {
            BatchEnd::Full => None,
            BatchEnd::Stalled => Some(format!("{}: no data for {}s at byte {byte}", self.url, self.ctx.timeout.as_secs())),
            BatchEnd::Broke(cause) => Some(format!("{}: connection broke at byte {byte} ({cause})", self.url)),
            BatchEnd::End => match self.size {
                Some(size) if at < size => Some(format!("{}: body ended at byte {byte} of {}", self.url, self.base + size)),
                _ => {
                    self.body = None;
                    self.ended = true;
                    None
                }
            },
        };
        let received = !chunks.is_empty();
        self.chunks.extend(chunks);
        if let Some(message) = failure {
            let err = Error::new(ErrorKind::Unreachable, message);
            if !received {
                return Err(err);
            }
            self.deferred = Some(err);
        }
        Ok(received)
    }

    /// Refills `chunks`; `Ok(false)` at the end of the object.
    fn fill(&mut self) -> Result<bool> {
        let mut schedule = Schedule::new(self.ctx.max_retries);
        loop {
            let result = if let Some(err) = self.deferred.take() {
                Err(err)
            } else if self.ended {
                return Ok(false);
            } else if self.body.is_none() {
                match self.start_body() {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                }
            } else {
                self.next_batch()
            };
            match result {
                Ok(received) => return Ok(received),
                Err(err) if is_transient(&err) => {
                    self.body = None;
                    let Some(delay) = schedule.next_delay(&err) else {
                        return Err(schedule.exhausted(err));
                    };
                    tracing::warn!(object = %self.url, attempt = schedule.attempt() - 1, offset = self.base + self.offset, cause = %err, delay_ms = delay.as_millis() as u64, "resuming download with a ranged GET");
                    std::thread::sleep(delay);
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunks.is_empty() {
            if self.body.is_none() && self.deferred.is_none() && self.size.is_some_and(|s| self.offset >= s) {
                return Ok(0);
            }
            if !self.fill().map_err(Error::into_io)? {
                return Ok(0);
            }
        }
        let front = self.chunks.front_mut().expect("a chunk is queued");
        let n = buf.len().min(front.len());
        buf[..n].copy_from_slice(&front[..n]);
        front.advance(n);
        if front.is_empty() {
            self.chunks.pop_front();
        }
        self.offset += n as u64;
        if let Some(size) = self.size {
            if self.offset > size {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{}: more bytes than its Content-Length {size}", self.url),
                )
                .into_io());
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(bucket: &str) -> Remote {
        Remote {
            bucket: bucket.into(),
            endpoint: "http://127.0.0.1:9000".into(),
            options: S3Options::default(),
        }
    }

    #[test]
    fn classifies_service_answers() {
        let r = remote("b");
        let k = |status, code| classify_status(&r, Op::Get, "s3://b/k", status, code, "").kind();
        assert_eq!(k(404, "NoSuchKey"), ErrorKind::NotFound);
        assert_eq!(k(404, "NoSuchBucket"), ErrorKind::Config);
        assert_eq!(k(403, "SignatureDoesNotMatch"), ErrorKind::Credentials);
        assert_eq!(k(400, "ExpiredToken"), ErrorKind::Credentials);
        assert_eq!(k(403, ""), ErrorKind::Credentials);
        assert_eq!(k(503, "SlowDown"), ErrorKind::Unreachable);
        assert_eq!(k(500, ""), ErrorKind::Unreachable);
        assert_eq!(k(301, "PermanentRedirect"), ErrorKind::Config);
    }

    #[test]
    fn only_nosuchkey_on_a_get_proves_absence() {
        let r = remote("b");
        // What the SDK reports for a 404 with an empty body ("NotFound") or an HTML one ("").
        for code in ["", "NotFound", "NoSuchUpload"] {
            for op in [Op::Get, Op::List, Op::Put] {
                let e = classify_status(&r, op, "s3://b/k", 404, code, "");
                assert_eq!(e.kind(), ErrorKind::Unreachable, "{op:?} {code:?}");
                assert!(
                    e.message().contains("absence is not proven") && e.message().contains("127.0.0.1:9000"),
                    "{e}"
                );
            }
        }
        assert_eq!(
            classify_status(&r, Op::List, "l", 404, "NoSuchKey", "").kind(),
            ErrorKind::Unreachable
        );
        assert_eq!(classify_status(&r, Op::Head, "h", 404, "NotFound", "").kind(), ErrorKind::NotFound);
    }

    #[test]
    fn access_shapes_are_named() {
        let r = remote("b");
        let kms = classify_status(
            &r,
            Op::Get,
            "s3://b/k",
            403,
            "AccessDenied",
            "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.",
        );
        assert_eq!(kms.kind(), ErrorKind::Credentials);
        assert!(kms.message().contains("kms:Decrypt"), "{kms}");
        let list = classify_status(&r, Op::List, "s3://b/wal_005/", 403, "AccessDenied", "Access Denied");
        assert!(list.message().contains("lacks s3:ListBucket"), "{list}");
        for op in [Op::Get, Op::Head] {
            let get = classify_status(&r, op, "s3://b/k", 403, if op == Op::Head { "" } else { "AccessDenied" }, "");
            assert_eq!(get.kind(), ErrorKind::Credentials);
            assert!(get.message().contains("does not exist and the policy lacks s3:ListBucket"), "{get}");
        }
        // Bad credentials keep their own message.
        let bad = classify_status(&r, Op::Get, "s3://b/k", 403, "InvalidAccessKeyId", "");
        assert!(bad.message().contains("check the access key"), "{bad}");
    }

    #[test]
    fn credential_messages_name_the_bucket() {
        let e = classify_status(
            &remote("mybucket"),
            Op::Get,
            "s3://mybucket/k",
            403,
            "InvalidAccessKeyId",
            "bad key",
        );
        assert!(e.message().contains("mybucket"));
        assert!(e.message().contains("credentials rejected"));
    }
}
