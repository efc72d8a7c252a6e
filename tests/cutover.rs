//! The cut-over: `walfetch promote` refuses while a segment is missing ahead of the
//! standby (promoting then would lose what lies behind the gap), and once the archive
//! is whole it promotes at the source's final LSN, printing what was replayed; the
//! promoted server holds exactly the source's data. Without `--lsn`, it promotes once
//! everything archived is replayed and the archive has been quiet.

use std::fs;

use crate::common::*;

const TABLES: &[(&str, &str)] = &[("pgbench_accounts", "aid"), ("late", "g")];

fn promote(standby: &Cluster, env: &[(String, String)], extra: &[&str]) -> std::process::Output {
    let mut env = env.to_vec();
    env.extend(standby.libpq_env());
    let mut args = vec!["promote", standby.data.to_str().unwrap()];
    args.extend(extra);
    walfetch(&args, &env)
}

#[test]
fn promote_refuses_a_gap_ahead_and_promotes_at_the_final_lsn() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let server_env: Vec<(String, String)> = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();

    let mut source = Cluster::archiving(&scratch, "source", walfetch_bin(), &env, &[]);
    source.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup_push(walfetch_bin(), &env);
    let restored = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut standby = Cluster::attach(&scratch, "standby", restored);
    standby.env = server_env.clone();
    standby.start();
    source.pgbench(&["-n", "-t", "50", "-c", "2"]);
    let first = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&first);
    standby.wait_replayed(&first);
    standby.stop();

    // The source writes on, over several segments, then stops: FINAL is its last LSN.
    source.sql("CREATE TABLE late (g int)");
    let mut segments = Vec::new();
    for round in 0..4 {
        source.pgbench(&["-n", "-t", "100", "-c", "2"]);
        source.sql(&format!(
            "INSERT INTO late SELECT generate_series({round} * 1000, {round} * 1000 + 999)"
        ));
        let lsn = source.sql("SELECT pg_current_wal_lsn()");
        segments.push(source.sql(&format!("SELECT pg_walfile_name('{lsn}')")));
        source.archive_through(&lsn);
    }
    let final_lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&final_lsn);
    let expected: Vec<String> = TABLES.iter().map(|(t, o)| source.table_digest(t, o)).collect();
    source.stop();

    // A segment in the middle goes missing from the bucket.
    let wal = s3data.join(BUCKET).join("pg/wal_005");
    let gap = wal.join(format!("{}.lz4", segments[1]));
    let kept = fs::read(&gap).unwrap();
    fs::remove_file(&gap).unwrap();

    standby.start();
    let out = promote(&standby, &env, &["--lsn", &final_lsn, "--timeout", "120s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(15), "{text}{}", stderr(&out));
    assert!(
        text.contains("not promoting") && text.contains(&format!("{} is missing from the archive", segments[1])),
        "refused for the gap itself, not after a timeout: {text}"
    );
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t", "nothing was promoted");

    // The segment comes back: replay goes on and the standby is promoted at FINAL.
    fs::write(&gap, kept).unwrap();
    give_to_postgres(&gap);
    let out = promote(&standby, &env, &["--lsn", &final_lsn, "--timeout", "120s", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(signed["previous_timeline"], 1);
    assert_eq!(signed["new_timeline"], 2);
    assert_eq!(signed["archive_head_replayed"], true, "{signed}");
    assert!(signed["last_replayed_commit"].is_string(), "{signed}");
    let replayed = signed["final_replayed_lsn"].as_str().unwrap().to_string();
    assert_eq!(
        standby.sql(&format!("SELECT '{replayed}'::pg_lsn >= '{final_lsn}'::pg_lsn")),
        "t",
        "replayed {replayed}, final {final_lsn}"
    );
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "f");
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, expected, "the promoted server's data differs from the source's");
}

#[test]
fn promote_without_an_lsn_waits_for_the_archive_to_be_replayed_and_quiet() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut source = Cluster::archiving(&scratch, "source", walfetch_bin(), &env, &[]);
    source.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup_push(walfetch_bin(), &env);
    source.sql("CREATE TABLE late AS SELECT generate_series(1, 5000) g");
    source.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let final_lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&final_lsn);
    let expected: Vec<String> = TABLES.iter().map(|(t, o)| source.table_digest(t, o)).collect();
    source.stop();

    let restored = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut standby = Cluster::attach(&scratch, "standby", restored);
    standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby.start();
    let out = promote(&standby, &env, &["--quiet", "3s", "--timeout", "120s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("promoted: timeline 1 -> 2"), "{text}");
    assert!(text.contains("replayed\n") || text.contains(", replayed"), "{text}");
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, expected, "the promoted server's data differs from the source's");
}

/// Waits for `child` to exit, up to `secs`; its exit code.
fn exit_within(child: &mut std::process::Child, secs: u64) -> Option<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(std::time::Instant::now() < deadline, "promote did not exit within {secs}s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn promote_never_promotes_when_the_archive_or_postgresql_goes_away_while_it_waits() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut source = Cluster::archiving(&scratch, "source", walfetch_bin(), &env, &[]);
    source.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup_push(walfetch_bin(), &env);
    source.pgbench(&["-n", "-t", "50", "-c", "2"]);
    let lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&lsn);
    source.stop();
    let restored = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut standby = Cluster::attach(&scratch, "standby", restored);
    standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby.start();
    standby.wait_replayed(&lsn);
    let mut with_db = env.clone();
    with_db.extend(standby.libpq_env());
    let data = standby.data.to_str().unwrap().to_string();

    // The archive goes away while promote waits for an LSN the source never wrote.
    let mut waiting = spawn_walfetch(None, &["promote", &data, "--lsn", "FF/0", "--timeout", "8s"], &with_db);
    std::thread::sleep(std::time::Duration::from_secs(2));
    drop(s3);
    assert_eq!(exit_within(&mut waiting, 60), Some(15), "not promoted, said so");
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "t");

    // PostgreSQL stops while promote waits: an error, never a promotion.
    let mut waiting = spawn_walfetch(None, &["promote", &data, "--lsn", "FF/0", "--timeout", "120s"], &with_db);
    std::thread::sleep(std::time::Duration::from_secs(2));
    standby.stop();
    let code = exit_within(&mut waiting, 60);
    assert!(code != Some(0) && code.is_some(), "exit {code:?}");
    let out = walfetch(&["status", &data, "--json"], &env);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cluster_state"], "shut down in recovery", "{report}");
}

/// The server-side environment of a standby: the archive's AWS settings only.
fn aws_only(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect()
}

#[test]
fn promote_binds_to_its_data_directory_among_two_standbys_and_no_pg_variables() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut source = Cluster::archiving(&scratch, "source", walfetch_bin(), &env, &[]);
    source.pgbench(&["-i", "-s", "1", "-q"]);
    source.backup_push(walfetch_bin(), &env);
    let out = walfetch(&["backup-list", "--json"], &env);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = listed[0]["name"].as_str().unwrap().to_string();
    source.pgbench(&["-n", "-t", "100", "-c", "2"]);
    source.backup_push(walfetch_bin(), &env);
    source.sql("CREATE TABLE late AS SELECT generate_series(1, 5000) g");
    let final_lsn = source.sql("SELECT pg_current_wal_lsn()");
    source.archive_through(&final_lsn);
    let expected: Vec<String> = TABLES.iter().map(|(t, o)| source.table_digest(t, o)).collect();
    source.stop();

    // Two standbys of different backups, each on its own port and socket directory.
    // The PostgreSQL binaries of another major come first on PATH: backup-fetch finds
    // this backup's major where Debian installs it.
    let other = pg_bin_of(16);
    let path = format!("{}:{}", other.display(), std::env::var("PATH").unwrap_or_default());
    let mut restore_env = env.clone();
    restore_env.push(("PATH".into(), path));
    let mut standbys = Vec::new();
    for (name, backup) in [("one", first.as_str()), ("two", "LATEST")] {
        let dir = scratch.path().join(name);
        let out = walfetch(&["backup-fetch", dir.to_str().unwrap(), backup, "--standby"], &restore_env);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let mut standby = Cluster::attach(&scratch, name, dir);
        standby.env = aws_only(&env);
        standby.start();
        standby.wait_replayed(&final_lsn);
        standbys.push(standby);
    }
    let (one, two) = (&standbys[0], &standbys[1]);
    let data_one = one.data.to_str().unwrap();

    // PGHOST/PGPORT pointing at the other standby: nothing is promoted, both named.
    let mut elsewhere = env.clone();
    elsewhere.extend(two.libpq_env());
    let out = walfetch(&["promote", data_one, "--lsn", &final_lsn, "--timeout", "60s"], &elsewhere);
    assert_eq!(
        out.status.code(),
        Some(21),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let said = stderr(&out);
    assert!(
        said.contains(two.data.to_str().unwrap()) && said.contains(data_one) && said.lines().count() == 1,
        "one line naming both data directories: {said}"
    );
    assert_eq!(one.sql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(two.sql("SELECT pg_is_in_recovery()"), "t");
    // status refuses the same way: it reads nothing from another cluster.
    let out = walfetch(&["status", data_one], &elsewhere);
    assert_eq!(out.status.code(), Some(21), "{}", stderr(&out));

    // The data directory alone: its own server is found and promoted, the other stays.
    let out = walfetch(&["promote", data_one, "--lsn", &final_lsn, "--timeout", "60s"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("promoted: timeline 1 -> 2"), "{text}");
    assert_eq!(one.sql("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(two.sql("SELECT pg_is_in_recovery()"), "t", "the other standby is untouched");
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| one.table_digest(t, o)).collect();
    assert_eq!(actual, expected);

    // A stopped server is named in one line, with its own exit code.
    let mut two = standbys.pop().unwrap();
    two.stop();
    let data_two = two.data.to_str().unwrap();
    for args in [&["promote", data_two, "--timeout", "10s"][..], &["check-indexes", data_two]] {
        let out = walfetch(args, &env);
        assert_eq!(out.status.code(), Some(20), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("no PostgreSQL server is running for {data_two}")) && stderr(&out).lines().count() == 1,
            "{}",
            stderr(&out)
        );
    }
}
