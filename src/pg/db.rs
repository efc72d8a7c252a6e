//! A connection to a PostgreSQL server: the cluster being backed up, through libpq's
//! environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`), or the server
//! of a data directory ([`Db::for_datadir`]: where its `postmaster.pid` says, and proven
//! to be that server); and the SQL of a non-exclusive base backup for each version (9.6
//! to 18).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Libpq;
use crate::error::{Error, ErrorKind, Result};
use crate::pg::datadir::system_identifier;
use crate::pg::postmaster::{self, Postmaster};
use crate::wal::name::Lsn;

/// One connection, driven by a small runtime of its own.
pub struct Db {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    /// `server_version_num`.
    pub version: i32,
}

/// A database error naming what was being done.
fn db_error(what: &str, e: tokio_postgres::Error) -> Error {
    Error::new(ErrorKind::Database, format!("{what}: {}", server_says(&e)))
}

/// The server's message with its detail (a locale "not recognized by setlocale()"), or
/// the client's when the server said nothing.
fn server_says(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{}: {detail}", d.message()),
            None => d.message().to_string(),
        },
        None => e.to_string(),
    }
}

fn parse_lsn(text: &str) -> Result<Lsn> {
    Lsn::parse(text).ok_or_else(|| Error::new(ErrorKind::Database, format!("server returned '{text}', not an LSN")))
}

/// The first line of a statement, for messages.
fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or("")
}

/// A statement that failed on the server, or a connection that broke.
#[derive(Debug, Clone)]
pub struct SqlFailure {
    /// The SQLSTATE, when the server answered with one (`XX002`: index corrupted).
    pub code: Option<String>,
    /// The server's message (or the client's, when the connection broke).
    pub message: String,
    /// The connection is gone (the server stopped or crashed).
    pub connection_lost: bool,
}

impl std::fmt::Display for SqlFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} (SQLSTATE {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What `pg_backup_stop` returns.
pub struct BackupStop {
    /// The backup's finish LSN.
    pub lsn: Lsn,
    /// The `backup_label` contents.
    pub label: String,
    /// The `tablespace_map` contents, if there are tablespaces.
    pub tablespace_map: Option<String>,
}

impl Db {
    /// Connects (as `PGUSER`, else the OS user, else `postgres`; through the socket in
    /// `/var/run/postgresql` unless `PGHOST` says otherwise) and checks that the server
    /// is a primary of a version walfetch backs up.
    pub fn connect(libpq: &Libpq) -> Result<Db> {
        let db = Db::open(libpq, "walfetch backup-push")?;
        if db.version < 90600 {
            return Err(Error::new(
                ErrorKind::Database,
                format!("server_version_num {}: walfetch backs up PostgreSQL 9.6 and later", db.version),
            ));
        }
        if db.in_recovery()? {
            return Err(Error::new(
                ErrorKind::Database,
                "the server is a standby; run backup-push against the primary".to_string(),
            ));
        }
        Ok(db)
    }

    /// Connects as [`Db::connect`] does, to a primary or a standby, as `application`.
    pub fn open(libpq: &Libpq, application: &str) -> Result<Db> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorKind::LocalIo, format!("cannot start the I/O runtime: {e}")))?;
        let user = libpq.user.clone().unwrap_or_else(|| "postgres".into());
        let mut config = tokio_postgres::Config::new();
        config
            .user(&user)
            .dbname(libpq.database.clone().unwrap_or_else(|| user.clone()))
            .application_name(application);
        match &libpq.host {
            Some(h) if h.starts_with('/') => config.host_path(h),
            Some(h) => config.host(h),
            None => config.host_path("/var/run/postgresql"),
        };
        if let Some(p) = &libpq.port {
            config.port(
                p.parse()
                    .map_err(|_| Error::new(ErrorKind::Config, format!("PGPORT '{p}' is not a port")))?,
            );
        }
        if let Some(pw) = &libpq.password {
            config.password(pw);
        }
        let (client, connection) = runtime.block_on(config.connect(tokio_postgres::NoTls)).map_err(|e| {
            db_error(
                &format!(
                    "connecting to PostgreSQL at {} port {} as {user}",
                    libpq.host.as_deref().unwrap_or("/var/run/postgresql"),
                    libpq.port.as_deref().unwrap_or("5432")
                ),
                e,
            )
        })?;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(cause = %e, "PostgreSQL connection ended");
            }
        });
        let mut db = Db {
            runtime,
            client,
            version: 0,
        };
        db.version = db.text("SHOW server_version_num")?.parse().unwrap_or(0);
        Ok(db)
    }

    /// Connects to the server running `datadir`, to `database` (else `PGDATABASE`, else
    /// the user's name): where its `postmaster.pid` says unless `PGHOST`/`PGPORT`
    /// override, and only when the server reached reports `datadir` as its data
    /// directory and the system identifier in `datadir/global/pg_control`. No server
    /// running there is [`ErrorKind::NotRunning`]; another server is
    /// [`ErrorKind::WrongServer`], and nothing is done on it.
    pub fn for_datadir(datadir: &Path, libpq: &Libpq, application: &str, database: Option<&str>) -> Result<(Db, Postmaster)> {
        let pm = postmaster::running(datadir)?;
        let mut target = libpq.clone();
        if target.host.is_none() {
            target.host = pm.host();
            if target.host.is_none() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "the server of {} listens on no socket directory and no TCP address; set PGHOST",
                        datadir.display()
                    ),
                ));
            }
        }
        if target.port.is_none() {
            target.port = Some(pm.port.to_string());
        }
        if let Some(db) = database {
            target.database = Some(db.to_string());
        }
        let db = Db::open(&target, application)?;
        db.prove_serves(datadir)?;
        Ok((db, pm))
    }

    /// Fails with [`ErrorKind::WrongServer`] unless this server runs `datadir`: the same
    /// data directory (resolved through links) and the system identifier in its
    /// `pg_control`. Two standbys restored from one source share the identifier, so the
    /// directory decides between them; the identifier catches a directory reused by
    /// another cluster.
    pub fn prove_serves(&self, datadir: &Path) -> Result<()> {
        let reported = self.text("SHOW data_directory").map_err(|e| {
            e.context(format!(
                "asking the server for its data directory, to prove it runs {} (connect as a superuser or a member of pg_read_all_settings)",
                datadir.display()
            ))
        })?;
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let (theirs, ours) = (canonical(Path::new(&reported)), canonical(datadir));
        let sysid = self.system_identifier()?;
        let wanted = system_identifier(datadir)?;
        if theirs != ours || wanted.is_some_and(|w| w != sysid) {
            return Err(Error::new(
                ErrorKind::WrongServer,
                format!(
                    "the server reached (data directory {}, system identifier {sysid}) is not the one running {} (system identifier {}); nothing was done: unset PGHOST/PGPORT or point them at that server",
                    reported,
                    datadir.display(),
                    wanted.map_or("unknown".to_string(), |w| w.to_string())
                ),
            ));
        }
        Ok(())
    }

    /// Whether the server is in recovery (a standby).
    pub fn in_recovery(&self) -> Result<bool> {
        Ok(self.text("SELECT pg_is_in_recovery()::text")? == "true")
    }

    /// The one value `sql` returns, as text (`None` for NULL).
    pub fn value(&self, sql: &str) -> Result<Option<String>> {
        self.query_one(sql, &[])?.try_get(0).map_err(|e| db_error(sql, e))
    }

    /// The rows `sql` returns, each column as text (`None` for NULL): the queries that
    /// inspect a server cast what they select to text, so one shape serves them all.
    /// `params` are text too (cast them in the SQL: `$1::text::regclass`).
    pub fn rows(&self, sql: &str, params: &[&str]) -> Result<Vec<Vec<Option<String>>>> {
        self.try_rows(sql, params).map_err(|f| {
            Error::new(
                if f.connection_lost {
                    ErrorKind::NotRunning
                } else {
                    ErrorKind::Database
                },
                format!("{}: {}", first_line(sql), f.message),
            )
        })
    }

    /// Like [`Db::rows`], keeping the server's SQLSTATE of a failure (the caller tells
    /// "corrupt" from "could not run").
    pub fn try_rows(&self, sql: &str, params: &[&str]) -> std::result::Result<Vec<Vec<Option<String>>>, SqlFailure> {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let rows = self.runtime.block_on(self.client.query(sql, &params)).map_err(|e| SqlFailure {
            code: e.code().map(|c| c.code().to_string()),
            message: server_says(&e),
            connection_lost: e.is_closed() || e.as_db_error().is_none() && e.code().is_none(),
        })?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get::<_, Option<String>>(i).map_err(|e| SqlFailure {
                            code: None,
                            message: format!("column {i} is not text: {e}"),
                            connection_lost: false,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    fn query_one(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<tokio_postgres::Row> {
        self.runtime
            .block_on(self.client.query_one(sql, params))
            .map_err(|e| db_error(sql, e))
    }

    fn text(&self, sql: &str) -> Result<String> {
        self.query_one(sql, &[])?.try_get(0).map_err(|e| db_error(sql, e))
    }

    /// The cluster's databases: name and OID (what `--restore-only` selects by).
    pub fn databases(&self) -> Result<Vec<(String, u32)>> {
        let rows = self.rows("SELECT datname::text, oid::text FROM pg_database ORDER BY oid", &[])?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?.parse().ok()?)))
            .collect())
    }

    /// The cluster's system identifier.
    pub fn system_identifier(&self) -> Result<u64> {
        Ok(self
            .text("SELECT system_identifier::text FROM pg_control_system()")?
            .parse()
            .unwrap_or(0))
    }

    /// Starts a non-exclusive backup with a fast checkpoint; returns its start LSN and
    /// the name of the WAL segment holding it (what wal-g names the backup after).
    pub fn start_backup(&self, label: &str) -> Result<(Lsn, String)> {
        let sql = if self.version >= 150000 {
            "SELECT pg_backup_start($1, true)::text"
        } else {
            "SELECT pg_start_backup($1, true, false)::text"
        };
        let lsn = parse_lsn(
            &self
                .query_one(sql, &[&label])?
                .try_get::<_, String>(0)
                .map_err(|e| db_error(sql, e))?,
        )?;
        let name_fn = if self.version >= 100000 {
            "pg_walfile_name"
        } else {
            "pg_xlogfile_name"
        };
        let segment = self.text(&format!("SELECT file_name FROM {name_fn}_offset('{lsn}'::pg_lsn)"))?;
        Ok((lsn, segment))
    }

    /// Stops the backup started on this connection.
    pub fn stop_backup(&self) -> Result<BackupStop> {
        let sql = if self.version >= 150000 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(true)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, true)"
        };
        let row = self.query_one(sql, &[])?;
        Ok(BackupStop {
            lsn: parse_lsn(&row.try_get::<_, String>(0).map_err(|e| db_error(sql, e))?)?,
            label: row.try_get(1).map_err(|e| db_error(sql, e))?,
            tablespace_map: row
                .try_get::<_, Option<String>>(2)
                .map_err(|e| db_error(sql, e))?
                .filter(|m| !m.is_empty()),
        })
    }
}

/// A first connection to the server of `datadir`: to `PGDATABASE`, else `postgres`,
/// else `template1` (a restored provider's cluster may lack a database named after the
/// user).
pub fn connect_datadir(datadir: &Path, libpq: &Libpq, application: &str) -> Result<Db> {
    if libpq.database.is_some() {
        return Db::for_datadir(datadir, libpq, application, None).map(|(db, _)| db);
    }
    match Db::for_datadir(datadir, libpq, application, Some("postgres")) {
        Ok((db, _)) => Ok(db),
        Err(first) if first.kind() == ErrorKind::Database => match Db::for_datadir(datadir, libpq, application, Some("template1")) {
            Ok((db, _)) => Ok(db),
            Err(e) if e.kind() == ErrorKind::Database => Err(first),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Like [`connect_datadir`], waiting up to `timeout` while the server is still starting (a
/// standby accepts connections only once consistent); `say` hears that it waits.
pub fn connect_datadir_when_ready(
    datadir: &Path,
    libpq: &Libpq,
    application: &str,
    timeout: Duration,
    say: &mut dyn FnMut(&str),
) -> Result<Db> {
    let started = Instant::now();
    let mut said = false;
    loop {
        match connect_datadir(datadir, libpq, application) {
            Ok(db) => return Ok(db),
            Err(e) if e.kind() == ErrorKind::Database && started.elapsed() < timeout && starting(datadir) => {
                if !said {
                    say("waiting: the server is starting up (a standby accepts connections once consistent)");
                    said = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the server of `datadir` says it is still starting.
fn starting(datadir: &Path) -> bool {
    crate::pg::postmaster::running(datadir).is_ok_and(|pm| pm.starting())
}
/// An identifier as SQL needs it written.
pub fn quote_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
