//! Collation versions: what the restored catalog recorded against what this machine's
//! libraries give, per database.
//!
//! A physical copy carries the source's indexes byte for byte, and a btree index on text
//! is in the order of the C library (or ICU) that built it. PostgreSQL records the
//! library's version when a collation is created (`pg_collation.collversion`, PostgreSQL
//! 13 on for libc) and, from 15 on, for each database's default collation
//! (`pg_database.datcollversion`); `pg_collation_actual_version()` and
//! `pg_database_collation_actual_version()` give what the running server's libraries say
//! now. A difference means the order may have changed (glibc 2.28 reordered many
//! strings), and the indexes that depend on such a collation must be checked
//! (`walfetch check-indexes`).
//!
//! Before 15 no version is recorded for a database's default collation; then the libc
//! collations the catalog holds (`initdb` imports one per locale, each with the C
//! library's version of that day) are the evidence: if they changed, a libc default
//! other than C or POSIX is reported as likely changed too. Collations nothing uses are
//! counted, not listed: `initdb` imports hundreds.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::config::Libpq;
use crate::error::{ErrorKind, Result};
use crate::pg::db::Db;

/// The OID of the database's default collation (`DEFAULT_COLLATION_OID`).
pub const DEFAULT_COLLATION: u32 = 100;

/// A collation whose version on this machine differs from the one recorded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// The database it is in.
    pub database: String,
    /// `database default` or the collation's qualified name.
    pub collation: String,
    /// Its OID in that database ([`DEFAULT_COLLATION`] for the default).
    pub oid: u32,
    /// `libc`, `icu` or `builtin`, and the locale.
    pub locale: String,
    /// The version the catalog recorded (`None`: not recorded, see `evidence`).
    pub recorded: Option<String>,
    /// The version this machine gives (`None`: none now).
    pub actual: Option<String>,
    /// Why a change is inferred when nothing was recorded.
    pub evidence: Option<String>,
}

impl Change {
    /// One line for people.
    pub fn line(&self) -> String {
        let versions = match (&self.recorded, &self.evidence) {
            (Some(r), _) => format!("recorded {r}, this machine {}", self.actual.as_deref().unwrap_or("(none)")),
            (None, Some(e)) => format!("likely changed: {e}"),
            (None, None) => format!("this machine {}", self.actual.as_deref().unwrap_or("(none)")),
        };
        format!("database {}: {} ({}): {versions}", self.database, self.collation, self.locale)
    }
}

/// A database whose collations could not be compared, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unchecked {
    /// The database.
    pub database: String,
    /// Why (a connection refused for a locale this machine lacks, say).
    pub reason: String,
}

/// What the comparison found on one server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Changed collations that something uses (a database's default counts).
    pub changes: Vec<Change>,
    /// Changed collations nothing uses (counted only).
    pub unused_changed: u64,
    /// Databases that could not be compared.
    pub unchecked: Vec<Unchecked>,
}

impl Report {
    /// The changed collation OIDs of `database` (the default as [`DEFAULT_COLLATION`]).
    pub fn changed_in(&self, database: &str) -> BTreeSet<u32> {
        self.changes.iter().filter(|c| c.database == database).map(|c| c.oid).collect()
    }

    /// Lines for people (empty when nothing changed and everything was compared).
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.changes.iter().map(|c| format!("collation changed: {}", c.line())).collect();
        out.extend(
            self.unchecked
                .iter()
                .map(|u| format!("collations not compared in database {}: {}", u.database, u.reason)),
        );
        out
    }
}

/// A database the server holds.
#[derive(Debug, Clone)]
pub struct Database {
    /// Its name.
    pub name: String,
    /// Its default collation's locale, with the provider.
    pub locale: String,
    /// Whether that is a libc locale other than C and POSIX (it has a version).
    pub libc_versioned: bool,
    /// `datcollversion` (15 and later).
    pub recorded: Option<String>,
    /// `pg_database_collation_actual_version()` (15 and later).
    pub actual: Option<String>,
}

/// The databases that accept connections (templates left out), from any connection to
/// the server.
pub fn databases(db: &Db) -> Result<Vec<Database>> {
    let sql = if db.version >= 150000 {
        "SELECT datname::text, datlocprovider::text,
                coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale', datcollate)::text,
                datcollate::text, datcollversion, pg_database_collation_actual_version(oid)
         FROM pg_database d WHERE datallowconn AND NOT datistemplate ORDER BY datname"
    } else {
        "SELECT datname::text, 'c', datcollate::text, datcollate::text, NULL::text, NULL::text
         FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"
    };
    Ok(db
        .rows(sql, &[])?
        .into_iter()
        .map(|r| {
            let col = |i: usize| r.get(i).cloned().flatten();
            let provider = provider_name(col(1).as_deref().unwrap_or("c"));
            let collate = col(3).unwrap_or_default();
            Database {
                name: col(0).unwrap_or_default(),
                locale: format!("{provider}: {}", col(2).unwrap_or_default()),
                libc_versioned: provider == "libc" && !is_c_locale(&collate),
                recorded: col(4),
                actual: col(5),
            }
        })
        .collect())
}

/// `c`, `i`, `b` (`pg_collation.collprovider`, `datlocprovider`) as words.
fn provider_name(code: &str) -> &'static str {
    match code {
        "i" => "icu",
        "b" => "builtin",
        "d" => "default",
        _ => "libc",
    }
}

/// The C and POSIX locales sort by bytes and never change.
fn is_c_locale(name: &str) -> bool {
    matches!(name, "C" | "POSIX" | "C.UTF-8" | "C.utf8" | "")
}

/// Compares the server's recorded collation versions with this machine's, database by
/// database (each over its own connection, proven to be `datadir`'s server).
pub fn compare(datadir: &Path, libpq: &Libpq, first: &Db) -> Result<Report> {
    let mut report = Report::default();
    for database in databases(first)? {
        match Db::for_datadir(datadir, libpq, "walfetch collation check", Some(&database.name)) {
            Ok((db, _)) => in_database(&db, &database, &mut report)?,
            Err(e) if matches!(e.kind(), ErrorKind::Database) => report.unchecked.push(Unchecked {
                database: database.name.clone(),
                reason: e.message().to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// The changes in one database, added to `report`.
fn in_database(db: &Db, database: &Database, report: &mut Report) -> Result<()> {
    let rows = db.rows(
        "SELECT c.oid::text, format('%I.%I', n.nspname, c.collname), c.collprovider::text,
                coalesce(to_jsonb(c)->>'colllocale', to_jsonb(c)->>'colliculocale', c.collcollate)::text,
                c.collversion, pg_collation_actual_version(c.oid),
                EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.refclassid = 'pg_collation'::regclass AND d.refobjid = c.oid)::text
         FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
         WHERE c.collversion IS NOT NULL ORDER BY 2",
        &[],
    )?;
    let mut libc_evidence: Option<(String, String)> = None;
    for r in rows {
        let col = |i: usize| r.get(i).cloned().flatten();
        let (recorded, actual) = (col(4), col(5));
        if recorded == actual {
            continue;
        }
        let provider = provider_name(col(2).as_deref().unwrap_or("c"));
        if provider == "libc" && libc_evidence.is_none() {
            if let (Some(r), Some(a)) = (&recorded, &actual) {
                libc_evidence = Some((r.clone(), a.clone()));
            }
        }
        if col(6).as_deref() != Some("true") {
            report.unused_changed += 1;
            continue;
        }
        report.changes.push(Change {
            database: database.name.clone(),
            collation: col(1).unwrap_or_default(),
            oid: col(0).and_then(|o| o.parse().ok()).unwrap_or(0),
            locale: format!("{provider}: {}", col(3).unwrap_or_default()),
            recorded,
            actual,
            evidence: None,
        });
    }
    if let Some(change) = default_change(database, libc_evidence) {
        report.changes.insert(0, change);
    }
    Ok(())
}

/// The database's default collation, when it changed (or, unrecorded, likely did).
fn default_change(database: &Database, libc_evidence: Option<(String, String)>) -> Option<Change> {
    let change = |recorded, actual, evidence| Change {
        database: database.name.clone(),
        collation: "database default".into(),
        oid: DEFAULT_COLLATION,
        locale: database.locale.clone(),
        recorded,
        actual,
        evidence,
    };
    match (&database.recorded, &database.actual) {
        (Some(r), a) if Some(r) != a.as_ref() => Some(change(Some(r.clone()), a.clone(), None)),
        (Some(_), _) => None,
        (None, _) if database.libc_versioned => libc_evidence.map(|(r, a)| {
            change(
                None,
                Some(a.clone()),
                Some(format!(
                    "no version is recorded for it, and this database's libc collations record {r} where this machine has {a}"
                )),
            )
        }),
        (None, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(recorded: Option<&str>, actual: Option<&str>, libc: bool) -> Database {
        Database {
            name: "app".into(),
            locale: "libc: en_US.UTF-8".into(),
            libc_versioned: libc,
            recorded: recorded.map(String::from),
            actual: actual.map(String::from),
        }
    }

    #[test]
    fn a_default_changes_by_its_record_or_by_the_libc_evidence() {
        let c = default_change(&database(Some("2.28"), Some("2.36"), true), None).unwrap();
        assert_eq!(c.oid, DEFAULT_COLLATION);
        assert_eq!(
            c.line(),
            "database app: database default (libc: en_US.UTF-8): recorded 2.28, this machine 2.36"
        );
        assert_eq!(default_change(&database(Some("2.36"), Some("2.36"), true), None), None);
        // Nothing recorded (before 15): the libc collations tell.
        let evidence = Some(("2.28".to_string(), "2.36".to_string()));
        let c = default_change(&database(None, None, true), evidence.clone()).unwrap();
        assert!(
            c.line().contains("likely changed") && c.line().contains("record 2.28"),
            "{}",
            c.line()
        );
        assert_eq!(default_change(&database(None, None, true), None), None);
        assert_eq!(default_change(&database(None, None, false), evidence), None, "C sorts by bytes");
    }

    #[test]
    fn c_locales_never_change() {
        assert!(is_c_locale("C") && is_c_locale("POSIX") && is_c_locale("C.UTF-8"));
        assert!(!is_c_locale("en_US.UTF-8"));
        assert_eq!(provider_name("i"), "icu");
    }
}
