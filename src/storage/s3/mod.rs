//! S3 and S3-compatible storage through `aws-sdk-s3`.
//!
//! Credentials come from aws-config's default chain (environment, profile, SSO, web
//! identity, IMDS), so walfetch never sees or stores a secret of its own. The SDK's own
//! retries are off: each call here is one request, classified; the [`super::retry`]
//! decorator retries them so that every retry is logged with its object and cause. A
//! body cut short is resumed here, with a ranged GET from the byte where it broke
//! (pinned to the object's ETag), instead of starting over.
//!
//! [`classify`] turns each failed request into one of walfetch's error kinds (only S3's
//! own `NoSuchKey` on a GET proves absence); [`reader`] is the body that resumes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::RequestPayer;
use aws_sdk_s3::Client;
use tokio::runtime::Runtime;

use super::{Chunk, ObjectMeta, ObjectReader, Page, PendingRange, Storage};
use crate::constants::CONNECT_TIMEOUT;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::settings::{Connection, Location, S3Options};
/// What every request to an object carries, set on any request builder: the SSE-C
/// headers (none without a key) and the requester-pays header (when the requester pays).
macro_rules! object_options {
    ($request:expr, $remote:expr) => {{
        let (algorithm, key, md5) = $remote.sse_c();
        $request
            .set_sse_customer_algorithm(algorithm)
            .set_sse_customer_key(key)
            .set_sse_customer_key_md5(md5)
            .set_request_payer($remote.payer())
    }};
}

use classify::{causes, classify, Op};
use reader::{ReaderContext, S3Reader};

mod classify;
mod reader;

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
        self.call(Op::List, &format!("listing {url}"), fut)
    }

    /// Runs request `fut` (an `op`; `what` names it in errors) within the I/O timeout,
    /// its failure classified.
    fn call<T, E>(&self, op: Op, what: &str, fut: impl Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match self.runtime.block_on(async { tokio::time::timeout(self.timeout, fut).await }) {
            Err(_) => Err(Error::new(ErrorKind::Unreachable, format!("{what}: request timed out"))),
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(classify(&self.remote, op, what, &e)),
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

/// The bucket and server requests go to (for messages), and what every request to it
/// must carry.
#[derive(Debug)]
pub(crate) struct Remote {
    pub(crate) bucket: String,
    /// The endpoint URL, or "S3" for AWS's own.
    pub(crate) endpoint: String,
    /// SSE-C and requester-pays.
    pub(crate) options: S3Options,
}

impl Remote {
    /// `x-amz-request-payer`, when the requester pays.
    pub(crate) fn payer(&self) -> Option<RequestPayer> {
        self.options.requester_pays.then_some(RequestPayer::Requester)
    }

    /// The SSE-C headers: algorithm, key, key MD5 (all `None` without a key).
    pub(crate) fn sse_c(&self) -> (Option<String>, Option<String>, Option<String>) {
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
        let head = self.client.head_object().bucket(&self.bucket).key(self.full_key(key));
        let fut = object_options!(head, self.remote).send();
        match self.call(Op::Head, &url, fut) {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
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
        self.runtime.block_on(async {
            let body = ByteStream::read_from()
                .file(tokio::fs::File::from_std(file))
                .build()
                .await
                .map_err(|e| Error::new(ErrorKind::LocalIo, format!("reading the upload for {url}: {e}")))?;
            let put = self.client.put_object().bucket(&self.bucket).key(self.full_key(key));
            object_options!(put, self.remote)
                .body(body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&self.remote, Op::Put, &format!("uploading {url}"), &e))
        })
    }
}
