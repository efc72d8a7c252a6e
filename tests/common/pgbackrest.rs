//! The real pgBackRest (Debian's 2.45, `scripts/install-deps --tests`) as the writer of
//! repositories: a primary that archives with `archive-push`, backups of every type,
//! in a directory or in the S3 server behind a TLS terminator with its own CA (pgBackRest
//! speaks S3 only over TLS).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;

use super::*;

/// The stanza every test uses.
pub const STANZA: &str = "main";

/// The pgBackRest program (`WALFETCH_PGBACKREST`, else Debian's).
pub fn pgbackrest_bin() -> PathBuf {
    let path = std::env::var("WALFETCH_PGBACKREST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/pgbackrest"));
    assert!(
        path.exists(),
        "pgBackRest is not installed at {} (scripts/install-deps --tests installs it)",
        path.display()
    );
    path
}

/// Where a repository lives.
pub enum Place {
    /// A directory.
    Directory(PathBuf),
    /// The S3 server, through TLS on `port`, trusting `ca`, under `path` in the bucket.
    S3 { port: u16, ca: PathBuf, path: String },
}

/// A primary archiving to a pgBackRest repository, and the repository's configuration.
pub struct Source {
    /// The primary (running).
    pub primary: Cluster,
    /// pgBackRest's configuration file (repo1-* and the stanza's pg1-*).
    pub config: PathBuf,
    /// The repository's repo1-* options, as written in the file.
    pub repo: Vec<(String, String)>,
    /// Where the repository is.
    pub place: Place,
    /// The TLS terminator in front of S3, when there is one.
    pub tls: Option<Child>,
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(mut t) = self.tls.take() {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

/// The repo1-* options for `place`.
fn repo_options(place: &Place) -> Vec<(String, String)> {
    match place {
        Place::Directory(dir) => vec![("repo1-path".into(), dir.display().to_string())],
        Place::S3 { port, ca, path } => vec![
            ("repo1-type".into(), "s3".into()),
            ("repo1-path".into(), path.clone()),
            ("repo1-s3-bucket".into(), BUCKET.into()),
            ("repo1-s3-endpoint".into(), "127.0.0.1".into()),
            ("repo1-storage-port".into(), port.to_string()),
            ("repo1-s3-region".into(), "us-east-1".into()),
            ("repo1-s3-key".into(), ACCESS_KEY.into()),
            ("repo1-s3-key-secret".into(), SECRET_KEY.into()),
            ("repo1-s3-uri-style".into(), "path".into()),
            ("repo1-storage-ca-file".into(), ca.display().to_string()),
        ],
    }
}

impl Source {
    /// A new primary (with `initdb_args`) archiving into a repository at `place`, with the
    /// pgBackRest `options` (`compress-type`, `repo1-bundle`, `repo1-cipher-pass`, ...);
    /// the stanza created, nothing backed up yet.
    pub fn new(scratch: &Scratch, place: Place, tls: Option<Child>, options: &[(&str, &str)], initdb_args: &[&str]) -> Source {
        let mut primary = Cluster::init(scratch, "primary", initdb_args);
        let config = scratch.path().join("pgbackrest.conf");
        let work = scratch.dir("pgbackrest-work");
        let mut repo = repo_options(&place);
        repo.extend(options.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut text = String::from("[global]\n");
        for (k, v) in &repo {
            text.push_str(&format!("{k}={v}\n"));
        }
        for (k, v) in [
            ("log-level-console", "warn".to_string()),
            ("log-level-file", "off".to_string()),
            ("log-path", work.display().to_string()),
            ("lock-path", work.display().to_string()),
            ("spool-path", work.display().to_string()),
            ("start-fast", "y".to_string()),
            ("archive-timeout", "60".to_string()),
        ] {
            text.push_str(&format!("{k}={v}\n"));
        }
        text.push_str(&format!(
            "\n[{STANZA}]\npg1-path={}\npg1-socket-path={}\npg1-port={}\npg1-user=postgres\n",
            primary.data.display(),
            primary.socket_dir.display(),
            primary.port
        ));
        fs::write(&config, text).unwrap();
        give_to_postgres(&config);
        if let Place::Directory(dir) = &place {
            fs::create_dir_all(dir).unwrap();
            give_to_postgres(dir);
        }
        primary.configure(&[
            ("archive_mode", "on"),
            (
                "archive_command",
                &format!(
                    "{} --config={} --stanza={STANZA} archive-push %p",
                    pgbackrest_bin().display(),
                    config.display()
                ),
            ),
        ]);
        primary.start();
        let source = Source {
            primary,
            config,
            repo,
            place,
            tls,
        };
        source.run(&["stanza-create"]);
        source
    }

    /// A primary archiving into a repository in `scratch/repo`.
    pub fn in_directory(scratch: &Scratch, options: &[(&str, &str)]) -> Source {
        Source::new(scratch, Place::Directory(scratch.path().join("repo")), None, options, &[])
    }

    /// A primary archiving into a repository in the S3 server `s3`, through TLS.
    pub fn in_s3(scratch: &Scratch, s3: &S3Server, path: &str, options: &[(&str, &str)]) -> Source {
        let (tls, port, ca) = tls_terminator(scratch, s3.port);
        Source::new(
            scratch,
            Place::S3 {
                port,
                ca,
                path: path.to_string(),
            },
            Some(tls),
            options,
            &[],
        )
    }

    /// Runs pgBackRest with this configuration and the stanza; panics with its output
    /// on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = as_postgres(pgbackrest_bin())
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbackrest {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Takes a backup of `kind` (full, diff, incr) with `extra` options; returns its label.
    pub fn backup(&self, kind: &str, extra: &[&str]) -> String {
        let mut args = vec!["backup".to_string(), format!("--type={kind}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args);
        self.labels().pop().unwrap()
    }

    /// The labels of the repository's backups, oldest first.
    pub fn labels(&self) -> Vec<String> {
        let info: serde_json::Value = serde_json::from_str(&self.run(&["info", "--output=json"])).unwrap();
        info[0]["backup"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["label"].as_str().unwrap().to_string())
            .collect()
    }

    /// The environment that points walfetch at the repository through pgBackRest's own
    /// configuration file (and nothing else).
    pub fn config_env(&self) -> Vec<(String, String)> {
        vec![("PGBACKREST_CONFIG".into(), self.config.display().to_string())]
    }

    /// The same settings as `PGBACKREST_*` variables only.
    pub fn env_only(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .repo
            .iter()
            .filter(|(k, _)| k.starts_with("repo1-"))
            .map(|(k, v)| (format!("PGBACKREST_{}", k.to_ascii_uppercase().replace('-', "_")), v.clone()))
            .collect();
        env.push(("PGBACKREST_STANZA".into(), STANZA.into()));
        env
    }

    /// The repository's directory (for a directory repository).
    pub fn dir(&self) -> &Path {
        match &self.place {
            Place::Directory(d) => d,
            Place::S3 { .. } => panic!("an S3 repository has no directory"),
        }
    }
}
