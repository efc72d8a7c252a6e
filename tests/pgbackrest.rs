//! pgBackRest repositories read as natively as wal-g archives: the real pgBackRest
//! archives a real primary and takes its backups (in a directory, and in the S3 server
//! behind a TLS terminator with its own CA); walfetch lists, verifies, restores and feeds
//! a standby that replays to the primary's state, with nothing but pgBackRest's own
//! settings. Then what goes wrong, each in one line with its own exit code.

use std::fs;

use crate::common::pgbackrest::*;
use crate::common::*;

const TABLES: &[(&str, &str)] = &[("pgbench_accounts", "aid"), ("pgbench_history", "tid, bid, aid, delta, mtime")];

fn digests(c: &Cluster) -> Vec<String> {
    TABLES.iter().map(|(t, o)| c.table_digest(t, o)).collect()
}

/// Restores `backup` as a standby with `env`, replays it to `lsn`, and compares it with
/// `expected`.
fn restores_and_replays(scratch: &Scratch, name: &str, backup: &str, env: &[(String, String)], lsn: &str, expected: &[String]) {
    let mut standby = restore_standby(scratch, name, backup, env, &[]);
    standby.start();
    standby.wait_replayed(lsn);
    assert_eq!(digests(&standby), expected, "{name}: the standby differs from the primary");
    assert!(
        standby.log_text().contains("restored log file"),
        "{name}: nothing replayed from the archive"
    );
    standby.stop();
}

#[test]
fn a_full_diff_incr_chain_is_restored_at_each_level_and_replayed() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("repo1-bundle", "y")]);
    let p = &src.primary;
    p.pgbench(&["-i", "-s", "1", "-q"]);
    let full = src.backup("full", &[]);
    p.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let diff = src.backup("diff", &[]);
    p.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let incr = src.backup("incr", &[]);
    p.pgbench(&["-n", "-t", "100", "-c", "2"]);
    let lsn = p.sql("SELECT pg_current_wal_lsn()");
    p.archive_through(&lsn);
    let expected = digests(p);
    let env = src.config_env();

    // The listing, the archive, the checks: as for a wal-g archive.
    let out = walfetch(&["backup-list", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, [full.as_str(), diff.as_str(), incr.as_str()]);
    assert_eq!(listed[2]["kind"], "incr", "{listed}");
    assert_eq!(listed[1]["delta_from"], full.as_str(), "a diff builds on the full backup");
    let out = walfetch(&["wal-verify", "--json"], &env);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["missing_segments"], 0);
    let out = walfetch(&["check"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    for (name, backup) in [("from-full", &full), ("from-diff", &diff), ("from-incr", &incr)] {
        restores_and_replays(&scratch, name, backup, &env, &lsn, &expected);
    }
}

#[test]
fn every_compression_with_and_without_encryption() {
    for (compress, cipher) in [("gz", true), ("bz2", false), ("lz4", true), ("zst", false), ("none", true)] {
        let scratch = Scratch::new();
        let mut options = vec![("compress-type", compress), ("repo1-bundle", "y")];
        if cipher {
            options.push(("repo1-cipher-type", "aes-256-cbc"));
            options.push(("repo1-cipher-pass", "correct horse battery staple"));
        }
        let src = Source::in_directory(&scratch, &options);
        src.primary.pgbench(&["-i", "-s", "1", "-q"]);
        src.backup("full", &[]);
        src.primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
        let lsn = src.primary.sql("SELECT pg_current_wal_lsn()");
        src.primary.archive_through(&lsn);
        let expected = digests(&src.primary);
        restores_and_replays(&scratch, compress, "LATEST", &src.config_env(), &lsn, &expected);
    }
}

#[test]
fn s3_over_tls_with_settings_as_a_config_file_or_as_variables_only() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let src = Source::in_s3(
        &scratch,
        &s3,
        "/crunchy/cluster-a",
        &[
            ("repo1-bundle", "y"),
            ("compress-type", "lz4"),
            ("repo1-cipher-type", "aes-256-cbc"),
            ("repo1-cipher-pass", "provider-secret"),
        ],
    );
    src.primary.pgbench(&["-i", "-s", "1", "-q"]);
    src.backup("full", &[]);
    src.primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    src.backup("incr", &[]);
    src.primary.sql("CREATE TABLE late AS SELECT generate_series(1, 5000) g");
    let lsn = src.primary.sql("SELECT pg_current_wal_lsn()");
    src.primary.archive_through(&lsn);
    let expected = digests(&src.primary);
    // Only the configuration file, as pgBackRest reads it.
    restores_and_replays(&scratch, "by-file", "LATEST", &src.config_env(), &lsn, &expected);
    // Only PGBACKREST_* variables (the standby's server has them in its environment).
    restores_and_replays(&scratch, "by-variables", "LATEST", &src.env_only(), &lsn, &expected);
    let out = walfetch(&["wal-show"], &src.env_only());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("s3://archive/crunchy/cluster-a (pgBackRest stanza main)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_tablespace_is_restored_where_the_map_says() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("repo1-bundle", "y")]);
    let ts = scratch.dir("ts-source");
    src.primary.sql(&format!("CREATE TABLESPACE extra LOCATION '{}'", ts.display()));
    src.primary
        .sql("CREATE TABLE spaced TABLESPACE extra AS SELECT g, md5(g::text) m FROM generate_series(1, 20000) g");
    let oid = src.primary.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'");
    src.backup("full", &[]);
    src.primary
        .sql("INSERT INTO spaced SELECT g, 'late' FROM generate_series(20001, 21000) g");
    let lsn = src.primary.sql("SELECT pg_current_wal_lsn()");
    src.primary.archive_through(&lsn);
    let expected = src.primary.table_digest("spaced", "g");
    let moved = scratch.dir("ts-moved");
    let map = format!("{oid}={}", moved.display());
    let mut standby = restore_standby(&scratch, "standby", "LATEST", &src.config_env(), &["--tablespace-map", &map]);
    assert_eq!(
        fs::read_link(standby.data.join("pg_tblspc").join(&oid)).unwrap(),
        moved,
        "the tablespace's link points where the map says"
    );
    assert!(fs::read_dir(&moved).unwrap().next().is_some(), "its files are there");
    standby.start();
    standby.wait_replayed(&lsn);
    assert_eq!(standby.table_digest("spaced", "g"), expected);
}
