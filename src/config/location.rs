//! Where the archive is and how to reach it: the location (a prefix, or a pgBackRest
//! repository's path), the endpoint and its addressing, the S3 request options and the
//! limits of requests, each from the flags, then the environment names wal-g, WAL-E, AWS
//! and pgBackRest use.

use std::path::PathBuf;
use std::time::Duration;

use super::pgbackrest::{RepoLocation, RepoOptions};
use super::{env_flag, first_env, Env, StorageFlags, PREFIX_ENV_NAMES};
use crate::error::{Error, ErrorKind, Result};
use crate::storage::settings::{Location, S3Options, SseCustomerKey, Tuning};

/// Where the archive is: `--prefix`, else the first of [`PREFIX_ENV_NAMES`], else the
/// pgBackRest repository's path (when the settings are pgBackRest's).
pub(super) fn location(flags: &StorageFlags, env: Env<'_>, repo: &RepoOptions, from_repo: bool) -> Result<Location> {
    let (source, raw_prefix) = match &flags.prefix {
        Some(p) => ("--prefix".to_string(), Some(p.clone())),
        None => match first_env(env, PREFIX_ENV_NAMES) {
            Some((name, value)) => (name, Some(value)),
            None => (String::new(), None),
        },
    };
    match raw_prefix {
        Some(raw) => parse_location(&raw).map_err(|e| e.context(&source)),
        None => match repo.location()?.filter(|_| from_repo) {
            Some(RepoLocation::S3 { bucket, prefix }) => Ok(Location::S3 { bucket, prefix }),
            Some(RepoLocation::Directory(root)) => Ok(Location::File { root }),
            None => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "no archive configured: pass --prefix s3://bucket/path or file:///dir, or set one of {} (or pgBackRest's settings: --pgbackrest-config FILE, PGBACKREST_REPO1_PATH)",
                    PREFIX_ENV_NAMES.join(", ")
                ),
            )),
        },
    }
}

/// The S3 endpoint and whether to address it path-style: the flags, AWS's variables,
/// WAL-E's endpoint, else the pgBackRest repository's.
pub(super) fn endpoint(
    flags: &StorageFlags,
    env: Env<'_>,
    repo: &RepoOptions,
    from_repo: bool,
    location: &Location,
) -> Result<(Option<String>, bool)> {
    let mut path_style = flags.path_style || env_flag(env, "AWS_S3_FORCE_PATH_STYLE");
    if from_repo && repo.get("s3-uri-style") == Some("path") {
        path_style = true;
    }
    let mut endpoint = match &flags.endpoint {
        Some(e) => Some(("--endpoint".to_string(), e.clone())),
        None => first_env(env, &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]),
    };
    if endpoint.is_none() {
        if let Some((name, wale)) = first_env(env, &["WALE_S3_ENDPOINT"]) {
            let (url, wale_path_style) = parse_wale_endpoint(&wale)?;
            endpoint = Some((name, url));
            path_style |= wale_path_style;
        }
    }
    if endpoint.is_none() && from_repo && matches!(location, Location::S3 { .. }) {
        endpoint = repo.endpoint_url().map(|e| (repo.source("s3-endpoint"), e));
    }
    let endpoint = match endpoint {
        Some((source, raw)) => Some(parse_endpoint(&raw).map_err(|e| e.context(&source))?),
        None => None,
    };
    Ok((endpoint, path_style))
}

/// The S3 request options with the pgBackRest repository's (its CA file, requester
/// pays) when the settings are pgBackRest's; its `storage-verify-tls=n` is refused.
pub(super) fn repo_s3_options(mut s3: S3Options, repo: &RepoOptions, from_repo: bool) -> Result<S3Options> {
    if from_repo {
        if s3.ca_cert_file.is_none() {
            s3.ca_cert_file = repo.get("storage-ca-file").map(PathBuf::from);
        }
        if repo.get("storage-verify-tls") == Some("n") {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{}=n: walfetch always verifies TLS; give the endpoint's CA with repo1-storage-ca-file instead",
                    repo.source("storage-verify-tls")
                ),
            ));
        }
        s3.requester_pays |= repo.get("s3-requester-pays") == Some("y");
    }
    Ok(s3)
}

/// The S3 request options the environment sets.
pub(super) fn s3_options(env: Env<'_>) -> Result<S3Options> {
    use base64::Engine as _;
    use md5::Digest as _;
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let sse_c = match set("WALG_S3_SSE_C") {
        None => None,
        Some(key) if key.len() == 32 => Some(SseCustomerKey {
            key_base64: base64::engine::general_purpose::STANDARD.encode(key.as_bytes()),
            md5_base64: base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(key.as_bytes())),
        }),
        Some(key) => {
            return Err(Error::new(
                ErrorKind::Config,
                format!("WALG_S3_SSE_C must be the 32-byte AES-256 key itself ({} bytes given)", key.len()),
            ))
        }
    };
    let ca_cert_file = match set("WALG_S3_CA_CERT_FILE") {
        None => None,
        Some(path) => {
            let path = PathBuf::from(path.trim());
            let pem = std::fs::read(&path).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("WALG_S3_CA_CERT_FILE={}: cannot read it: {e}", path.display()),
                )
            })?;
            use rustls_pki_types::pem::PemObject as _;
            let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).filter(|c| c.is_ok()).count();
            if certs == 0 {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("WALG_S3_CA_CERT_FILE={}: no PEM certificate in it", path.display()),
                ));
            }
            Some(path)
        }
    };
    Ok(S3Options {
        sse_c,
        requester_pays: env_flag(env, "WALG_S3_REQUESTER_PAYS"),
        ca_cert_file,
    })
}

/// The limits of storage requests the environment sets.
pub(super) fn tuning(env: Env<'_>) -> Result<Tuning> {
    let number = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok());
    let default = Tuning::default();
    let rate_limit = match env("WALG_NETWORK_RATE_LIMIT").map(|v| v.trim().to_string()) {
        None => None,
        Some(v) if v.is_empty() || v == "0" => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("WALG_NETWORK_RATE_LIMIT='{v}' is not a number of bytes per second"),
            )
        })?),
    };
    Ok(Tuning {
        max_retries: number("WALFETCH_MAX_RETRIES").map_or(default.max_retries, |n| n as usize),
        io_timeout: number("WALFETCH_IO_TIMEOUT").map_or(default.io_timeout, Duration::from_secs),
        range_part_size: number("WALFETCH_RANGE_SIZE").filter(|n| *n > 0).unwrap_or(default.range_part_size),
        rate_limit,
    })
}

/// What an archive location must look like, for error messages.
const LOCATION_FORMS: &str = "use s3://bucket/path, an absolute directory (/srv/archive) or file:///srv/archive";

/// Parses `s3://bucket/prefix`, `file:///dir`, WAL-E's `file://localhost/dir`, or an
/// absolute directory path. Anything else is refused: a relative path or a mistyped URL
/// (`s3:/bucket`) would otherwise name a directory under wherever walfetch happens to
/// run, which holds no archive, and every segment would look absent.
pub fn parse_location(raw: &str) -> Result<Location> {
    let raw = raw.trim();
    let refuse = |why: &str| Error::new(ErrorKind::Config, format!("'{raw}' {why}; {LOCATION_FORMS}"));
    if let Some(rest) = raw.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(refuse("names no bucket"));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    let path = match raw.strip_prefix("file://") {
        Some(rest) if rest.starts_with('/') => rest,
        Some(rest) => match rest.strip_prefix("localhost") {
            Some(p) if p.starts_with('/') => p,
            _ => return Err(refuse("is a file URL that names no local path")),
        },
        None if raw.starts_with('/') => raw,
        None if raw.is_empty() => return Err(refuse("is empty")),
        None if raw.contains(':') => return Err(refuse("is not a supported archive URL")),
        None => return Err(refuse("is a relative path")),
    };
    Ok(Location::File { root: PathBuf::from(path) })
}

/// Checks an S3 endpoint URL (`http(s)://host[:port][/path]`; a scheme-less endpoint
/// means https, as in wal-g) and returns it normalised. A malformed one is a
/// configuration error at once, not a network error retried for a minute.
pub fn parse_endpoint(raw: &str) -> Result<String> {
    let url = normalize_endpoint(raw);
    let bad = |why: &str| {
        Error::new(
            ErrorKind::Config,
            format!("endpoint '{}' {why}; expected http(s)://host[:port]", raw.trim()),
        )
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("is not an http or https URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("has an unclosed IPv6 address"))?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        && !host.starts_with(['.', '-'])
        && !authority.contains('@');
    if !host_ok {
        return Err(bad("names no valid host"));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("has no valid port"));
        }
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains spaces"));
    }
    Ok(url)
}

/// Parses WAL-E's `protocol+convention://host:port` endpoint form.
pub(super) fn parse_wale_endpoint(raw: &str) -> Result<(String, bool)> {
    let (scheme, rest) = raw.split_once("://").ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("WALE_S3_ENDPOINT '{raw}' is not of the form http+path://host:port"),
        )
    })?;
    let (proto, convention) = scheme.split_once('+').unwrap_or((scheme, "virtualhost"));
    if proto != "http" && proto != "https" {
        return Err(Error::new(
            ErrorKind::Config,
            format!("WALE_S3_ENDPOINT '{raw}': protocol must be http or https"),
        ));
    }
    Ok((format!("{proto}://{}", rest.trim_end_matches('/')), convention == "path"))
}

/// A scheme-less endpoint means https, as in wal-g.
fn normalize_endpoint(raw: &str) -> String {
    let raw = raw.trim().trim_end_matches('/');
    if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    }
}
