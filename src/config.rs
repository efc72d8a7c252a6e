//! Storage settings, resolved from command-line flags first and then from the
//! environment names that wal-g and WAL-E use, so a user can swap binaries.

use std::env;
use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};

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

/// Everything needed to open the archive's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    /// Bucket and prefix, or directory.
    pub location: Location,
    /// Custom S3 endpoint URL (`http://127.0.0.1:9000`), for S3-compatible servers.
    pub endpoint: Option<String>,
    /// S3 region; `us-east-1` when a custom endpoint is set and nothing else says.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-host style.
    pub path_style: bool,
}

/// Storage options as given on the command line (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageFlags {
    /// `--prefix`
    pub prefix: Option<String>,
    /// `--endpoint`
    pub endpoint: Option<String>,
    /// `--region`
    pub region: Option<String>,
    /// `--path-style`
    pub path_style: bool,
}

/// Environment names accepted for the archive location, in wal-g's order of precedence.
pub const PREFIX_ENV_NAMES: &[&str] = &["WALG_S3_PREFIX", "WALE_S3_PREFIX", "WALG_FILE_PREFIX", "WALE_FILE_PREFIX"];

/// Where settings are read from besides the command line: the process environment, or
/// the variables a `restore_command` sets for walfetch (`env VAR=… walfetch …`, `envdir`),
/// which `status` reads without running it.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as an [`Env`].
pub fn process_env(name: &str) -> Option<String> {
    env::var(name).ok()
}

fn first_env(env: Env<'_>, names: &[&str]) -> Option<(String, String)> {
    names
        .iter()
        .find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (name.to_string(), v)))
}

fn env_flag(env: Env<'_>, name: &str) -> bool {
    env(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

impl StorageSettings {
    /// Resolves settings from flags, then wal-g / WAL-E / AWS environment variables.
    pub fn resolve(flags: &StorageFlags) -> Result<Self> {
        Self::resolve_from(flags, &process_env)
    }

    /// Resolves settings from flags, then the variables `env` gives.
    pub fn resolve_from(flags: &StorageFlags, env: Env<'_>) -> Result<Self> {
        let (source, raw_prefix) = match &flags.prefix {
            Some(p) => ("--prefix".to_string(), p.clone()),
            None => first_env(env, PREFIX_ENV_NAMES).ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "no archive configured: pass --prefix s3://bucket/path or file:///dir, or set one of {}",
                        PREFIX_ENV_NAMES.join(", ")
                    ),
                )
            })?,
        };
        let location = parse_location(&raw_prefix).map_err(|e| e.context(&source))?;

        let mut path_style = flags.path_style || env_flag(env, "AWS_S3_FORCE_PATH_STYLE");
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
        let endpoint = match endpoint {
            Some((source, raw)) => Some(parse_endpoint(&raw).map_err(|e| e.context(&source))?),
            None => None,
        };
        // S3-compatible servers ignore the region, but SigV4 needs one: wal-g's us-east-1.
        let region = flags
            .region
            .clone()
            .or_else(|| first_env(env, &["AWS_REGION", "AWS_DEFAULT_REGION"]).map(|(_, v)| v))
            .or_else(|| endpoint.as_ref().map(|_| "us-east-1".to_string()));
        Ok(StorageSettings {
            location,
            endpoint,
            region,
            path_style,
        })
    }

    /// The command-line flags that reproduce these settings (no secrets: credentials
    /// always come from the AWS credential chain).
    pub fn to_flags(&self) -> Vec<String> {
        let mut out = vec!["--prefix".to_string(), self.location.to_string()];
        if let Some(e) = &self.endpoint {
            out.push("--endpoint".into());
            out.push(e.clone());
        }
        if let Some(r) = &self.region {
            out.push("--region".into());
            out.push(r.clone());
        }
        if self.path_style {
            out.push("--path-style".into());
        }
        out
    }
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
fn parse_wale_endpoint(raw: &str) -> Result<(String, bool)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_locations() {
        assert_eq!(
            parse_location("s3://bucket/a/b/").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            parse_location("s3://bucket").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "".into()
            }
        );
        assert!(parse_location("s3:///x").is_err());
    }

    #[test]
    fn parses_file_locations() {
        assert_eq!(
            parse_location("file:///srv/archive").unwrap(),
            Location::File {
                root: "/srv/archive".into()
            }
        );
        assert_eq!(
            parse_location("/srv/archive").unwrap(),
            Location::File {
                root: "/srv/archive".into()
            }
        );
        assert_eq!(
            parse_location("file://localhost/srv/wale").unwrap(),
            Location::File { root: "/srv/wale".into() }
        );
        assert!(parse_location("file://otherhost/srv").is_err());
        assert!(parse_location("gs://bucket").is_err());
    }

    #[test]
    fn relative_paths_and_mistyped_urls_are_refused() {
        for bad in ["archive", "./archive", "s3:/bucket/p", "s3:bucket", "S3://bucket", "file:/srv", ""] {
            let err = parse_location(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert!(err.message().contains("s3://bucket/path"), "{bad}: {err}");
        }
    }

    #[test]
    fn endpoints_are_checked_before_any_request() {
        assert_eq!(parse_endpoint("http://127.0.0.1:9000/").unwrap(), "http://127.0.0.1:9000");
        assert_eq!(parse_endpoint("s3.example.com").unwrap(), "https://s3.example.com");
        assert_eq!(parse_endpoint("http://[::1]:9000").unwrap(), "http://[::1]:9000");
        for bad in [
            "http://",
            "http://host:port",
            "http://host:99999",
            "ftp://host",
            "http://a b",
            "http://user@host",
            "http:// host",
        ] {
            assert_eq!(parse_endpoint(bad).unwrap_err().kind(), ErrorKind::Config, "{bad}");
        }
        let env = |name: &str| (name == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:notaport".to_string());
        let flags = StorageFlags {
            prefix: Some("s3://b/p".into()),
            ..Default::default()
        };
        let err = StorageSettings::resolve_from(&flags, &env).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().starts_with("AWS_ENDPOINT_URL: "), "{err}");
    }

    #[test]
    fn parses_wale_endpoint_forms() {
        assert_eq!(
            parse_wale_endpoint("http+path://127.0.0.1:9000").unwrap(),
            ("http://127.0.0.1:9000".to_string(), true)
        );
        assert_eq!(
            parse_wale_endpoint("https+virtualhost://s3.example.com").unwrap(),
            ("https://s3.example.com".to_string(), false)
        );
        assert!(parse_wale_endpoint("ftp+path://x").is_err());
    }

    #[test]
    fn flags_round_trip_without_secrets() {
        let s = StorageSettings {
            location: Location::S3 {
                bucket: "b".into(),
                prefix: "p".into(),
            },
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            path_style: true,
        };
        assert_eq!(
            s.to_flags(),
            [
                "--prefix",
                "s3://b/p",
                "--endpoint",
                "http://127.0.0.1:1",
                "--region",
                "us-east-1",
                "--path-style"
            ]
        );
    }
}
