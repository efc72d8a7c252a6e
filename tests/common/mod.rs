//! Test harness: real PostgreSQL clusters, a real S3-compatible server (s3s-fs), and
//! the real walfetch and walrus binaries, each in a temporary directory that is removed
//! (and whose servers are stopped) when the test ends, however it ends.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root every server and
//! every command that touches a data directory runs as the `postgres` user.

pub mod archive;
pub mod barman;
pub mod pgbackrest;
pub mod proxy;
pub mod wal;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "walfetch-test-access";
pub const SECRET_KEY: &str = "walfetch-test-secret-0123456789";
pub const BUCKET: &str = "archive";

/// True when running as root (then servers run as `postgres`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn pg_ids() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

/// Gives `path` (recursively) to the postgres user when running as root.
pub fn give_to_postgres(path: &Path) {
    if let Some((uid, gid)) = pg_ids() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A command that runs as the postgres user when we are root.
pub fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Directory of the server binaries of PostgreSQL `major`: Debian's, else the embedded
/// build `scripts/install-deps --tests` puts in /opt/walfetch-pg/<major>.
pub fn pg_bin_of(major: u32) -> PathBuf {
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    if debian.join("postgres").exists() {
        return debian;
    }
    let embedded = PathBuf::from(format!("/opt/walfetch-pg/{major}/bin"));
    assert!(
        embedded.join("postgres").exists(),
        "PostgreSQL {major} is not installed (scripts/install-deps --tests installs it)"
    );
    embedded
}

/// Directory of the PostgreSQL server binaries (the newest installed major).
pub fn pg_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(dir) = std::env::var("PG_BIN") {
            return PathBuf::from(dir);
        }
        let mut majors: Vec<u32> = fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed (see .ci/run)")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        majors.sort();
        PathBuf::from(format!(
            "/usr/lib/postgresql/{}/bin",
            majors.last().expect("no PostgreSQL major installed")
        ))
    })
}

/// A directory every test user can read and execute, holding copies of binaries that
/// live where `postgres` cannot reach them (such as /root/.cargo/bin).
fn shared_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("walfetch-test-bin-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    })
}

fn executable_by_postgres(path: &Path) -> bool {
    !is_root()
        || as_postgres("test")
            .arg("-x")
            .arg(path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

fn reachable(path: PathBuf) -> PathBuf {
    if executable_by_postgres(&path) {
        return path;
    }
    let copy = shared_bin_dir().join(path.file_name().unwrap());
    if !copy.exists() {
        let tmp = copy.with_extension("tmp");
        fs::copy(&path, &tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&tmp, &copy).unwrap();
    }
    copy
}

/// The walfetch binary under test, executable by postgres.
pub fn walfetch_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| reachable(PathBuf::from(env!("CARGO_BIN_EXE_walfetch"))))
}

fn find_tool(name: &str) -> PathBuf {
    let candidates = [
        std::env::var("CARGO_HOME").map(|h| PathBuf::from(h).join("bin").join(name)).ok(),
        std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo/bin").join(name)).ok(),
        Some(PathBuf::from("/usr/local/bin").join(name)),
        Some(PathBuf::from("/usr/bin").join(name)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed (see .ci/run)"))
}

/// walrus (the wal-g port), executable by postgres.
pub fn walrus_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| reachable(find_tool("walrus")))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A temporary directory owned by postgres, removed on drop.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new().prefix("walfetch-test-").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        give_to_postgres(dir.path());
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A subdirectory owned by postgres.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap();
        give_to_postgres(&p);
        p
    }
}

/// The S3-compatible server, serving `<data>/<bucket>/<key>` on 127.0.0.1.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub data: PathBuf,
}

impl S3Server {
    pub fn start(data: PathBuf) -> S3Server {
        S3Server::start_with(data, free_port(), ACCESS_KEY, SECRET_KEY)
    }

    /// A server on `port` accepting only the key pair `access`/`secret` (to rotate
    /// credentials: stop the server, start another on the same port and data).
    pub fn start_with(data: PathBuf, port: u16, access: &str, secret: &str) -> S3Server {
        fs::create_dir_all(data.join(BUCKET)).unwrap();
        give_to_postgres(&data);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let child = Command::new(find_tool("s3s-fs"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                access,
                "--secret-key",
                secret,
            ])
            .arg(&data)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server { child, port, data }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a client needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ENDPOINT".into(), self.endpoint()),
            ("AWS_S3_FORCE_PATH_STYLE".into(), "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL cluster in a temporary directory, on a free port with a private socket.
pub struct Cluster {
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub env: Vec<(String, String)>,
    /// Directory of the server binaries this cluster runs with.
    pub bin: PathBuf,
    log: PathBuf,
    running: bool,
}

impl Cluster {
    /// `initdb` a new cluster.
    pub fn init(scratch: &Scratch, name: &str, initdb_args: &[&str]) -> Cluster {
        Cluster::init_with(scratch, name, pg_bin(), initdb_args)
    }

    /// `initdb` a new cluster with the server binaries in `bin`.
    pub fn init_with(scratch: &Scratch, name: &str, bin: &Path, initdb_args: &[&str]) -> Cluster {
        Cluster::init_env(scratch, name, bin, initdb_args, &[])
    }

    /// `initdb` a new cluster with the server binaries in `bin`, `initdb` seeing `env`
    /// (`LOCPATH`, say); the server does not (set [`Cluster::env`] for it).
    pub fn init_env(scratch: &Scratch, name: &str, bin: &Path, initdb_args: &[&str], env: &[(String, String)]) -> Cluster {
        let data = scratch.path().join(name);
        let socket_dir = scratch.dir(&format!("{name}-socket"));
        let out = as_postgres(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .args(initdb_args)
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut c = Cluster::attach(scratch, name, data);
        c.bin = bin.to_path_buf();
        c.socket_dir = socket_dir;
        c.configure(&[
            ("fsync", "off"),
            ("full_page_writes", "on"),
            ("shared_buffers", "32MB"),
            ("max_wal_senders", "2"),
            ("wal_level", "replica"),
        ]);
        c
    }

    /// A new cluster that archives its WAL with `archive_command` into the archive `env`
    /// configures, with `extra` settings; not started yet (a test may prepare more).
    pub fn init_archiving(
        scratch: &Scratch,
        name: &str,
        archive_command: &str,
        env: &[(String, String)],
        initdb_args: &[&str],
        extra: &[(&str, &str)],
    ) -> Cluster {
        let mut c = Cluster::init(scratch, name, initdb_args);
        c.env = env.to_vec();
        c.configure(&[("archive_mode", "on"), ("archive_command", archive_command)]);
        c.configure(extra);
        c
    }

    /// A new cluster that archives its WAL with `writer wal-push %p` (walfetch or walrus)
    /// into the archive `env` configures, started.
    pub fn archiving(scratch: &Scratch, name: &str, writer: &Path, env: &[(String, String)], initdb_args: &[&str]) -> Cluster {
        let mut c = Cluster::init_archiving(scratch, name, &push_command(writer), env, initdb_args, &[]);
        c.start();
        c
    }

    /// Whether the server in this data directory is running.
    pub fn is_running(&self) -> bool {
        as_postgres(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits until the server has stopped by itself (a FATAL in recovery); false if it
    /// still runs after `secs`.
    pub fn wait_stopped(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if !self.is_running() {
                self.running = false;
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// What `pg_controldata` says of `label` (for example "Database cluster state:").
    pub fn control_field(&self, label: &str) -> String {
        let out = as_postgres(self.bin.join("pg_controldata"))
            .arg(&self.data)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(label).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    }

    /// A cluster for an existing data directory (a restored standby).
    pub fn attach(scratch: &Scratch, name: &str, data: PathBuf) -> Cluster {
        let socket_dir = scratch.dir(&format!("{name}-socket"));
        let port = free_port();
        Cluster {
            log: scratch.path().join(format!("{name}.log")),
            data,
            socket_dir,
            port,
            env: Vec::new(),
            bin: pg_bin().to_path_buf(),
            running: false,
        }
    }

    /// Appends settings to postgresql.auto.conf (which wins over postgresql.conf).
    pub fn configure(&mut self, settings: &[(&str, &str)]) {
        let path = self.data.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        for (k, v) in settings {
            text.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        fs::write(&path, text).unwrap();
        give_to_postgres(&path);
    }

    /// Runs `pg_ctl start` on 127.0.0.1, a free port and a private socket directory.
    fn pg_ctl_start(&mut self) -> Output {
        let port = self.port.to_string();
        let sock = self.socket_dir.display().to_string();
        self.configure(&[
            ("port", &port),
            ("unix_socket_directories", &sock),
            ("listen_addresses", "127.0.0.1"),
        ]);
        let out = as_postgres(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"])
            .envs(self.env.iter().cloned())
            .output()
            .unwrap();
        self.running = true;
        out
    }

    /// Starts the server, expecting that it may stop by itself (a FATAL during archive
    /// recovery); returns whether `pg_ctl start` reported success.
    pub fn try_start(&mut self) -> bool {
        self.pg_ctl_start().status.success()
    }

    pub fn start(&mut self) {
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        self.running = true;
    }

    /// Takes charge of a server started outside the harness, so it is stopped on drop.
    pub fn adopt_running(&mut self) {
        self.running = true;
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = as_postgres(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"])
                .output();
            self.running = false;
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// libpq environment for clients of this cluster.
    pub fn libpq_env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), self.socket_dir.display().to_string()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), "postgres".into()),
            ("PGDATABASE".into(), "postgres".into()),
        ]
    }

    /// Runs SQL in `database`, returning unaligned tuples-only output.
    pub fn sql_in(&self, database: &str, sql: &str) -> String {
        let out = as_postgres("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql])
            .envs(self.libpq_env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql -d {database} {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs SQL, returning unaligned tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let out = as_postgres("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .envs(self.libpq_env())
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs pgbench with `args`.
    pub fn pgbench(&self, args: &[&str]) {
        let out = as_postgres("pgbench").args(args).envs(self.libpq_env()).output().unwrap();
        assert!(out.status.success(), "pgbench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Takes a base backup of this (running) cluster with `writer` (walfetch or walrus),
    /// configured by `env`; panics with the writer's output if it fails.
    pub fn backup_push(&self, writer: &Path, env: &[(String, String)]) {
        let out = as_postgres(writer)
            .arg("backup-push")
            .arg(&self.data)
            .envs(env.iter().cloned())
            .envs(self.libpq_env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{} backup-push: {}", writer.display(), stderr(&out));
    }

    /// md5 of a table's rows in order: equal on two clusters means equal contents.
    pub fn table_digest(&self, table: &str, order: &str) -> String {
        self.sql(&format!(
            "SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, ',' ORDER BY {order}), '')) FROM {table} t"
        ))
    }

    /// Switches WAL and waits until the segment holding `lsn` is archived.
    pub fn archive_through(&self, lsn: &str) {
        self.sql("SELECT pg_switch_wal()");
        let deadline = Instant::now() + Duration::from_secs(60);
        let want = self.sql(&format!("SELECT pg_walfile_name('{lsn}')"));
        loop {
            let done = self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if done.len() == 24 && done >= want {
                return;
            }
            let failed = self.sql("SELECT failed_count || ' ' || coalesce(last_failed_wal, '') FROM pg_stat_archiver");
            assert!(
                Instant::now() < deadline,
                "WAL {want} not archived (last {done}, failed {failed})\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a standby has replayed up to `lsn`.
    pub fn wait_replayed(&self, lsn: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ok = as_postgres("psql")
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-c",
                    &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
                ])
                .envs(self.libpq_env())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "t")
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "standby did not replay to {lsn}\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// The archive_command that pushes with `writer` (walfetch or walrus).
pub fn push_command(writer: &Path) -> String {
    format!("{} wal-push %p", writer.display())
}

/// Runs walfetch as postgres with `env` (and no inherited storage settings).
pub fn walfetch(args: &[&str], env: &[(String, String)]) -> Output {
    walfetch_in(None, args, env)
}

/// Like [`walfetch`], in directory `cwd`.
pub fn walfetch_in(cwd: Option<&Path>, args: &[&str], env: &[(String, String)]) -> Output {
    // Few retries by default, so failure tests finish fast, and no prefetch fetcher, so a
    // test can replace an object between two calls; a test's env may override both.
    let defaults = [("WALFETCH_MAX_RETRIES", "2"), ("WALFETCH_PREFETCH", "off")];
    let mut cmd = walfetch_command(cwd, args, &defaults, env);
    cmd.stdin(Stdio::null());
    cmd.output().unwrap()
}

/// Starts walfetch in the background (as postgres when root), in a new user's
/// environment as [`walfetch`] runs it, without its defaults.
pub fn spawn_walfetch(cwd: Option<&Path>, args: &[&str], env: &[(String, String)]) -> Child {
    let mut cmd = walfetch_command(cwd, args, &[], env);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().unwrap()
}

/// The walfetch command every test runs: as postgres when root, `defaults` then `env`
/// set, in a new user's environment: no archive and no libpq settings but those given.
fn walfetch_command(cwd: Option<&Path>, args: &[&str], defaults: &[(&str, &str)], env: &[(String, String)]) -> Command {
    let mut cmd = as_postgres(walfetch_bin());
    cmd.args(args).envs(defaults.iter().copied()).envs(env.iter().cloned());
    for var in [
        "WALG_S3_PREFIX",
        "WALG_FILE_PREFIX",
        "WALE_S3_PREFIX",
        "WALE_FILE_PREFIX",
        "AWS_PROFILE",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
    ] {
        if !env.iter().any(|(k, _)| k == var) {
            cmd.env_remove(var);
        }
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd
}

/// SIGKILL to the walfetch process (runuser's child when root).
pub fn kill9(child: &mut Child) {
    let _ = Command::new("pkill").args(["-9", "-P", &child.id().to_string()]).status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Every file under `dir`, relative path → contents (symlinks as their target).
pub fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if meta.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                out.insert(rel, fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes());
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Asserts two restored directories are byte-identical.
pub fn assert_same_tree(resumed: &Path, whole: &Path) {
    let (a, b) = (tree(resumed), tree(whole));
    let names = |t: &std::collections::BTreeMap<PathBuf, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&b),
        "the resumed restore has other files than an uninterrupted one"
    );
    for (path, data) in &a {
        assert!(data == &b[path], "{} differs from an uninterrupted restore", path.display());
    }
}

/// `env` with its S3 endpoint settings pointing at `endpoint` (a proxy in front of the server).
pub fn via(env: &[(String, String)], endpoint: &str) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| match k.as_str() {
            "AWS_ENDPOINT_URL" | "AWS_ENDPOINT" => (k.clone(), endpoint.to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

/// The environment that reaches the test S3 server at `endpoint` (the server itself, or
/// a proxy in front of it) with the archive at `s3://archive/<prefix>`, then `extra`.
pub fn s3_archive_env(endpoint: &str, prefix: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL".into(), endpoint.into()),
        ("AWS_S3_FORCE_PATH_STYLE".into(), "true".into()),
        ("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/{prefix}")),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// stderr of an output, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fake but well-formed WAL segment (long page header only) for `name`.
pub fn fake_segment(name: &str, size: u64, sysid: u64) -> Vec<u8> {
    let tli = u32::from_str_radix(&name[0..8], 16).unwrap();
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    let segno = log * (0x1_0000_0000 / size) + seg;
    let mut data = vec![0u8; size as usize];
    data[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    data[2..4].copy_from_slice(&2u16.to_le_bytes());
    data[4..8].copy_from_slice(&tli.to_le_bytes());
    data[8..16].copy_from_slice(&(segno * size).to_le_bytes());
    data[24..32].copy_from_slice(&sysid.to_le_bytes());
    data[32..36].copy_from_slice(&(size as u32).to_le_bytes());
    data[36..40].copy_from_slice(&8192u32.to_le_bytes());
    // Some non-zero content so codecs have something to do.
    for (i, b) in data[8192..16384].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    data
}

/// A credentials file for `access`/`secret`, replaced atomically as a renewal would.
pub fn write_credentials(path: &Path, access: &str, secret: &str) {
    let tmp = path.with_extension("new");
    fs::write(
        &tmp,
        format!("[default]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    give_to_postgres(&tmp);
    fs::rename(&tmp, path).unwrap();
}

/// The environment of a machine whose credentials come from the file `creds` (and
/// nothing else of the chain), for the S3 server on `port`, the archive at `prefix`
/// in the bucket.
pub fn credentials_file_env(creds: &Path, port: u16, prefix: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_SHARED_CREDENTIALS_FILE".into(), creds.display().to_string()),
        ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{port}")),
        ("AWS_S3_FORCE_PATH_STYLE".into(), "true".into()),
        ("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/{prefix}")),
    ]
}

/// walrus restores LATEST of the archive `env` configures into `scratch/<name>`, set up
/// as a standby whose restore_command is walrus's own wal-fetch with `env`'s `WALG_`
/// settings (its credentials from the server's environment); not started.
pub fn walrus_standby(scratch: &Scratch, name: &str, env: &[(String, String)]) -> Cluster {
    let restored = scratch.path().join(name);
    let out = as_postgres(walrus_bin())
        .arg("backup-fetch")
        .arg(&restored)
        .arg("LATEST")
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(out.status.success(), "walrus backup-fetch: {}", stderr(&out));
    fs::write(restored.join("standby.signal"), "").unwrap();
    let settings: String = env
        .iter()
        .filter(|(k, _)| k.starts_with("WALG_"))
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    let conf = format!(
        "archive_mode = 'off'\nrestore_command = 'env {settings}{} wal-fetch %f %p'\n",
        walrus_bin().display()
    );
    let auto = restored.join("postgresql.auto.conf");
    fs::write(&auto, fs::read_to_string(&auto).unwrap_or_default() + &conf).unwrap();
    give_to_postgres(&restored);
    let mut standby = Cluster::attach(scratch, name, restored);
    standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby
}

/// The WAL-E 1.1.1 program (`WALE_BIN`, else where `scripts/install-deps --tests` puts it).
pub fn wale_bin() -> PathBuf {
    let path = std::env::var("WALE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/opt/wal-e-venv/bin/wal-e"));
    assert!(
        path.exists(),
        "WAL-E is not installed at {} (scripts/install-deps --tests installs it)",
        path.display()
    );
    path
}

/// A primary archived by WAL-E with `env`: an offline base backup of pgbench scale 1,
/// then 200 transactions and a table `after_backup`, archived through. Returns the last
/// LSN and the digests of `tables`; the primary is stopped.
pub fn wale_archive(scratch: &Scratch, env: &[(String, String)], tables: &[(&str, &str)]) -> (String, Vec<String>) {
    let archive_command = format!("{} wal-push --pool-size 1 %p", wale_bin().display());
    let mut primary = Cluster::init_archiving(scratch, "primary", &archive_command, env, &[], &[]);
    // WAL-E names offline backups correctly only from 0/10000000 on (see test-infra notes).
    let out = as_postgres(pg_bin().join("pg_resetwal"))
        .args(["-l", "000000010000000000000010"])
        .arg(&primary.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_resetwal: {}", stderr(&out));
    primary.start();
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    primary.stop();
    let out = as_postgres(wale_bin())
        .args(["backup-push", "--while-offline"])
        .arg(&primary.data)
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(out.status.success(), "wal-e backup-push: {}", stderr(&out));
    primary.start();
    primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    primary.sql("CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 10000) g");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let expected = tables.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
    primary.stop();
    (lsn, expected)
}

/// A TLS terminator (socat) on a free port in front of `upstream`, with a certificate
/// for 127.0.0.1 signed by a CA of its own; returns it, its port and the CA's PEM file.
pub fn tls_terminator(scratch: &Scratch, upstream: u16) -> (Child, u16, std::path::PathBuf) {
    let dir = scratch.dir("tls");
    let sh = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).current_dir(&dir).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=walfetch-test-ca 2>/dev/null");
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null");
    fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1\n").unwrap();
    sh("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null");
    sh("cat server.pem server.key > server-bundle.pem");
    let port = free_port();
    let child = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{port},reuseaddr,fork,cert={},verify=0",
            dir.join("server-bundle.pem").display()
        ))
        .arg(format!("TCP:127.0.0.1:{upstream}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "socat did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ca = dir.join("ca.pem");
    give_to_postgres(&dir);
    (child, port, ca)
}

/// The exit code of a finished walfetch.
pub fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exited normally")
}

/// Waits up to `secs` for `ok`, failing the test with `what` after.
pub fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real primary archiving to S3, a base backup, and WAL after it; returns the LSN the
/// archive reaches and the digest of the table written after the backup.
pub fn primary_with_backup(scratch: &Scratch, env: &[(String, String)], initdb: &[&str]) -> (Cluster, String, String) {
    let mut primary = Cluster::archiving(scratch, "primary", walfetch_bin(), env, initdb);
    primary.sql("CREATE TABLE before_backup AS SELECT g FROM generate_series(1, 1000) g");
    primary.backup_push(walfetch_bin(), env);
    primary.sql("CREATE TABLE after_backup AS SELECT g, repeat(md5(g::text), 60) AS t FROM generate_series(1, 6000) g");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let digest = primary.table_digest("after_backup", "g");
    primary.stop();
    (primary, lsn, digest)
}

/// Starts `pg` in archive recovery and waits for it to stop by itself (a restore_command
/// exit of 128 or more is fatal), never promoting; returns its log.
pub fn recovery_stops(pg: &mut Cluster, through: &str) -> String {
    pg.try_start();
    assert!(
        pg.wait_stopped(90),
        "archive recovery went on through {through}:\n{}",
        pg.log_text()
    );
    let log = pg.log_text();
    assert!(
        !log.contains("archive recovery complete") && !log.contains("selected new timeline"),
        "promoted:\n{log}"
    );
    log
}

/// walfetch restores `backup` of the archive `env` configures into `scratch/<name>` as
/// a standby; the standby is attached, not started.
pub fn restore_standby(scratch: &Scratch, name: &str, backup: &str, env: &[(String, String)], extra: &[&str]) -> Cluster {
    let dir = scratch.path().join(name);
    let mut args = vec!["backup-fetch", dir.to_str().unwrap(), backup, "--standby"];
    args.extend(extra);
    let out = walfetch(&args, env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "backup-fetch {backup}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let mut standby = Cluster::attach(scratch, name, dir);
    standby.env = env.to_vec();
    standby
}

/// The pgbench tables a standby is compared on, with their order.
pub const PGBENCH_TABLES: &[(&str, &str)] = &[("pgbench_accounts", "aid"), ("pgbench_history", "tid, bid, aid, delta, mtime")];

/// The digests of the pgbench tables of `c`.
pub fn pgbench_digests(c: &Cluster) -> Vec<String> {
    PGBENCH_TABLES.iter().map(|(t, o)| c.table_digest(t, o)).collect()
}

/// Restores `backup` as a standby with `env` (and `extra` backup-fetch options), replays
/// it to `lsn`, and compares its pgbench tables with `expected`.
pub fn restores_and_replays(
    scratch: &Scratch,
    name: &str,
    backup: &str,
    env: &[(String, String)],
    extra: &[&str],
    lsn: &str,
    expected: &[String],
) {
    let mut standby = restore_standby(scratch, name, backup, env, extra);
    standby.start();
    standby.wait_replayed(lsn);
    assert_eq!(pgbench_digests(&standby), expected, "{name}: the standby differs from the primary");
    assert!(
        standby.log_text().contains("restored log file"),
        "{name}: nothing replayed from the archive"
    );
    standby.stop();
}
