//! barman-cloud's layout (CloudNativePG's backups and WAL) read as natively as wal-g
//! archives: the real barman-cloud-wal-archive archives a real primary into the S3
//! server and barman-cloud-backup takes its backups, with each compression; walfetch
//! lists, verifies, restores and feeds a standby that replays to the primary's state,
//! given nothing but the prefix. Then what goes wrong, each in one line with its own
//! exit code.

use std::fs;
use std::path::PathBuf;

use crate::common::barman::*;
use crate::common::*;

/// The backups walfetch lists, as JSON rows.
fn listed(env: &[(String, String)]) -> Vec<serde_json::Value> {
    let out = walfetch(&["backup-list", "--json"], env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn every_compression_is_restored_and_replayed_from_the_prefix_alone() {
    for (wal_flag, data_flag) in [
        ("--gzip", "--gzip"),
        ("--snappy", "--snappy"),
        ("--xz", "--bzip2"),
        ("--zstd", "--lz4"),
        ("", ""),
    ] {
        let scratch = Scratch::new();
        let src = Source::new(&scratch, wal_flag, &[]);
        let p = &src.primary;
        p.pgbench(&["-i", "-s", "1", "-q"]);
        let mut flags = vec!["-n", "nightly"];
        flags.extend([data_flag].iter().filter(|f| !f.is_empty()));
        src.backup(&flags);
        p.pgbench(&["-n", "-t", "200", "-c", "2"]);
        let lsn = p.sql("SELECT pg_current_wal_lsn()");
        p.archive_through(&lsn);
        let expected = pgbench_digests(p);
        let env = src.env();

        let rows = listed(&env);
        assert_eq!(rows.len(), 1, "{rows:?}");
        let id = rows[0]["name"].as_str().unwrap().to_string();
        assert!(id.len() == 15 && id.as_bytes()[8] == b'T', "a barman backup id: {id}");
        let out = walfetch(&["wal-verify", "--json"], &env);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{wal_flag} {data_flag}: {report}");
        let out = walfetch(&["check"], &env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );

        // By the name CloudNativePG gives (its Backup resource's), as barman-cloud-restore takes it.
        restores_and_replays(&scratch, "standby", "nightly", &env, &[], &lsn, &expected);
    }
}

#[test]
fn a_tablespace_and_a_backup_split_into_parts_are_restored_elsewhere() {
    let scratch = Scratch::new();
    let src = Source::new(&scratch, "--gzip", &[]);
    let p = &src.primary;
    let space = scratch.dir("fast-space");
    give_to_postgres(&space);
    p.sql(&format!("CREATE TABLESPACE fast LOCATION '{}'", space.display()));
    p.pgbench(&["-i", "-s", "2", "-q", "--tablespace=fast"]);
    // Rows that compress poorly, in the tablespace.
    p.sql("CREATE TABLE noise TABLESPACE fast AS SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS t FROM generate_series(1, 300000) g");
    let oid = p.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'fast'");
    // Parts of about 1 MB: the data tar is split (barman splits between files, once a
    // part has uploaded more: its tablespace tar, of a few large files, stays whole here).
    src.backup(&["--gzip", "--max-archive-size", "1MB"]);
    p.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let lsn = p.sql("SELECT pg_current_wal_lsn()");
    p.archive_through(&lsn);
    let expected = pgbench_digests(p);
    let env = src.env();
    let id = listed(&env)[0]["name"].as_str().unwrap().to_string();
    let tars: Vec<String> = fs::read_dir(src.object_dir(&format!("base/{id}")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tars.iter().any(|t| t.starts_with("data_0001.tar")), "{tars:?}");
    assert!(tars.iter().any(|t| t.starts_with(&format!("{oid}.tar"))), "{tars:?}");

    let moved = scratch.path().join("fast-moved");
    let map = format!("{oid}={}", moved.display());
    restores_and_replays(&scratch, "standby", "LATEST", &env, &["--tablespace-map", &map], &lsn, &expected);
    let link = scratch.path().join("standby").join("pg_tblspc").join(&oid);
    assert_eq!(fs::read_link(&link).unwrap(), moved);
}

#[test]
fn a_missing_segment_a_damaged_tar_and_a_wrong_server_each_fail_in_one_line() {
    let scratch = Scratch::new();
    let src = Source::new(&scratch, "--gzip", &[]);
    let p = &src.primary;
    p.pgbench(&["-i", "-s", "1", "-q"]);
    src.backup(&["--snappy"]);
    // Segments past the backup's end, so one of them can go missing without making
    // the backup itself unrestorable.
    for round in 0..4 {
        p.sql(&format!("CREATE TABLE after_{round} AS SELECT generate_series(1, 20000) g"));
        p.sql("SELECT pg_switch_wal()");
    }
    let lsn = p.sql("SELECT pg_current_wal_lsn()");
    p.archive_through(&lsn);
    let env = src.env();
    let id = listed(&env)[0]["name"].as_str().unwrap().to_string();

    // A wrong server name: the ones there are, exit 3.
    let mut wrong = env.clone();
    wrong.push(("WALFETCH_BARMAN_SERVER".into(), "nope".into()));
    let out = walfetch(&["backup-list"], &wrong);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("barman server 'nope' is not in") && stderr(&out).contains(SERVER),
        "{}",
        stderr(&out)
    );

    // A segment the standby needs, gone: wal-verify names the gap (12), wal-fetch of it
    // is a proven absence (1), and a restore of the backup whose WAL it is refuses first.
    let begin_wal = listed(&env)[0]["wal_segment_backup_start"].as_str().map(str::to_string);
    let seg_dir = src.object_dir("wals");
    let mut segments: Vec<PathBuf> = fs::read_dir(&seg_dir)
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().len() == 24 + ".gz".len())
        .collect();
    segments.sort();
    assert!(segments.len() >= 5, "{segments:?} (backup starts at {begin_wal:?})");
    let victim = segments[segments.len() - 2].clone();
    let name = victim.file_name().unwrap().to_string_lossy()[..24].to_string();
    fs::remove_file(&victim).unwrap();
    let out = walfetch(&["wal-verify"], &env);
    assert_eq!(out.status.code(), Some(12), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&name),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dest = scratch.path().join("RECOVERYXLOG");
    let out = walfetch(&["wal-fetch", &name, dest.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!dest.exists());

    // A byte of the data tar changed: the restore fails naming the object (7), and the
    // directory is left marked, never startable.
    let tar = fs::read_dir(src.object_dir(&format!("base/{id}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("data.tar"))
        .unwrap();
    let mut bytes = fs::read(&tar).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    fs::write(&tar, &bytes).unwrap();
    let target = scratch.path().join("damaged");
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), &id, "--no-wal-check"], &env);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("data.tar.snappy"), "{err}");
    assert!(
        !target.join("global/pg_control").exists(),
        "a damaged restore must not look startable"
    );
}

#[test]
fn a_named_restore_point_is_reached_and_wal_show_lists_the_server() {
    let scratch = Scratch::new();
    let src = Source::new(&scratch, "--gzip", &[]);
    let p = &src.primary;
    p.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g");
    src.backup(&["--gzip"]);
    p.sql("INSERT INTO t VALUES (-1)");
    p.sql("SELECT pg_create_restore_point('cut')");
    p.sql("INSERT INTO t VALUES (-2)");
    let lsn = p.sql("SELECT pg_current_wal_lsn()");
    p.archive_through(&lsn);
    let env = src.env();
    let id = listed(&env)[0]["name"].as_str().unwrap().to_string();

    let out = walfetch(&["wal-show"], &env);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{shown}{}", stderr(&out));
    assert!(shown.contains(&id) && shown.contains("timeline 1"), "{shown}");

    let dir = scratch.path().join("restored");
    let out = walfetch(&["backup-fetch", dir.to_str().unwrap(), "--target-name", "cut"], &env);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
    let mut c = Cluster::attach(&scratch, "restored", dir);
    c.env = env.clone();
    c.start();
    wait_for("the pause at the restore point", 90, || {
        c.sql("SELECT pg_is_wal_replay_paused()") == "t"
    });
    assert_eq!(c.sql("SELECT count(*) || ':' || min(g) FROM t"), "20001:-1", "-1 is in, -2 is not");
    c.stop();
}
