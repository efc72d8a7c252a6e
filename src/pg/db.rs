//! A connection to the cluster being backed up, through libpq's environment
//! (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`), and the SQL of a
//! non-exclusive base backup for each version (9.6 to 18).

use crate::config::Libpq;
use crate::error::{Error, ErrorKind, Result};
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
    Error::new(
        ErrorKind::Database,
        format!(
            "{what}: {e}{}",
            e.as_db_error().map(|d| format!(" ({})", d.message())).unwrap_or_default()
        ),
    )
}

fn parse_lsn(text: &str) -> Result<Lsn> {
    Lsn::parse(text).ok_or_else(|| Error::new(ErrorKind::Database, format!("server returned '{text}', not an LSN")))
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
        let (client, connection) = runtime
            .block_on(config.connect(tokio_postgres::NoTls))
            .map_err(|e| db_error("connecting to PostgreSQL (PGHOST/PGPORT/PGUSER)", e))?;
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

    /// Whether the server is in recovery (a standby).
    pub fn in_recovery(&self) -> Result<bool> {
        Ok(self.text("SELECT pg_is_in_recovery()::text")? == "true")
    }

    /// The one value `sql` returns, as text (`None` for NULL).
    pub fn value(&self, sql: &str) -> Result<Option<String>> {
        self.query_one(sql, &[])?.try_get(0).map_err(|e| db_error(sql, e))
    }

    fn query_one(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<tokio_postgres::Row> {
        self.runtime
            .block_on(self.client.query_one(sql, params))
            .map_err(|e| db_error(sql, e))
    }

    fn text(&self, sql: &str) -> Result<String> {
        self.query_one(sql, &[])?.try_get(0).map_err(|e| db_error(sql, e))
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
