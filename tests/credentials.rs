//! A standby on a provider's expiring credentials: the provider rotates the key while
//! the standby waits at the archive head; `status` names the credentials problem; the
//! credentials file is renewed and replay resumes without restarting PostgreSQL. And
//! session credentials whose expiry is near (from a `credential_process`) are reported
//! by `status` and `wal-verify`: a line, a JSON field, a Prometheus gauge, exit 19.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

const TABLES: &[(&str, &str)] = &[("pgbench_accounts", "aid"), ("late", "g")];

fn status(standby: &Cluster, env: &[(String, String)], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["status", standby.data.to_str().unwrap()];
    args.extend(extra);
    walfetch(&args, env)
}

#[test]
fn a_key_rotated_mid_replay_is_renewed_in_the_credentials_file_without_a_restart() {
    let scratch = Scratch::new();
    let data = scratch.dir("s3");
    let port = free_port();
    let s3 = S3Server::start_with(data.clone(), port, "first-key", "first-secret-0123456789");
    // The provider's side and the standby each hold their own credentials file.
    let source_creds = scratch.path().join("source-credentials");
    let standby_creds = scratch.path().join("standby-credentials");
    write_credentials(&source_creds, "first-key", "first-secret-0123456789");
    write_credentials(&standby_creds, "first-key", "first-secret-0123456789");
    let source_env = credentials_file_env(&source_creds, port, "pg");
    let env = credentials_file_env(&standby_creds, port, "pg");

    let mut source = Cluster::archiving(&scratch, "source", walfetch_bin(), &source_env, &[]);
    source.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup_push(walfetch_bin(), &source_env);
    source.sql("CREATE TABLE late (g int)");
    let restored = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut standby = Cluster::attach(&scratch, "standby", restored);
    standby.env = env.clone();
    standby.start();
    let lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&lsn);
    standby.wait_replayed(&lsn);

    // The provider rotates the key; its archiver has the new one, the standby not yet.
    drop(s3);
    let _s3 = S3Server::start_with(data.clone(), port, "second-key", "second-secret-0123456789");
    write_credentials(&source_creds, "second-key", "second-secret-0123456789");
    source.pgbench(&["-n", "-t", "200", "-c", "2"]);
    source.sql("INSERT INTO late SELECT generate_series(1, 5000)");
    let lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&lsn);
    let expected: Vec<String> = TABLES.iter().map(|(t, o)| source.table_digest(t, o)).collect();

    // Meanwhile status names the problem (exit 18), and the standby replays nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let out = status(&standby, &env, &["--json"]);
        if out.status.code() == Some(18) {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "status never named the credentials: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(report["verdict"], "credentials", "{report}");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");
    let before = standby.sql("SELECT pg_last_wal_replay_lsn()");
    assert_eq!(
        standby.sql(&format!("SELECT '{before}'::pg_lsn < '{lsn}'::pg_lsn")),
        "t",
        "nothing replayed with the old key"
    );
    let started = standby.sql("SELECT pg_postmaster_start_time()");

    // The renewal lands in the file: replay resumes, same server, no restart.
    write_credentials(&standby_creds, "second-key", "second-secret-0123456789");
    standby.wait_replayed(&lsn);
    assert_eq!(
        standby.sql("SELECT pg_postmaster_start_time()"),
        started,
        "PostgreSQL was not restarted"
    );
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, expected);
    // The fetcher reports its first success after the renewal within a poll: status may
    // read its last failure until then.
    let mut out = status(&standby, &env, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while out.status.code() != Some(0) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        out = status(&standby, &env, &[]);
    }
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    source.stop();
    standby.stop();
}

#[test]
fn session_credentials_near_expiry_are_reported_with_their_own_exit_code() {
    let scratch = Scratch::new();
    let data = scratch.dir("s3");
    let s3 = S3Server::start(data.clone());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut source = Cluster::archiving(&scratch, "source", walfetch_bin(), &env, &[]);
    source.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup_push(walfetch_bin(), &env);
    let lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.pgbench(&["-n", "-t", "50", "-c", "2"]);
    source.archive_through(&source.sql("SELECT pg_current_wal_lsn()"));
    let _ = lsn;
    source.stop();

    // Session credentials from a credential_process, expiring in 30 minutes.
    let expires = chrono::Utc::now() + chrono::Duration::minutes(30);
    let script = scratch.path().join("credential-process");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho '{{\"Version\": 1, \"AccessKeyId\": \"{ACCESS_KEY}\", \"SecretAccessKey\": \"{SECRET_KEY}\", \"Expiration\": \"{}\"}}'\n",
            expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .unwrap();
    let config = scratch.path().join("aws-config");
    fs::write(&config, format!("[default]\ncredential_process = {}\n", script.display())).unwrap();
    give_to_postgres(scratch.path());
    assert!(std::process::Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap()
        .success());
    let mut session: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY")
        .cloned()
        .collect();
    session.push(("AWS_CONFIG_FILE".into(), config.display().to_string()));
    session.push(("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()));

    let prom = scratch.path().join("verify.prom");
    let out = walfetch(&["wal-verify", "--json", "--prometheus", prom.to_str().unwrap()], &session);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(19), "{report}{}", stderr(&out));
    assert_eq!(report["status"], "credentials-expiring");
    let left = report["credentials"]["seconds_left"].as_i64().unwrap();
    assert!((1500..=1800).contains(&left), "{report}");
    assert_eq!(report["credentials"]["within_margin"], true);
    let metrics = fs::read_to_string(&prom).unwrap();
    assert!(metrics.contains("walfetch_credentials_expiry_seconds{"), "{metrics}");
    // A smaller margin: healthy, the expiry still said.
    let out = walfetch(&["wal-verify", "--credentials-margin", "10m"], &session);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("credentials in use expire at"));
    // Long-lived keys report no expiry and no such exit.
    let out = walfetch(&["wal-verify", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["credentials"].is_null(), "{report}");

    // status of a standby on these credentials says the same.
    let restored = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let standby = Cluster::attach(&scratch, "standby", restored);
    let prom = scratch.path().join("status.prom");
    let out = walfetch(
        &["status", standby.data.to_str().unwrap(), "--prometheus", prom.to_str().unwrap()],
        &session,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(19), "{text}");
    assert!(text.contains("renew them before then"), "{text}");
    assert!(fs::read_to_string(&prom)
        .unwrap()
        .contains("walfetch_credentials_expiry_seconds{pgdata="));
}
