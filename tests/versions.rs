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
    // Server binaries of another major: refused before anything is downloaded.
    let other = if major == 15 { 16 } else { 15 };
    let other_bin = pg_bin_of(other);
    let out = walfetch(
        &[
            "backup-fetch",
            restored.to_str().unwrap(),
            "LATEST",
            "--standby",
            "--pg-bin",
            other_bin.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "PostgreSQL {major} under {other}'s binaries: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("taken by PostgreSQL {major}")) && stderr(&out).contains(&format!("are PostgreSQL {other}")),
        "{}",
        stderr(&out)
    );
    assert!(
        !restored.join("base").exists() && !restored.join("PG_VERSION").exists(),
        "nothing restored"
    );
    // Without --pg-bin, another major first on PATH: walfetch looks where distributions
    // install this major (absent here: the embedded builds live elsewhere) and says where.
    let mut other_first = env.clone();
    other_first.push((
        "PATH".into(),
        format!("{}:{}", other_bin.display(), std::env::var("PATH").unwrap_or_default()),
    ));
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST"], &other_first);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    for looked in [
        format!("/usr/lib/postgresql/{major}/bin"),
        format!("/usr/pgsql-{major}/bin"),
        format!("PostgreSQL {other})"),
    ] {
        assert!(stderr(&out).contains(&looked), "names {looked}: {}", stderr(&out));
    }
    let out = walfetch(
        &[
            "backup-fetch",
            restored.to_str().unwrap(),
            "LATEST",
            "--standby",
            "--pg-bin",
            bin.to_str().unwrap(),
        ],
        &env,
    );
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
    // status reads pg_control itself: no pg_controldata of this major is installed here
    // (only Debian's 15 has one).
    let out = walfetch(&["status", standby.data.to_str().unwrap(), "--json"], &env);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "PostgreSQL {major}: {report}");
    assert_eq!(report["pg_version"], major.to_string());
    assert_eq!(report["cluster_state"], "in archive recovery", "{report}");
    assert_eq!(report["timeline"], 1);
    // The running server is found through postmaster.pid, with no PG* variables.
    assert!(report["collations"]["changes"].is_array(), "collations compared: {report}");
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
