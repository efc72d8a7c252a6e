//! Every setting walfetch reads from its environment, resolved once at start into
//! [`Settings`]: flags first, then the environment names that wal-g and WAL-E use, so a
//! user can swap binaries. Settings that belong to one command and have one environment
//! name are that command's flags, with clap's `env` (so their help cannot drift); the
//! ones here are shared by several commands or have several names.

use std::env;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::constants::{CREDENTIALS_MARGIN, REMOTE_TRANSFERS};
use crate::crypto::Keys;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::settings::{Connection, Location, S3Options, StaticCredentials, Tuning};
use crate::wal::name::valid_segment_size;
use pgbackrest::RepoOptions;

mod location;
pub mod pgbackrest;

use location::{endpoint, location, repo_s3_options, s3_options, tuning};
pub use location::{parse_endpoint, parse_location};

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
    /// Retry and transfer limits.
    pub tuning: Tuning,
    /// Keys for encrypted objects (`WALG_LIBSODIUM_KEY`, …).
    pub keys: Keys,
    /// What a provider's bucket may require of every request.
    pub s3: S3Options,
    /// Which format the archive is in, and what reading it takes.
    pub format: FormatSettings,
    /// S3 credentials given as settings (pgBackRest's `repo1-s3-key`…) instead of
    /// through the AWS credential chain.
    pub credentials: Option<StaticCredentials>,
}

/// Which archive format a location holds: wal-g's (and WAL-E's, and walrus's) layout, a
/// pgBackRest repository, or barman-cloud's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `basebackups_005/`, `wal_005/`.
    WalG,
    /// `backup/<stanza>/`, `archive/<stanza>/`.
    PgBackRest,
    /// `<server>/base/`, `<server>/wals/` (barman-cloud, CloudNativePG).
    Barman,
}

impl std::str::FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "walg" | "wal-g" | "wale" | "wal-e" | "walrus" => Ok(Format::WalG),
            "pgbackrest" => Ok(Format::PgBackRest),
            "barman" | "barman-cloud" | "cnpg" => Ok(Format::Barman),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("--format {other}: use walg, pgbackrest or barman (or leave it out: the format is recognised)"),
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::WalG => "walg",
            Format::PgBackRest => "pgbackrest",
            Format::Barman => "barman",
        })
    }
}

/// What the archive's format takes besides its location.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FormatSettings {
    /// The format asked for (`--format`, `WALFETCH_FORMAT`, or implied by pgBackRest
    /// settings); `None`: recognised from what the location holds.
    pub kind: Option<Format>,
    /// pgBackRest's configuration file (`--pgbackrest-config`, `PGBACKREST_CONFIG`):
    /// read again whenever storage is opened, so renewed credentials in it are used.
    pub config_file: Option<PathBuf>,
    /// The stanza (`--stanza`, `PGBACKREST_STANZA`, or the file's only one).
    pub stanza: Option<String>,
    /// `repo1-cipher-pass` of an encrypted repository.
    pub cipher_pass: Option<String>,
    /// barman-cloud's server name (`--barman-server`, `WALFETCH_BARMAN_SERVER`, or the
    /// location's only one).
    pub barman_server: Option<String>,
}

impl fmt::Debug for FormatSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormatSettings")
            .field("kind", &self.kind)
            .field("config_file", &self.config_file)
            .field("stanza", &self.stanza)
            .field("barman_server", &self.barman_server)
            .field("cipher_pass", &self.cipher_pass.as_ref().map(|_| "***"))
            .finish()
    }
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
    /// `--format`
    pub format: Option<String>,
    /// `--stanza`
    pub stanza: Option<String>,
    /// `--barman-server`
    pub barman_server: Option<String>,
    /// `--pgbackrest-config`
    pub pgbackrest_config: Option<PathBuf>,
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

/// The prefixes of the environment variables that are settings: AWS's, wal-g's,
/// WAL-E's, walfetch's and pgBackRest's.
pub const SETTING_PREFIXES: [&str; 5] = ["AWS_", "WALG_", "WALE_", "WALFETCH_", "PGBACKREST_"];

/// Whether variable `name` is a setting (has one of [`SETTING_PREFIXES`]).
pub fn is_setting(name: &str) -> bool {
    SETTING_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The settings in this process's environment, sorted by name.
pub fn setting_vars() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env::vars().filter(|(k, _)| is_setting(k)).collect();
    vars.sort();
    vars
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

    /// Resolves settings from flags, then the variables `env` gives: wal-g's, WAL-E's and
    /// AWS's names, and pgBackRest's (its configuration file and `PGBACKREST_*`), so a
    /// user keeps what a provider handed over.
    pub fn resolve_from(flags: &StorageFlags, env: Env<'_>) -> Result<Self> {
        let config_file = flags
            .pgbackrest_config
            .clone()
            .or_else(|| env("PGBACKREST_CONFIG").filter(|v| !v.trim().is_empty()).map(PathBuf::from));
        let repo = RepoOptions::resolve(config_file.as_deref(), flags.stanza.as_deref(), env)?;
        let explicit = match flags
            .format
            .clone()
            .or_else(|| env("WALFETCH_FORMAT").filter(|v| !v.trim().is_empty()))
        {
            Some(f) => Some(f.parse::<Format>()?),
            None => None,
        };
        let barman_server = flags
            .barman_server
            .clone()
            .or_else(|| env("WALFETCH_BARMAN_SERVER"))
            .map(|s| s.trim().trim_matches('/').to_string())
            .filter(|s| !s.is_empty());
        let pgbackrest_way = config_file.is_some() || repo.any() || repo.stanza.is_some();
        let kind = explicit
            .or(pgbackrest_way.then_some(Format::PgBackRest))
            .or(barman_server.as_ref().map(|_| Format::Barman));
        let from_repo = matches!(kind, Some(Format::PgBackRest));

        let location = location(flags, env, &repo, from_repo)?;
        let (endpoint, path_style) = endpoint(flags, env, &repo, from_repo, &location)?;
        // S3-compatible servers ignore the region, but SigV4 needs one: wal-g's us-east-1.
        let region = flags
            .region
            .clone()
            .or_else(|| first_env(env, &["AWS_REGION", "AWS_DEFAULT_REGION"]).map(|(_, v)| v))
            .or_else(|| repo.get("s3-region").filter(|_| from_repo).map(str::to_string))
            .or_else(|| endpoint.as_ref().map(|_| "us-east-1".to_string()));
        let s3 = repo_s3_options(s3_options(env)?, &repo, from_repo)?;
        let credentials = repo
            .credentials()
            .filter(|_| from_repo)
            .map(|(key, secret, token)| StaticCredentials { key, secret, token });
        Ok(StorageSettings {
            location,
            endpoint,
            region,
            path_style,
            tuning: tuning(env)?,
            keys: Keys::resolve(env)?,
            s3,
            format: FormatSettings {
                kind,
                config_file,
                stanza: repo.stanza.clone(),
                cipher_pass: if from_repo { repo.cipher_pass()? } else { None },
                barman_server,
            },
            credentials,
        })
    }

    /// The S3 credentials to use now: from the pgBackRest configuration file when there
    /// is one (read again, so a renewal in it is picked up), else those resolved at
    /// start; `None`: the AWS credential chain.
    fn current_credentials(&self) -> Result<Option<StaticCredentials>> {
        match &self.format.config_file {
            Some(file) if self.credentials.is_some() => {
                let repo = RepoOptions::resolve(Some(file), self.format.stanza.as_deref(), &process_env)?;
                Ok(repo
                    .credentials()
                    .map(|(key, secret, token)| StaticCredentials { key, secret, token }))
            }
            _ => Ok(self.credentials.clone()),
        }
    }

    /// Settings for the archive at `location` and nothing else given (as a user who
    /// set only a prefix).
    pub fn at(location: Location) -> StorageSettings {
        StorageSettings {
            location,
            endpoint: None,
            region: None,
            path_style: false,
            tuning: Tuning::default(),
            keys: Keys::default(),
            s3: S3Options::default(),
            format: FormatSettings::default(),
            credentials: None,
        }
    }

    /// What opening the storage takes, with the credentials to use now (see
    /// `current_credentials`: a renewal in pgBackRest's configuration file is read).
    pub fn connection(&self) -> Result<Connection> {
        Ok(Connection {
            location: self.location.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            tuning: self.tuning,
            s3: self.s3.clone(),
            credentials: self.current_credentials()?,
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
        if let Some(kind) = self.format.kind {
            out.push("--format".into());
            out.push(kind.to_string());
        }
        if let Some(file) = &self.format.config_file {
            out.push("--pgbackrest-config".into());
            out.push(file.display().to_string());
        }
        if let Some(stanza) = &self.format.stanza {
            out.push("--stanza".into());
            out.push(stanza.clone());
        }
        if let Some(server) = &self.format.barman_server {
            out.push("--barman-server".into());
            out.push(server.clone());
        }
        out
    }
}

/// How a restore spreads its work ([`Settings::restore_parallelism`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parallelism {
    /// Partitions extracted at once.
    pub partitions: usize,
    /// Connections receiving at once (remote storage).
    pub transfers: usize,
}

/// The settings shared by several commands, each read from the environment once.
#[derive(Debug)]
pub struct Settings {
    /// The storage flags of the command line (`status` falls back to them).
    pub flags: StorageFlags,
    /// The archive, or why it is not configured (an error only for commands that need it).
    pub storage: Result<StorageSettings>,
    /// `WALG_DOWNLOAD_CONCURRENCY`: downloads at once (partitions, listings, prefetch).
    pub download_concurrency: Option<usize>,
    /// `WALG_PG_WAL_SIZE` (MiB): the WAL segment size, when pinned.
    pub wal_segment_size: Result<Option<u64>>,
    /// Whether `wal-fetch` uses the prefetch fetcher: not with `WALFETCH_PREFETCH=off`,
    /// nor with `WALG_DOWNLOAD_CONCURRENCY=1` (as in wal-g).
    pub prefetch: bool,
    /// `WALG_PREFETCH_DIR`: the base of the prefetch spool instead of `pg_wal`.
    pub prefetch_dir: Option<PathBuf>,
    /// The log level: `WALFETCH_LOG_LEVEL`, else wal-g's `WALG_LOG_LEVEL`.
    pub log_level: Option<String>,
    /// The libpq connection settings `backup-push` uses.
    pub libpq: Libpq,
}

/// libpq's environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`).
#[derive(Clone, Default)]
pub struct Libpq {
    /// `PGHOST`: a host name or a socket directory.
    pub host: Option<String>,
    /// `PGPORT`.
    pub port: Option<String>,
    /// `PGUSER`, else `USER`.
    pub user: Option<String>,
    /// `PGDATABASE`.
    pub database: Option<String>,
    /// `PGPASSWORD`.
    pub password: Option<String>,
}

impl fmt::Debug for Libpq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Libpq")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Settings {
    /// Resolves every setting from the flags and the process environment.
    pub fn resolve(flags: StorageFlags) -> Settings {
        Settings::resolve_from(flags, &process_env)
    }

    /// Resolves every setting from the flags and the variables `env` gives.
    pub fn resolve_from(flags: StorageFlags, env: Env<'_>) -> Settings {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let download_concurrency = set("WALG_DOWNLOAD_CONCURRENCY")
            .and_then(|v| v.trim().parse().ok())
            .filter(|n: &usize| *n > 0);
        let prefetch_off = set("WALFETCH_PREFETCH").is_some_and(|v| matches!(v.trim(), "off" | "0" | "false" | "no"));
        let log_level = set("WALFETCH_LOG_LEVEL").or_else(|| {
            set("WALG_LOG_LEVEL").map(|l| match l.as_str() {
                "DEVEL" => "debug".to_string(),
                "ERROR" => "error".to_string(),
                _ => "info".to_string(),
            })
        });
        Settings {
            storage: StorageSettings::resolve_from(&flags, env),
            flags,
            download_concurrency,
            wal_segment_size: set("WALG_PG_WAL_SIZE")
                .map(|v| parse_size(&format!("{}MB", v.trim())).map_err(|e| e.context("WALG_PG_WAL_SIZE")))
                .transpose(),
            prefetch: !prefetch_off && download_concurrency != Some(1),
            prefetch_dir: set("WALG_PREFETCH_DIR").map(PathBuf::from),
            log_level,
            libpq: Libpq {
                host: set("PGHOST"),
                port: set("PGPORT"),
                user: set("PGUSER").or_else(|| set("USER")),
                database: set("PGDATABASE"),
                password: set("PGPASSWORD"),
            },
        }
    }

    /// The archive's settings, or why there are none.
    pub fn storage(&self) -> Result<&StorageSettings> {
        self.storage.as_ref().map_err(Error::clone)
    }

    /// How a restore spreads its work: `flag`, else `WALG_DOWNLOAD_CONCURRENCY`, is the
    /// number of connections receiving at once from remote storage (default
    /// [`REMOTE_TRANSFERS`]), or of partitions extracted at once from a directory (default:
    /// the cores). From remote storage the partitions extracted at once are the cores (at
    /// least 2): the connections are shared by parts of every partition, so extraction
    /// only needs the CPU.
    pub fn restore_parallelism(&self, flag: Option<usize>, remote: bool) -> Parallelism {
        let asked = flag.filter(|n| *n > 0).or(self.download_concurrency);
        if remote {
            let transfers = asked.unwrap_or(REMOTE_TRANSFERS);
            Parallelism {
                partitions: cores().max(2).min(transfers),
                transfers,
            }
        } else {
            let partitions = asked.unwrap_or_else(cores);
            Parallelism {
                partitions,
                transfers: partitions,
            }
        }
    }

    /// Requests in flight when listing or reading many small objects:
    /// `WALG_DOWNLOAD_CONCURRENCY`, else 8 (round trips, not work for the cores).
    pub fn listing_concurrency(&self) -> usize {
        self.download_concurrency.unwrap_or(8)
    }

    /// Segments the prefetch fetcher keeps ready: `flag`, else
    /// `WALG_DOWNLOAD_CONCURRENCY`, else 8.
    pub fn prefetch_ahead(&self, flag: Option<usize>) -> usize {
        flag.filter(|n| *n > 0).or(self.download_concurrency).unwrap_or(8)
    }

    /// The pinned WAL segment size (`WALG_PG_WAL_SIZE`), or why it is malformed.
    pub fn wal_segment_size(&self) -> Result<Option<u64>> {
        self.wal_segment_size.clone()
    }
}

/// The number of cores (2 when it cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// Parses a WAL segment size: `16MB`, `64MiB`, `1GB`, `1048576` (bytes); a power of two
/// from 1 MB to 1 GB.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t
        .strip_suffix("gib")
        .or_else(|| t.strip_suffix("gb"))
        .or_else(|| t.strip_suffix('g'))
    {
        (n, 1u64 << 30)
    } else if let Some(n) = t
        .strip_suffix("mib")
        .or_else(|| t.strip_suffix("mb"))
        .or_else(|| t.strip_suffix('m'))
    {
        (n, 1 << 20)
    } else {
        (t.strip_suffix('b').unwrap_or(&t), 1)
    };
    let size = num
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|s| valid_segment_size(*s));
    size.ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("'{text}' is not a WAL segment size (a power of two from 1MB to 1GB)"),
        )
    })
}

/// The credentials margin of `status` and `wal-verify`: the flag (or
/// `WALFETCH_CREDENTIALS_MARGIN`), else one hour.
pub fn credentials_margin(flag: Option<&str>) -> Result<Duration> {
    flag.map_or(Ok(CREDENTIALS_MARGIN), parse_age)
}

/// Parses an age: `90s`, `15m`, `2h`, `1d` or plain seconds.
pub fn parse_age(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        Some('d') => (&t[..t.len() - 1], 86400),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Duration::from_secs)
        .ok_or_else(|| Error::new(ErrorKind::Config, format!("'{text}' is not an age (e.g. 90s, 15m, 2h, 1d)")))
}

/// An absolute form of `path` (relative to the current directory).
pub fn absolute(path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::location::parse_wale_endpoint;
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
    fn sizes_and_ages() {
        assert_eq!(parse_size("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("3MB").is_err());
        assert!(parse_size("2GB").is_err());
        assert!(parse_size("99999999999999999999g").is_err());
        assert_eq!(parse_age("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_age("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_age("45").unwrap(), Duration::from_secs(45));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("99999999999999999d").is_err());
    }

    #[test]
    fn shared_settings_are_read_once_with_one_default_each() {
        let vars = [("WALG_DOWNLOAD_CONCURRENCY", "3"), ("WALG_PG_WAL_SIZE", "64"), ("PGPASSWORD", "pw")];
        let env = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let s = Settings::resolve_from(StorageFlags::default(), &env);
        assert_eq!(s.restore_parallelism(None, true).transfers, 3);
        assert_eq!(s.restore_parallelism(Some(5), true).transfers, 5);
        assert_eq!(s.restore_parallelism(Some(5), false).partitions, 5);
        assert!(s.restore_parallelism(Some(1), true).partitions == 1);
        assert_eq!(s.listing_concurrency(), 3);
        assert_eq!(s.prefetch_ahead(None), 3);
        assert_eq!(s.wal_segment_size().unwrap(), Some(64 << 20));
        assert!(s.prefetch);
        assert!(!format!("{s:?}").contains("pw"), "the password stays out of Debug");
        let none = |_: &str| None;
        let s = Settings::resolve_from(StorageFlags::default(), &none);
        assert_eq!(s.restore_parallelism(None, true).transfers, REMOTE_TRANSFERS);
        assert!(s.restore_parallelism(None, true).partitions >= 2);
        assert_eq!(s.listing_concurrency(), 8);
        assert_eq!(s.storage().unwrap_err().kind(), ErrorKind::Config);
        let one = |name: &str| (name == "WALG_DOWNLOAD_CONCURRENCY").then(|| "1".to_string());
        assert!(!Settings::resolve_from(StorageFlags::default(), &one).prefetch, "as in wal-g");
        let bad = |name: &str| (name == "WALG_PG_WAL_SIZE").then(|| "3".to_string());
        assert_eq!(
            Settings::resolve_from(StorageFlags::default(), &bad)
                .wal_segment_size()
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
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
            tuning: Tuning::default(),
            keys: Default::default(),
            s3: Default::default(),
            format: Default::default(),
            credentials: None,
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
