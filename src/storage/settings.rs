//! What opening an archive's storage takes: where it is, how to reach it, the limits of
//! its requests and the options a provider's bucket may require. Resolved from flags and
//! the environment by [`crate::config`]; storage reads only these.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::constants::{IO_TIMEOUT, MAX_RETRIES, RANGE_PART_SIZE};

/// Where the archive lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An S3 (or S3-compatible) bucket and a key prefix without leading or trailing `/`.
    S3 { bucket: String, prefix: String },
    /// A local directory (the embedded default backend).
    File { root: PathBuf },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::File { root } => write!(f, "file://{}", root.display()),
        }
    }
}

/// S3 credentials given as settings. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// Access key id.
    pub key: String,
    /// Secret access key.
    pub secret: String,
    /// Session token.
    pub token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticCredentials({}, ***)", self.key)
    }
}

/// S3 request options a provider's bucket may require (from the environment, never
/// written into a restore_command: the server's environment carries them, as it does
/// the credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Server-side encryption with a customer-provided key (`WALG_S3_SSE_C`, the key
    /// itself, 32 bytes): sent on every GET, HEAD and PUT.
    pub sse_c: Option<SseCustomerKey>,
    /// The requester pays for the transfer (`WALG_S3_REQUESTER_PAYS=true`, walfetch's
    /// own name: wal-g has none).
    pub requester_pays: bool,
    /// A PEM bundle trusted instead of the system's roots (`WALG_S3_CA_CERT_FILE`).
    pub ca_cert_file: Option<PathBuf>,
}

/// An SSE-C key as S3's headers carry it. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SseCustomerKey {
    /// The key, base64.
    pub key_base64: String,
    /// The MD5 of the key, base64.
    pub md5_base64: String,
}

impl std::fmt::Debug for SseCustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseCustomerKey(***)")
    }
}

/// Everything [`crate::storage::open`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Bucket and prefix, or directory.
    pub location: Location,
    /// Custom S3 endpoint URL (`http://127.0.0.1:9000`), for S3-compatible servers.
    pub endpoint: Option<String>,
    /// S3 region; `us-east-1` when a custom endpoint is set and nothing else says.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-host style.
    pub path_style: bool,
    /// Retry and transfer limits.
    pub tuning: Tuning,
    /// What a provider's bucket may require of every request.
    pub s3: S3Options,
    /// S3 credentials given as settings; `None`: the AWS credential chain.
    pub credentials: Option<StaticCredentials>,
}

/// Limits of storage requests, from the `WALFETCH_*` variables (tests set small values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Retries of a transient failure (`WALFETCH_MAX_RETRIES`).
    pub max_retries: usize,
    /// A request or body silent this long is retried (`WALFETCH_IO_TIMEOUT`, seconds).
    pub io_timeout: Duration,
    /// Bytes per ranged GET of a large object (`WALFETCH_RANGE_SIZE`).
    pub range_part_size: u64,
    /// Bytes per second read from storage at most, by the whole process
    /// (`WALG_NETWORK_RATE_LIMIT`); `None`: no limit.
    pub rate_limit: Option<u64>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_retries: MAX_RETRIES,
            io_timeout: IO_TIMEOUT,
            range_part_size: RANGE_PART_SIZE,
            rate_limit: None,
        }
    }
}
