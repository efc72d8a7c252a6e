//! `walfetch status` and `walfetch check` on real standbys: healthy, blocked by a
//! deleted segment, a missing signal file, and a restore_command pointing at a wrong
//! bucket each get their verdict and exit code.

use std::fs;

use crate::common::*;
use serde_json::Value;

fn status(datadir: &std::path::Path, env: &[(String, String)]) -> (i32, Value) {
    let out = walfetch(&["status", datadir.to_str().unwrap(), "--json"], env);
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    (out.status.code().unwrap(), json)
}

#[test]
fn status_verdicts_for_healthy_blocked_and_misconfigured_standbys() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let creds: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_ACCESS") || k.starts_with("AWS_SECRET"))
        .cloned()
        .collect();

    let mut primary = Cluster::archiving(&scratch, "primary", walfetch_bin(), &env, &[]);
    primary.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    primary.backup_push(walfetch_bin(), &env);
    for _ in 0..3 {
        primary.sql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
        primary.sql("SELECT pg_switch_wal()");
    }
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    primary.stop();

    let restore = |name: &str| {
        let dir = scratch.path().join(name);
        let out = walfetch(&["backup-fetch", dir.to_str().unwrap(), "LATEST", "--standby"], &env);
        assert!(out.status.success(), "{}", stderr(&out));
        dir
    };

    // Healthy: a standby that replayed everything and waits for more.
    let healthy = restore("healthy");
    let mut standby = Cluster::attach(&scratch, "healthy", healthy.clone());
    standby.env = creds.clone();
    standby.start();
    standby.wait_replayed(&lsn);
    standby.stop();
    let (code, r) = status(&healthy, &creds);
    assert_eq!((code, r["verdict"].as_str().unwrap()), (0, "healthy"), "{r:#}");
    assert_eq!(r["mode"], "standby");
    assert_eq!(r["system_identifier"], r["archive_system_identifier"]);
    let out = walfetch(&["status", healthy.to_str().unwrap()], &creds);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verdict: HEALTHY"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // restore_commands that wrap walfetch, as WAL-E-era setups do, are seen through; the
    // archive and credentials they set are the ones status checks.
    let auto = healthy.join("postgresql.auto.conf");
    let original = fs::read_to_string(&auto).unwrap();
    let line = original
        .lines()
        .rev()
        .find(|l| l.starts_with("restore_command"))
        .unwrap()
        .to_string();
    let command = line.split_once('=').unwrap().1.trim().trim_matches('\'').replace("''", "'");
    let bare = format!("{} wal-fetch \"%f\" \"%p\"", walfetch_bin().display());
    let envdir = scratch.dir("wal.d");
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("WALG_") || k.starts_with("AWS_")) {
        fs::write(envdir.join(k), format!("{v}\n")).unwrap();
    }
    give_to_postgres(&envdir);
    let assignments: String = env
        .iter()
        .filter(|(k, _)| k.starts_with("WALG_") || k.starts_with("AWS_"))
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    let with_restore_command = |cmd: &str| {
        let text = original.replace(&line, &format!("restore_command = '{}'", cmd.replace('\'', "''")));
        fs::write(&auto, text).unwrap();
    };
    for wrapped in [
        format!("/usr/bin/env -i {assignments}{bare}"),
        format!("envdir {} {bare}", envdir.display()),
        format!("timeout 60 {command}"),
        format!("nice -n 10 {command}"),
        format!("/usr/bin/sudo -u postgres -E -- {command}"),
        format!("runuser -u postgres -- {command}"),
        format!("sh -c 'exec {}'", command.replace('"', "")),
    ] {
        with_restore_command(&wrapped);
        let (code, r) = status(&healthy, &creds);
        assert_eq!((code, r["verdict"].as_str().unwrap()), (0, "healthy"), "{wrapped}: {r:#}");
        assert_eq!(r["archive"], format!("s3://{BUCKET}/pg"), "{wrapped}: {r:#}");
    }
    // Credentials the archive rejects: their own verdict and exit code.
    with_restore_command(&format!("env AWS_SECRET_ACCESS_KEY=wrong-secret {command}"));
    let (code, r) = status(&healthy, &creds);
    assert_eq!((code, r["verdict"].as_str().unwrap()), (18, "credentials"), "{r:#}");
    assert!(!r.to_string().contains("wrong-secret"), "a secret in the report: {r:#}");
    // A script that hides what it runs cannot be checked: misconfigured, named.
    with_restore_command("/usr/local/bin/restore-wal.sh %f %p");
    let (code, r) = status(&healthy, &creds);
    assert_eq!(code, 16, "{r:#}");
    assert!(r["problems"].to_string().contains("does not call walfetch"), "{r:#}");
    fs::write(&auto, &original).unwrap();

    // A fresh restore is healthy and catching up: behind by the archived segments.
    let fresh = restore("fresh");
    let (code, r) = status(&fresh, &creds);
    assert_eq!(code, 0, "{r:#}");
    assert!(
        r["next_segment_in_archive"].as_bool().unwrap() && r["behind_segments"].as_u64().unwrap() >= 3,
        "{r:#}"
    );

    // No signal file: PostgreSQL would start as a primary.
    let unsignalled = restore("unsignalled");
    fs::remove_file(unsignalled.join("standby.signal")).unwrap();
    let (code, r) = status(&unsignalled, &creds);
    assert_eq!((code, r["verdict"].as_str().unwrap()), (16, "misconfigured"), "{r:#}");
    assert!(r["problems"][0].as_str().unwrap().contains("standby.signal"), "{r:#}");

    // restore_command pointing at a bucket that does not exist.
    let wrong = restore("wrong-bucket");
    let auto = wrong.join("postgresql.auto.conf");
    fs::write(
        &auto,
        fs::read_to_string(&auto)
            .unwrap()
            .replace(&format!("s3://{BUCKET}/pg"), "s3://no-such-bucket/pg"),
    )
    .unwrap();
    let (code, r) = status(&wrong, &creds);
    assert_eq!((code, r["verdict"].as_str().unwrap()), (16, "misconfigured"), "{r:#}");
    assert!(r["problems"].to_string().contains("no-such-bucket"), "{r:#}");

    // Blocked: the segment the fresh standby needs next is deleted from the archive.
    let (_, r) = status(&fresh, &creds);
    let next = r["next_segment"].as_str().unwrap().to_string();
    fs::remove_file(s3data.join(BUCKET).join("pg/wal_005").join(format!("{next}.lz4"))).unwrap();
    let (code, r) = status(&fresh, &creds);
    assert_eq!((code, r["verdict"].as_str().unwrap()), (15, "blocked"), "{r:#}");
    assert_eq!(r["first_gap"], next.as_str());

    // check: ok against the archive, and a clear credentials verdict with a wrong secret.
    let out = walfetch(&["check"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verdict: OK"));
    let mut bad = env.clone();
    bad.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    bad.push(("AWS_SECRET_ACCESS_KEY".into(), "wrong".into()));
    let out = walfetch(&["check"], &bad);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hint:"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
