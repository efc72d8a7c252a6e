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
#[derive(Debug, Clone, Default)]
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

fn first_env(names: &[&str]) -> Option<(String, String)> {
    names
        .iter()
        .find_map(|name| env::var(name).ok().filter(|v| !v.trim().is_empty()).map(|v| (name.to_string(), v)))
}

fn env_flag(name: &str) -> bool {
    env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

impl StorageSettings {
    /// Resolves settings from flags, then wal-g / WAL-E / AWS environment variables.
    pub fn resolve(flags: &StorageFlags) -> Result<Self> {
        let (source, raw_prefix) = match &flags.prefix {
            Some(p) => ("--prefix".to_string(), p.clone()),
            None => first_env(PREFIX_ENV_NAMES).ok_or_else(|| {
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

        let mut path_style = flags.path_style || env_flag("AWS_S3_FORCE_PATH_STYLE");
        let mut endpoint = flags
            .endpoint
            .clone()
            .or_else(|| first_env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]).map(|(_, v)| v));
        if endpoint.is_none() {
            if let Some((_, wale)) = first_env(&["WALE_S3_ENDPOINT"]) {
                let (url, wale_path_style) = parse_wale_endpoint(&wale)?;
                endpoint = Some(url);
                path_style |= wale_path_style;
            }
        }
        let endpoint = endpoint.map(|e| normalize_endpoint(&e));
        // S3-compatible servers ignore the region, but SigV4 needs one: wal-g's us-east-1.
        let region = flags
            .region
            .clone()
            .or_else(|| first_env(&["AWS_REGION", "AWS_DEFAULT_REGION"]).map(|(_, v)| v))
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

/// Parses `s3://bucket/prefix`, `file:///dir` or a bare directory path.
pub fn parse_location(raw: &str) -> Result<Location> {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("'{raw}' names no bucket (expected s3://bucket/path)"),
            ));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    // file:///dir, and WAL-E's file://localhost/dir.
    let path = match raw.strip_prefix("file://") {
        Some(rest) if rest.starts_with('/') => rest,
        Some(rest) => match rest.strip_prefix("localhost") {
            Some(p) if p.starts_with('/') => p,
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("'{raw}': a file URL must name a local path (file:///dir or file://localhost/dir)"),
                ))
            }
        },
        None => raw,
    };
    if path.is_empty() || raw.contains("://") && !raw.starts_with("file://") {
        return Err(Error::new(
            ErrorKind::Config,
            format!("'{raw}' is not a supported archive location (use s3://bucket/path or file:///dir)"),
        ));
    }
    let path = PathBuf::from(path);
    let root = if path.is_absolute() {
        path
    } else {
        env::current_dir().map_err(|e| Error::local_io("current directory", &e))?.join(path)
    };
    Ok(Location::File { root })
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
