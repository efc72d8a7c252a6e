//! A minimal working configuration for restores whose backup has none: WAL-E leaves
//! `postgresql.conf`, `pg_hba.conf` and `pg_ident.conf` out of every base backup.
//!
//! A hot standby refuses to start when `max_connections` and a few other settings are
//! below the primary's; the primary's values are recorded in `pg_control`, so they are
//! read from it ([`super::controldata`]) and written into the new file.

use std::fs;
use std::path::Path;

use std::process::Command;

use super::datadir::PgMajor;
use crate::error::Result;
use crate::fsutil::write_atomically;

/// Configuration files a data directory needs to start.
pub const CONFIG_FILES: [&str; 3] = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"];

/// Which of the configuration files `datadir` lacks.
pub fn missing(datadir: &Path) -> Vec<&'static str> {
    CONFIG_FILES.into_iter().filter(|f| !datadir.join(f).exists()).collect()
}

/// The primary's values of the settings a standby must match, as recorded in the
/// `pg_control` file `control` (still staged during a restore); through
/// `pg_controldata` only for a layout walfetch does not know.
fn primary_settings(control: &Path, version: PgMajor) -> Vec<(&'static str, String)> {
    let known = match super::controldata::read_file(control) {
        Ok(Some(c)) => c,
        Ok(None) => match pg_controldata(control, version) {
            Some(c) => c,
            None => return Vec::new(),
        },
        Err(e) => {
            tracing::warn!(cause = %e, "cannot read the primary's settings from pg_control");
            return Vec::new();
        }
    };
    known.settings.into_iter().map(|(name, value)| (name, value.to_string())).collect()
}

/// `pg_controldata` on the pg_control file `control`, through a scratch directory.
fn pg_controldata(control: &Path, version: PgMajor) -> Option<super::controldata::ControlData> {
    let tool = super::controldata::tool(version)?;
    let scratch = std::env::temp_dir().join(format!("walfetch-controldata-{}", std::process::id()));
    let copied = fs::create_dir_all(scratch.join("global")).and_then(|_| fs::copy(control, scratch.join("global/pg_control")));
    let out = copied
        .ok()
        .and_then(|_| Command::new(tool).arg(&scratch).env("LC_ALL", "C").output().ok());
    let _ = fs::remove_dir_all(&scratch);
    super::controldata::parse(&String::from_utf8_lossy(&out?.stdout))
}

/// Writes whichever of the three files is missing, with the primary's settings from the
/// `pg_control` file `control`; returns one line per file written.
pub fn write_missing(datadir: &Path, version: PgMajor, control: &Path) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let header = "# Written by walfetch backup-fetch: the backup had no such file (WAL-E leaves it out).\n# Replace it with your own before cut-over.\n";
    for file in missing(datadir) {
        let text = match file {
            "postgresql.conf" => {
                let mut t = format!("{header}listen_addresses = 'localhost'\nhot_standby = on\n");
                let settings = primary_settings(control, version);
                if !settings.is_empty() {
                    t.push_str("# At least the primary's values (from pg_control), or a hot standby will not start:\n");
                }
                for (name, value) in settings {
                    t.push_str(&format!("{name} = {value}\n"));
                }
                t
            }
            "pg_hba.conf" => {
                let method = if version.major >= 10 { "scram-sha-256" } else { "md5" };
                format!(
                    "{header}local   all             all                                     peer\nhost    all             all             127.0.0.1/32            {method}\nhost    all             all             ::1/128                 {method}\nlocal   replication     all                                     peer\n"
                )
            }
            _ => header.to_string(),
        };
        let path = datadir.join(file);
        write_atomically(&path, |f| std::io::Write::write_all(f, text.as_bytes()), false)?;
        written.push(format!("{}: minimal configuration (the backup had none)", path.display()));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pg_ident.conf"), "mine\n").unwrap();
        assert_eq!(missing(dir.path()), ["postgresql.conf", "pg_hba.conf"]);
        let written = write_missing(dir.path(), PgMajor { major: 15, minor: 0 }, &dir.path().join("no-control")).unwrap();
        assert_eq!(written.len(), 2);
        assert!(fs::read_to_string(dir.path().join("pg_hba.conf"))
            .unwrap()
            .contains("scram-sha-256"));
        assert!(fs::read_to_string(dir.path().join("postgresql.conf"))
            .unwrap()
            .contains("hot_standby = on"));
        assert_eq!(fs::read_to_string(dir.path().join("pg_ident.conf")).unwrap(), "mine\n");
        assert!(missing(dir.path()).is_empty());
    }
}
