//! The restore-and-replay scenario on every PostgreSQL major a provider runs, 13 to 18
//! (15 runs everywhere else in the suite): walrus archives and backs up a real primary
//! into the real S3 server, walfetch restores a standby that replays to the primary's
//! state, with the same major's server binaries (Debian's, or the embedded builds
//! `scripts/install-deps --tests` installs).

use crate::common::*;

const TABLES: &[(&str, &str)] = &[("pgbench_accounts", "aid"), ("pgbench_history", "tid, bid, aid, delta, mtime")];

fn walrus_writes_walfetch_restores(major: u32) {
    let bin = pg_bin_of(major);
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg{major}")));

    let mut primary = Cluster::init_with(&scratch, "primary", &bin, &[]);
    primary.env = env.clone();
    primary.configure(&[("archive_mode", "on"), ("archive_command", &push_command(walrus_bin()))]);
    primary.start();
    assert!(
        primary.sql("SHOW server_version_num").starts_with(&major.to_string()),
        "PostgreSQL {major} expected"
    );
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    primary.backup_push(walrus_bin(), &env);
    primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let expected: Vec<String> = TABLES.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
    primary.stop();

    let restored = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "PostgreSQL {major}: {}", stderr(&out));
    let mut standby = Cluster::attach(&scratch, "standby", restored);
    standby.bin = bin;
    standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby.start();
    standby.wait_replayed(&lsn);
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, expected, "PostgreSQL {major}: the standby differs from the primary");
    assert!(
        standby.log_text().contains("restored log file"),
        "PostgreSQL {major}: nothing replayed from the archive"
    );
}

#[test]
fn postgresql_13() {
    walrus_writes_walfetch_restores(13);
}

#[test]
fn postgresql_14() {
    walrus_writes_walfetch_restores(14);
}

#[test]
fn postgresql_16() {
    walrus_writes_walfetch_restores(16);
}

#[test]
fn postgresql_17() {
    walrus_writes_walfetch_restores(17);
}

#[test]
fn postgresql_18() {
    walrus_writes_walfetch_restores(18);
}
