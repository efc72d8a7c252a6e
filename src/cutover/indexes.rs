//! The morning after: which indexes depend on a collation whose order may have changed
//! with the move ([`super::collation`]), and whether each still agrees with it, checked
//! with amcheck (`walfetch check-indexes`).
//!
//! An index depends on a collation through its key columns (`pg_index.indcollation`)
//! and through the expressions and the predicate it is built on: every function or
//! operator that compares or transforms text under a collation carries it as
//! `:inputcollid` in the stored expression tree. Btree indexes are checked with
//! `bt_index_check(heapallindexed => true)` (and `checkunique` where amcheck has it), one
//! connection per job; other methods (GIN, GiST, hash, ...) amcheck cannot check here, and
//! are named to rebuild. `--all` checks every btree index, changed collation or not.
//!
//! On a standby nothing can be created: amcheck must already be installed in a database
//! for its indexes to be checked before promotion; the others wait for it. On a primary
//! the extension is created only when the user allows it (`--install-amcheck`), and
//! dropped again afterwards.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::Libpq;
use crate::error::{exit, Error, ErrorKind, Result};
use crate::pg::collation;
use crate::pg::db::{quote_ident, Db, SqlFailure};
use crate::progress::Tally;

/// How to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections checking at once.
    pub jobs: usize,
    /// Every btree index, not only those on changed collations.
    pub all: bool,
    /// Create amcheck where it is missing (and drop it again afterwards).
    pub install_amcheck: bool,
}

/// One index found wrong or left unchecked.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The database.
    pub database: String,
    /// The index, qualified and quoted.
    pub index: String,
    /// Its table.
    pub table: String,
    /// What amcheck said, or why it was not checked.
    pub detail: String,
    /// The statement that rebuilds it (run in `database`).
    pub reindex: String,
}

/// What `check-indexes` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// `ok`, `rebuild` or `unchecked`.
    pub verdict: &'static str,
    /// The exit code.
    pub exit_code: u8,
    /// Whether the server is a standby (in recovery).
    pub in_recovery: bool,
    /// The collation versions compared.
    pub collations: collation::Report,
    /// Indexes checked and found in order.
    pub good: u64,
    /// Indexes that disagree with their collation.
    pub rebuild: Vec<Finding>,
    /// Indexes that could not be checked, and why.
    pub unchecked: Vec<Finding>,
    /// What else the user should know (amcheck created, unlogged indexes skipped, ...).
    pub notes: Vec<String>,
}

/// An index to check.
#[derive(Debug, Clone)]
struct Candidate {
    database: String,
    index: String,
    table: String,
    method: String,
    unique: bool,
    size: u64,
    reindex: String,
}

impl Candidate {
    fn finding(&self, detail: String) -> Finding {
        Finding {
            database: self.database.clone(),
            index: self.index.clone(),
            table: self.table.clone(),
            detail,
            reindex: self.reindex.clone(),
        }
    }
}

/// How a database's amcheck stands.
enum Amcheck {
    /// Installed, at this version (`1.4` has `checkunique`).
    Installed { checkunique: bool },
    /// Not usable; why.
    Missing(String),
}

/// Finds the indexes that depend on changed collations (or all, with `--all`) on the
/// server running `datadir`, checks them, and reports; `say` hears progress lines.
pub fn check(datadir: &Path, libpq: &Libpq, opts: &Options, say: &mut dyn FnMut(&str)) -> Result<Report> {
    let first = crate::pg::db::connect_datadir(datadir, libpq, "walfetch check-indexes")?;
    let mut report = Report {
        in_recovery: first.in_recovery()?,
        collations: collation::compare(datadir, libpq, &first)?,
        ..Report::default()
    };
    for line in report.collations.lines() {
        say(&line);
    }
    let mut candidates = Vec::new();
    let mut created = Vec::new();
    for database in collation::databases(&first)? {
        let name = database.name.clone();
        let db = match Db::for_datadir(datadir, libpq, "walfetch check-indexes", Some(&name)) {
            Ok((db, _)) => db,
            Err(e) if e.kind() == ErrorKind::Database => {
                report.notes.push(format!("database {name}: not checked: {}", e.message()));
                report.unchecked.push(Finding {
                    database: name,
                    index: "(every index)".into(),
                    table: String::new(),
                    detail: e.message().to_string(),
                    reindex: String::new(),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let changed = report.collations.changed_in(&name);
        let found = candidates_in(&db, &name, &changed, opts.all, report.in_recovery, &mut report)?;
        if found.is_empty() {
            continue;
        }
        match amcheck(&db, report.in_recovery, opts.install_amcheck, &mut created, &name)? {
            Amcheck::Installed { checkunique } => candidates.extend(found.into_iter().map(|c| (c, checkunique))),
            Amcheck::Missing(why) => report.unchecked.extend(found.iter().map(|c| c.finding(why.clone()))),
        }
    }
    if !created.is_empty() {
        report
            .notes
            .push(format!("created amcheck in {} (dropped again after the check)", created.join(", ")));
    }
    say(&format!("checking {} indexes with {} jobs", candidates.len(), opts.jobs.max(1)));
    let outcome = run(datadir, libpq, candidates, opts.jobs.max(1));
    for database in &created {
        if let Ok((db, _)) = Db::for_datadir(datadir, libpq, "walfetch check-indexes", Some(database)) {
            if let Err(e) = db.rows("DROP EXTENSION IF EXISTS amcheck", &[]) {
                report.notes.push(format!(
                    "database {database}: amcheck was created for the check and could not be dropped: {e}"
                ));
            }
        }
    }
    let (good, rebuild, unchecked) = outcome?;
    report.good = good;
    report.rebuild = rebuild;
    report.unchecked.extend(unchecked);
    (report.verdict, report.exit_code) = if !report.rebuild.is_empty() {
        ("rebuild", exit::REBUILD)
    } else if !report.unchecked.is_empty() || !report.collations.unchecked.is_empty() {
        ("unchecked", exit::UNCHECKED)
    } else {
        ("ok", 0)
    };
    if report.exit_code == 0 {
        report.notes.extend(refresh_statements(&report.collations));
    }
    Ok(report)
}

/// Once every index on the changed collations is in order (checked, or rebuilt), the
/// statements that record this machine's versions, so PostgreSQL stops warning.
fn refresh_statements(collations: &collation::Report) -> Vec<String> {
    collations
        .changes
        .iter()
        .filter(|c| c.recorded.is_some())
        .map(|c| {
            let statement = if c.oid == collation::DEFAULT_COLLATION {
                format!("ALTER DATABASE {} REFRESH COLLATION VERSION;", quote_ident(&c.database))
            } else {
                format!("ALTER COLLATION {} REFRESH VERSION;", c.collation)
            };
            format!(
                "every index on {} of database {} is in order: record this machine's version with {statement}",
                c.collation, c.database
            )
        })
        .collect()
}

/// The collation OIDs an index depends on: its key columns' and those its expressions
/// and predicate compare or transform text under (`:inputcollid N` in the stored trees).
fn collations_used(indcollation: &str, trees: &str) -> BTreeSet<u32> {
    let mut used: BTreeSet<u32> = indcollation.split_whitespace().filter_map(|o| o.parse().ok()).collect();
    let mut rest = trees;
    while let Some(at) = rest.find(":inputcollid ") {
        rest = &rest[at + ":inputcollid ".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(oid) = digits.parse() {
            used.insert(oid);
        }
    }
    used.remove(&0);
    used
}

/// The indexes of one database to check: those depending on `changed` (all btree
/// indexes with `all`); notes for those skipped on the way.
fn candidates_in(
    db: &Db,
    database: &str,
    changed: &BTreeSet<u32>,
    all: bool,
    in_recovery: bool,
    report: &mut Report,
) -> Result<Vec<Candidate>> {
    let rows = db.rows(
        "SELECT format('%I.%I', n.nspname, c.relname), format('%I.%I', tn.nspname, t.relname),
                am.amname::text, i.indisunique::text, i.indisvalid::text, c.relpersistence::text,
                i.indcollation::text, coalesce(i.indexprs::text, '') || ' ' || coalesce(i.indpred::text, ''),
                pg_relation_size(c.oid)::text,
                (n.nspname = 'pg_catalog' OR n.nspname = 'pg_toast'
                 OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid AND k.contype = 'x'))::text
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_class t ON t.oid = i.indrelid
         JOIN pg_namespace tn ON tn.oid = t.relnamespace
         JOIN pg_am am ON am.oid = c.relam
         WHERE c.relkind = 'i' AND c.relpersistence <> 't'
         ORDER BY pg_relation_size(c.oid) DESC",
        &[],
    )?;
    let concurrently = db.version >= 120000;
    let mut out = Vec::new();
    let (mut invalid, mut unlogged) = (Vec::new(), 0u64);
    for r in rows {
        let col = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let depends = !collations_used(&col(6), &col(7)).is_disjoint(changed);
        let method = col(2);
        if !(depends || all && method == "btree") {
            continue;
        }
        let index = col(0);
        if col(4) != "true" {
            invalid.push(index);
            continue;
        }
        if in_recovery && col(5) == "u" {
            unlogged += 1;
            continue;
        }
        let plain = !concurrently || col(9) == "true";
        let candidate = Candidate {
            database: database.to_string(),
            reindex: format!("REINDEX INDEX {}{index};", if plain { "" } else { "CONCURRENTLY " }),
            index,
            table: col(1),
            method: method.clone(),
            unique: col(3) == "true",
            size: col(8).parse().unwrap_or(0),
        };
        if method != "btree" {
            report.unchecked.push(candidate.finding(format!(
                "a {method} index on a changed collation: amcheck cannot check it here; rebuild it to be safe"
            )));
            continue;
        }
        out.push(candidate);
    }
    if !invalid.is_empty() {
        report.notes.push(format!(
            "database {database}: {} invalid indexes skipped (a failed CREATE INDEX CONCURRENTLY; drop or rebuild them): {}",
            invalid.len(),
            invalid.join(", ")
        ));
    }
    if unlogged > 0 {
        report.notes.push(format!(
            "database {database}: {unlogged} indexes of unlogged tables skipped (empty on a standby)"
        ));
    }
    Ok(out)
}

/// Whether amcheck can be used in this database, creating it when allowed (recorded in
/// `created`, to be dropped afterwards).
fn amcheck(db: &Db, in_recovery: bool, install: bool, created: &mut Vec<String>, database: &str) -> Result<Amcheck> {
    let installed = |db: &Db| -> Result<Option<String>> {
        Ok(db
            .rows("SELECT extversion FROM pg_extension WHERE extname = 'amcheck'", &[])?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    };
    let usable = |v: &str| Amcheck::Installed {
        checkunique: version_at_least(v, 1, 4),
    };
    if let Some(v) = installed(db)? {
        return Ok(usable(&v));
    }
    let available = !db
        .rows("SELECT 1::text FROM pg_available_extensions WHERE name = 'amcheck'", &[])?
        .is_empty();
    if !available {
        return Ok(Amcheck::Missing(format!(
            "this server has no amcheck extension to create in {database}: install the PostgreSQL contrib package of this major (Debian: postgresql-contrib-{}; RHEL: postgresql{}-contrib)",
            db.version / 10000,
            db.version / 10000
        )));
    }
    if in_recovery {
        return Ok(Amcheck::Missing(format!(
            "must wait for promotion: amcheck is not installed in {database}, and a standby cannot create it; after promoting run check-indexes again with --install-amcheck"
        )));
    }
    if !install {
        return Ok(Amcheck::Missing(format!(
            "amcheck is not installed in {database}: re-run with --install-amcheck (created for the check, dropped after), or CREATE EXTENSION amcheck there"
        )));
    }
    db.rows("CREATE EXTENSION amcheck", &[])?;
    created.push(database.to_string());
    let v = installed(db)?.unwrap_or_default();
    Ok(usable(&v))
}

/// `version` (`1.3`) is at least `major.minor`.
fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// What checking every candidate found: how many were good, which need rebuilding,
/// which could not be checked.
type Outcome = (u64, Vec<Finding>, Vec<Finding>);

/// Checks `candidates` (largest first) with `jobs` connections per database.
fn run(datadir: &Path, libpq: &Libpq, candidates: Vec<(Candidate, bool)>, jobs: usize) -> Result<Outcome> {
    let tally = Tally::start("checking indexes", candidates.len() as u64);
    let mut queue: Vec<(Candidate, bool)> = candidates;
    queue.sort_by_key(|c| std::cmp::Reverse(c.0.size));
    let queue = Mutex::new(queue.into_iter().collect::<VecDeque<_>>());
    let results: Mutex<Outcome> = Mutex::new((0, Vec::new(), Vec::new()));
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let mut connections: BTreeMap<String, Db> = BTreeMap::new();
                loop {
                    let Some((c, checkunique)) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                        return;
                    };
                    if fatal.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    let verdict = check_one(datadir, libpq, &mut connections, &c, checkunique);
                    tally.done.fetch_add(1, Ordering::Relaxed);
                    let Ok(mut r) = results.lock() else { return };
                    match verdict {
                        Ok(None) => r.0 += 1,
                        Ok(Some(Verdict::Corrupt(detail))) => r.1.push(c.finding(detail)),
                        Ok(Some(Verdict::Unchecked(detail))) => r.2.push(c.finding(detail)),
                        Err(e) => {
                            if let Ok(mut f) = fatal.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    tally.finish();
    if let Some(e) = fatal.into_inner().ok().flatten() {
        return Err(e);
    }
    let (good, mut rebuild, mut unchecked) = results
        .into_inner()
        .map_err(|_| Error::new(ErrorKind::LocalIo, "an index check panicked"))?;
    rebuild.sort_by(|a, b| (&a.database, &a.index).cmp(&(&b.database, &b.index)));
    unchecked.sort_by(|a, b| (&a.database, &a.index).cmp(&(&b.database, &b.index)));
    Ok((good, rebuild, unchecked))
}

/// What amcheck said of an index that is not in order.
enum Verdict {
    Corrupt(String),
    Unchecked(String),
}

/// Checks one index; `None` when it is in order. A connection that breaks is an error
/// (the server stopped); a recovery conflict on a standby is retried.
fn check_one(
    datadir: &Path,
    libpq: &Libpq,
    connections: &mut BTreeMap<String, Db>,
    c: &Candidate,
    checkunique: bool,
) -> Result<Option<Verdict>> {
    if !connections.contains_key(&c.database) {
        let (db, _) = Db::for_datadir(datadir, libpq, "walfetch check-indexes", Some(&c.database))?;
        db.rows("SET lock_timeout = '30s'", &[])?;
        db.rows("SET statement_timeout = 0", &[])?;
        connections.insert(c.database.clone(), db);
    }
    let Some(db) = connections.get(&c.database) else {
        return Ok(Some(Verdict::Unchecked("no connection".into())));
    };
    let sql = if checkunique && c.unique {
        "SELECT bt_index_check(index => $1::text::regclass, heapallindexed => true, checkunique => true)::text"
    } else {
        "SELECT bt_index_check($1::text::regclass, true)::text"
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        match db.try_rows(sql, &[&c.index]) {
            Ok(_) => return Ok(None),
            Err(f) => match classify(&f) {
                Class::Corrupt => return Ok(Some(Verdict::Corrupt(f.to_string()))),
                Class::Retry if attempts < 3 => continue,
                Class::Lost => {
                    return Err(Error::new(
                        ErrorKind::NotRunning,
                        format!("checking {} in {}: the connection to the server broke: {f}", c.index, c.database),
                    ))
                }
                Class::Retry | Class::Other => {
                    return Ok(Some(Verdict::Unchecked(format!(
                        "amcheck could not check it ({} index): {f}",
                        c.method
                    ))))
                }
            },
        }
    }
}

/// How a failed check is read.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// The index (or its heap) is not what its definition says: rebuild.
    Corrupt,
    /// Canceled by a conflict with recovery (a standby): try again.
    Retry,
    /// The server went away.
    Lost,
    /// Anything else: not checked (locks, permissions, a missing locale).
    Other,
}

fn classify(f: &SqlFailure) -> Class {
    match f.code.as_deref() {
        Some("XX002" | "XX001") => Class::Corrupt,
        Some("40001" | "40P01") => Class::Retry,
        _ if f.connection_lost => Class::Lost,
        _ => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_depends_on_its_keys_and_on_what_its_expressions_compare() {
        assert_eq!(collations_used("100 0", ""), BTreeSet::from([100]));
        // lower(name) under the default collation, and a predicate comparing under 16384.
        let trees = "({FUNCEXPR :funcid 870 :funcresulttype 25 :funccollid 100 :inputcollid 100 :args ({VAR :varno 1 :varcollid 100})})
                     {OPEXPR :opno 664 :opcollid 0 :inputcollid 16384 :args ...}";
        assert_eq!(collations_used("0", trees), BTreeSet::from([100, 16384]));
        assert!(collations_used("0 0", "").is_empty(), "integer keys depend on no collation");
    }

    #[test]
    fn failures_are_read_by_their_sqlstate() {
        let f = |code: Option<&str>, lost: bool| SqlFailure {
            code: code.map(String::from),
            message: "m".into(),
            connection_lost: lost,
        };
        assert_eq!(classify(&f(Some("XX002"), false)), Class::Corrupt);
        assert_eq!(classify(&f(Some("40001"), false)), Class::Retry);
        assert_eq!(classify(&f(Some("55P03"), false)), Class::Other, "a lock timeout checks nothing");
        assert_eq!(classify(&f(None, true)), Class::Lost);
        assert!(version_at_least("1.4", 1, 4) && version_at_least("1.10", 1, 4));
        assert!(!version_at_least("1.3", 1, 4));
        assert_eq!(quote_ident("app2"), "app2");
        assert_eq!(quote_ident("My \"db\""), "\"My \"\"db\"\"\"");
    }
}
