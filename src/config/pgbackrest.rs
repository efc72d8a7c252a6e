//! pgBackRest's own settings, read as pgBackRest reads them, so a user keeps what the
//! provider handed over: its configuration file (`--pgbackrest-config FILE`, pgBackRest's
//! `--config`) and its environment (`PGBACKREST_<OPTION>`, dashes as underscores).
//!
//! The file is INI: lines trimmed, `#` lines ignored, `[global]`, `[global:<command>]`,
//! `[<stanza>]` and `[<stanza>:<command>]` sections, `key=value` split at the first `=`.
//! Precedence, highest first: the environment, `[<stanza>:restore]`/`[<stanza>:archive-get]`,
//! `[<stanza>]`, `[global:restore]`/`[global:archive-get]`, `[global]`. Only the options a
//! reader needs are taken (`repo1-*`, with the unindexed `repo-*` as their old names, and
//! `stanza`); the rest are pgBackRest's business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// The repository options walfetch reads.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RepoOptions {
    /// `stanza`.
    pub stanza: Option<String>,
    /// Every `repo1-*` option given, by its name without `repo1-` (`type`, `path`,
    /// `s3-bucket`, ...).
    values: BTreeMap<String, String>,
    /// Where each came from, for messages (`PGBACKREST_REPO1_PATH`, `FILE [main]`).
    sources: BTreeMap<String, String>,
}

impl std::fmt::Debug for RepoOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: BTreeMap<&String, &str> = self
            .values
            .iter()
            .map(|(k, v)| (k, if secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("RepoOptions")
            .field("stanza", &self.stanza)
            .field("values", &shown)
            .finish()
    }
}

/// Options whose values are never shown.
fn secret(name: &str) -> bool {
    matches!(
        name,
        "s3-key" | "s3-key-secret" | "s3-token" | "cipher-pass" | "s3-sse-customer-key"
    )
}

/// The sections of a pgBackRest configuration file, in file order.
type Sections = Vec<(String, Vec<(String, String)>)>;

/// Parses pgBackRest's configuration file format.
fn parse(text: &str, path: &Path) -> Result<Sections> {
    let mut sections: Sections = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            sections.push((line[1..line.len() - 1].trim().to_string(), Vec::new()));
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{} line {}: not key=value", path.display(), n + 1),
            ));
        };
        let Some((_, pairs)) = sections.last_mut() else {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{} line {}: an option before the first [section]", path.display(), n + 1),
            ));
        };
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(sections)
}

/// The option name without its repository index (`repo1-path` and `repo-path` are
/// `path`); `None` for options of other repositories and anything else.
fn repo_option(name: &str) -> Option<&str> {
    name.strip_prefix("repo1-").or_else(|| name.strip_prefix("repo-"))
}

/// pgBackRest's old names of options that moved (`repo1-s3-host` is `repo1-storage-host`).
fn canonical(name: &str) -> &str {
    match name {
        "s3-host" => "storage-host",
        "s3-port" => "storage-port",
        "s3-verify-tls" | "s3-verify-ssl" => "storage-verify-tls",
        "s3-ca-file" => "storage-ca-file",
        "s3-ca-path" => "storage-ca-path",
        other => other,
    }
}

impl RepoOptions {
    /// Reads the file `config` (if given) for `stanza` (else the file's or the
    /// environment's `stanza`), then the environment over it.
    pub fn resolve(config: Option<&Path>, stanza: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<RepoOptions> {
        let mut o = RepoOptions::default();
        let env_stanza = env("PGBACKREST_STANZA").filter(|s| !s.trim().is_empty());
        let mut stanza = stanza.map(str::to_string).or(env_stanza);
        if let Some(path) = config {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("--pgbackrest-config {}: cannot read it: {e}", path.display()),
                )
            })?;
            let sections = parse(&text, path)?;
            if stanza.is_none() {
                stanza = only_stanza(&sections);
            }
            let order: Vec<String> = match &stanza {
                Some(s) => vec![
                    "global".into(),
                    "global:archive-get".into(),
                    "global:restore".into(),
                    s.clone(),
                    format!("{s}:archive-get"),
                    format!("{s}:restore"),
                ],
                None => vec!["global".into(), "global:archive-get".into(), "global:restore".into()],
            };
            for wanted in &order {
                for (name, pairs) in sections.iter().filter(|(n, _)| n == wanted) {
                    for (k, v) in pairs {
                        if let Some(opt) = repo_option(k) {
                            o.set(canonical(opt), v, format!("{} [{name}] {k}", path.display()));
                        }
                    }
                }
            }
        }
        // The environment wins over the file, as in pgBackRest.
        for name in ENV_OPTIONS {
            for (prefix, index) in [("PGBACKREST_REPO1_", "repo1"), ("PGBACKREST_REPO_", "repo")] {
                let var = format!("{prefix}{}", name.to_ascii_uppercase().replace('-', "_"));
                if let Some(v) = env(&var).filter(|v| !v.trim().is_empty()) {
                    let _ = index;
                    o.set(canonical(name), v.trim(), var);
                    break;
                }
            }
        }
        o.stanza = stanza;
        Ok(o)
    }

    fn set(&mut self, name: &str, value: &str, source: String) {
        self.values.insert(name.to_string(), value.to_string());
        self.sources.insert(name.to_string(), source);
    }

    /// The value of `repo1-<name>`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Where `repo1-<name>` was set, for messages.
    pub fn source(&self, name: &str) -> String {
        self.sources.get(name).cloned().unwrap_or_else(|| format!("repo1-{name}"))
    }

    /// Whether any repository option is set (the user configured pgBackRest's way).
    pub fn any(&self) -> bool {
        !self.values.is_empty()
    }

    /// The cipher passphrase when `repo1-cipher-type` is `aes-256-cbc`; an error for an
    /// encrypted repository without one, or a cipher walfetch does not know.
    pub fn cipher_pass(&self) -> Result<Option<String>> {
        match self.get("cipher-type").unwrap_or("none") {
            "none" => Ok(None),
            "aes-256-cbc" => match self.get("cipher-pass") {
                Some(p) => Ok(Some(p.to_string())),
                None => Err(Error::new(
                    ErrorKind::Config,
                    "repo1-cipher-type is aes-256-cbc but no passphrase is set: set repo1-cipher-pass (PGBACKREST_REPO1_CIPHER_PASS)",
                )),
            },
            other => Err(Error::new(
                ErrorKind::Config,
                format!("{}={other}: pgBackRest knows only none and aes-256-cbc", self.source("cipher-type")),
            )),
        }
    }

    /// Where the repository is: `(s3 bucket, key prefix)` or a directory.
    pub fn location(&self) -> Result<Option<RepoLocation>> {
        let path = self.get("path").unwrap_or("/var/lib/pgbackrest");
        if !path.starts_with('/') {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{}={path}: pgBackRest's repository path is absolute", self.source("path")),
            ));
        }
        match self.get("type").unwrap_or("posix") {
            "posix" | "cifs" => Ok(self.get("path").map(|_| RepoLocation::Directory(PathBuf::from(path)))),
            "s3" => {
                let bucket = self.get("s3-bucket").ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        "repo1-type is s3 but repo1-s3-bucket is not set (PGBACKREST_REPO1_S3_BUCKET)",
                    )
                })?;
                Ok(Some(RepoLocation::S3 {
                    bucket: bucket.to_string(),
                    prefix: path.trim_matches('/').to_string(),
                }))
            }
            other => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{}={other}: walfetch reads pgBackRest repositories on posix and s3 storage",
                    self.source("type")
                ),
            )),
        }
    }

    /// The S3 endpoint URL: `https://<endpoint or storage-host>[:<storage-port>]`, as
    /// pgBackRest connects (TLS always; `http://` only if the endpoint says so).
    pub fn endpoint_url(&self) -> Option<String> {
        let host = self.get("storage-host").or_else(|| self.get("s3-endpoint"))?;
        let with_scheme = if host.contains("://") {
            host.to_string()
        } else {
            format!("https://{host}")
        };
        Some(match self.get("storage-port") {
            Some(port) if !with_scheme.rsplit("//").next().unwrap_or("").contains(':') => format!("{with_scheme}:{port}"),
            _ => with_scheme,
        })
    }

    /// Static S3 credentials (`repo1-s3-key`, `-key-secret`, `-token`), when set.
    pub fn credentials(&self) -> Option<(String, String, Option<String>)> {
        if !matches!(self.get("s3-key-type").unwrap_or("shared"), "shared") {
            return None;
        }
        Some((
            self.get("s3-key")?.to_string(),
            self.get("s3-key-secret")?.to_string(),
            self.get("s3-token").map(str::to_string),
        ))
    }
}

/// A repository's place, from pgBackRest's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A bucket and the key prefix (`repo1-path` without its leading `/`).
    S3 { bucket: String, prefix: String },
    /// A directory (`repo1-type=posix`).
    Directory(PathBuf),
}

/// The options read from the environment, by their `repo1-` names.
const ENV_OPTIONS: &[&str] = &[
    "type",
    "path",
    "s3-bucket",
    "s3-endpoint",
    "s3-region",
    "s3-key",
    "s3-key-secret",
    "s3-token",
    "s3-key-type",
    "s3-uri-style",
    "s3-sse-customer-key",
    "s3-requester-pays",
    "storage-host",
    "storage-port",
    "storage-verify-tls",
    "storage-ca-file",
    "storage-ca-path",
    "cipher-type",
    "cipher-pass",
];

/// The stanza a file configures when it configures exactly one.
fn only_stanza(sections: &Sections) -> Option<String> {
    let mut names: Vec<&str> = sections
        .iter()
        .map(|(n, _)| n.split(':').next().unwrap_or(n))
        .filter(|n| *n != "global")
        .collect();
    names.sort_unstable();
    names.dedup();
    (names.len() == 1).then(|| names[0].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    }

    #[test]
    fn reads_the_file_as_pgbackrest_does_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbackrest.conf");
        std::fs::write(
            &path,
            "# provider's settings\n[global]\nrepo1-type=s3\nrepo1-path=/crunchy/abc\nrepo1-s3-bucket = bucket-a\nrepo1-s3-endpoint=s3.us-east-1.amazonaws.com\nrepo1-s3-key=AKIA1\nrepo1-s3-key-secret=s1\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=pw\nrepo-s3-region=us-east-1\n[global:restore]\nrepo1-s3-key=AKIA2\n[main]\npg1-path=/var/lib/pgsql\n[main:archive-get]\nrepo1-s3-key-secret=s2\n",
        )
        .unwrap();
        let o = RepoOptions::resolve(Some(&path), None, &env(&[])).unwrap();
        assert_eq!(o.stanza.as_deref(), Some("main"), "the only stanza of the file");
        assert_eq!(
            o.location().unwrap(),
            Some(RepoLocation::S3 {
                bucket: "bucket-a".into(),
                prefix: "crunchy/abc".into()
            })
        );
        assert_eq!(o.credentials(), Some(("AKIA2".into(), "s2".into(), None)));
        assert_eq!(o.endpoint_url().as_deref(), Some("https://s3.us-east-1.amazonaws.com"));
        assert_eq!(o.get("s3-region"), Some("us-east-1"));
        assert_eq!(o.cipher_pass().unwrap().as_deref(), Some("pw"));
        assert!(!format!("{o:?}").contains("pw\""), "secrets are not shown: {o:?}");
        let o = RepoOptions::resolve(
            Some(&path),
            None,
            &env(&[("PGBACKREST_REPO1_S3_KEY", "AKIA3"), ("PGBACKREST_STANZA", "main")]),
        )
        .unwrap();
        assert_eq!(o.credentials().unwrap().0, "AKIA3");
        assert_eq!(o.source("s3-key"), "PGBACKREST_REPO1_S3_KEY");
    }

    #[test]
    fn environment_only_and_mistakes() {
        let o = RepoOptions::resolve(
            None,
            None,
            &env(&[
                ("PGBACKREST_REPO1_PATH", "/srv/repo"),
                ("PGBACKREST_REPO1_CIPHER_TYPE", "aes-256-cbc"),
                ("PGBACKREST_REPO1_STORAGE_PORT", "9443"),
                ("PGBACKREST_REPO1_S3_ENDPOINT", "127.0.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(o.location().unwrap(), Some(RepoLocation::Directory("/srv/repo".into())));
        assert_eq!(o.endpoint_url().as_deref(), Some("https://127.0.0.1:9443"));
        let e = o.cipher_pass().unwrap_err();
        assert!(e.to_string().contains("repo1-cipher-pass"), "{e}");
        let o = RepoOptions::resolve(None, None, &env(&[("PGBACKREST_REPO1_PATH", "relative")])).unwrap();
        assert!(o.location().is_err());
    }
}
