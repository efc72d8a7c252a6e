//! The real barman-cloud (`scripts/install-deps --tests` puts barman in /opt/barman-venv)
//! as the writer of barman-cloud archives, as CloudNativePG runs it: a primary whose
//! archive_command is barman-cloud-wal-archive, backups by barman-cloud-backup, into the
//! S3 server.

use std::path::{Path, PathBuf};

use super::*;

/// The server name, as CloudNativePG names it after the cluster.
pub const SERVER: &str = "cluster-example";

/// A barman-cloud program (`scripts/install-deps --tests` puts barman in /opt/barman-venv).
pub fn barman_tool(name: &str) -> PathBuf {
    let dir = std::env::var("WALFETCH_BARMAN_BIN").unwrap_or_else(|_| "/opt/barman-venv/bin".into());
    let path = Path::new(&dir).join(name);
    assert!(
        path.exists(),
        "{} is not installed (scripts/install-deps --tests installs barman)",
        path.display()
    );
    path
}

/// A primary archiving with barman-cloud-wal-archive into the S3 server.
pub struct Source {
    /// The S3 server the backups and WAL go to.
    pub s3: S3Server,
    /// The primary (running).
    pub primary: Cluster,
    /// What barman's tools need: the credentials, the region, boto's checksum settings.
    pub barman_env: Vec<(String, String)>,
}

impl Source {
    /// A running primary whose WAL goes through `barman-cloud-wal-archive` with
    /// `wal_flag` (`--gzip`, ...; empty: uncompressed).
    pub fn new(scratch: &Scratch, wal_flag: &str, initdb_args: &[&str]) -> Source {
        let s3 = S3Server::start(scratch.dir("s3"));
        let barman_env: Vec<(String, String)> = [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required"),
            ("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let command = format!(
            "{} --cloud-provider aws-s3 --endpoint-url {} {wal_flag} s3://{BUCKET}/barman {SERVER} %p",
            barman_tool("barman-cloud-wal-archive").display(),
            s3.endpoint()
        );
        let mut primary = Cluster::init_archiving(scratch, "primary", &command, &barman_env, initdb_args, &[]);
        primary.start();
        Source { s3, primary, barman_env }
    }

    /// barman-cloud-backup with `flags` (`--gzip`, `-n NAME`, ...), as CloudNativePG runs it.
    pub fn backup(&self, flags: &[&str]) {
        let p = &self.primary;
        let out = as_postgres(barman_tool("barman-cloud-backup"))
            .args(["--cloud-provider", "aws-s3", "--endpoint-url", &self.s3.endpoint()])
            .arg("-h")
            .arg(&p.socket_dir)
            .args(["-p", &p.port.to_string(), "-U", "postgres", "--immediate-checkpoint"])
            .args(flags)
            .args([&format!("s3://{BUCKET}/barman"), SERVER])
            .envs(self.barman_env.iter().cloned())
            .output()
            .unwrap();
        assert!(out.status.success(), "barman-cloud-backup {flags:?}: {}", stderr(&out));
    }

    /// What walfetch is given: the prefix (and the S3 server's endpoint and credentials).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.s3.env();
        env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/barman")));
        env
    }

    /// Where the S3 server keeps an object of the server's.
    pub fn object_dir(&self, rel: &str) -> PathBuf {
        self.s3.data.join(BUCKET).join("barman").join(SERVER).join(rel)
    }
}
