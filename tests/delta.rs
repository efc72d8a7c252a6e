//! Delta backups: walrus writes a full backup, a delta and a delta of that delta (the
//! last renamed to wal-g's form, `base_<own>_D_<parent's segment>`); walfetch restores
//! the newest (LATEST), the middle one and the full one by name, each as a standby that
//! replays to the primary's state; a chain with a missing link is refused, naming the
//! full backup that can be restored instead.

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::common::archive::encode;
use crate::common::proxy::{Fault, FaultProxy};
use crate::common::*;

const TABLES: &[(&str, &str)] = &[
    ("pgbench_accounts", "aid"),
    ("pgbench_history", "tid, bid, aid, delta, mtime"),
    ("between", "g"),
];

/// Backup names in the archive, oldest first.
fn backups(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("basebackups_005"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix("_backup_stop_sentinel.json")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn a_walrus_delta_chain_restores_at_every_level_and_replays() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut deltas = env.clone();
    deltas.push(("WALG_DELTA_MAX_STEPS".into(), "3".into()));

    let mut primary = Cluster::archiving(&scratch, "primary", walrus_bin(), &env, &[]);
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    primary.sql("CREATE TABLE between (g int)");
    primary.sql("CREATE DATABASE gone");
    let gone = primary.sql("SELECT oid FROM pg_database WHERE datname = 'gone'");
    primary.backup_push(walrus_bin(), &env);
    primary.pgbench(&["-n", "-t", "300", "-c", "2"]);
    primary.sql("INSERT INTO between SELECT generate_series(1, 20000)");
    primary.backup_push(walrus_bin(), &deltas);
    primary.pgbench(&["-n", "-t", "300", "-c", "2"]);
    // Rows deleted and a table dropped between the deltas: the newest restore must not
    // bring back what its backup no longer has.
    primary.sql("DELETE FROM between WHERE g % 2 = 0");
    primary.sql("DROP DATABASE gone");
    primary.sql("CREATE TABLE dropped AS SELECT generate_series(1, 5000) g");
    primary.sql("CHECKPOINT");
    primary.backup_push(walrus_bin(), &deltas);
    primary.sql("DROP TABLE dropped");
    primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let expected: Vec<String> = TABLES.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
    primary.stop();

    let root = s3data.join(BUCKET).join("pg");
    let names = backups(&root);
    assert_eq!(names.len(), 3, "a full backup and two deltas: {names:?}");
    let (full, middle, newest) = (names[0].clone(), names[1].clone(), names[2].clone());
    assert!(middle.contains("_D_") && newest.contains("_D_"), "{names:?}");
    // walrus names a delta of a delta by its parent's whole name; wal-g by the parent's
    // segment only. Give the newest wal-g's name: the chain is found by DeltaFrom.
    let walg_name = format!("{}_D_{}", &newest[..29], &middle[5..29]);
    let dir = root.join("basebackups_005");
    fs::rename(dir.join(&newest), dir.join(&walg_name)).unwrap();
    fs::rename(
        dir.join(format!("{newest}_backup_stop_sentinel.json")),
        dir.join(format!("{walg_name}_backup_stop_sentinel.json")),
    )
    .unwrap();
    give_to_postgres(&s3data);

    let out = walfetch(&["backup-list"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| list.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(row(&full).contains(" full  -"), "{list}");
    assert!(row(&middle).ends_with(&format!("delta {full}")), "{list}");
    assert!(row(&walg_name).ends_with(&format!("delta {middle}")), "{list}");

    // Interrupted while a delta layer is being restored (the full layer done), then
    // resumed: byte-identical to an uninterrupted restore of the chain.
    let whole = scratch.path().join("whole");
    let out = walfetch(&["backup-fetch", whole.to_str().unwrap(), "LATEST"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let proxy = FaultProxy::start(s3.port);
    let slowed = via(&env, &proxy.endpoint());
    // The newest layer's first partition lags, so the interruption finds the chain part way.
    proxy.inject(
        &format!("{walg_name}/tar_partitions/part_001"),
        Fault::Throttle(16 * 1024, std::time::Duration::from_millis(300)),
        100_000,
    );
    proxy.inject(
        "tar_partitions",
        Fault::Throttle(16 * 1024, std::time::Duration::from_millis(20)),
        100_000,
    );
    let resumed = scratch.path().join("resumed");
    let mut child = spawn_walfetch(None, &["backup-fetch", resumed.to_str().unwrap(), "LATEST"], &slowed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let journal = resumed.join("WALFETCH_RESTORE_JOURNAL");
    while !fs::read_to_string(&journal).is_ok_and(|j| j.lines().any(|l| l.contains("\"done\"") && l.contains(&middle))) {
        assert!(std::time::Instant::now() < deadline, "the delta layer never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    kill9(&mut child);
    assert!(resumed.join("WALFETCH_RESTORE_INCOMPLETE").exists());
    proxy.clear();
    let out = walfetch(&["backup-fetch", resumed.to_str().unwrap(), "LATEST", "--resume"], &slowed);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(&resumed, &whole);
    assert!(
        !whole.join("base").join(&gone).exists(),
        "a database dropped before the newest delta is not brought back from an older layer"
    );

    for (case, name) in [("latest", "LATEST"), ("middle", middle.as_str()), ("full", full.as_str())] {
        let restored = scratch.path().join(case);
        let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), name, "--standby"], &env);
        assert_eq!(out.status.code(), Some(0), "{case}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        match case {
            "latest" => assert!(
                stdout.contains(&format!("restored {walg_name}")) && stdout.contains("delta chain"),
                "{stdout}"
            ),
            "middle" => assert!(
                stdout.contains(&format!("delta chain, applied in this order: {full}, {middle}")),
                "{stdout}"
            ),
            _ => assert!(!stdout.contains("delta chain"), "{stdout}"),
        }
        let mut standby = Cluster::attach(&scratch, case, restored);
        standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
        standby.start();
        standby.wait_replayed(&lsn);
        let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
        assert_eq!(actual, expected, "{case}: the standby differs from the primary");
        standby.stop();
    }

    // An increment missing from the newest delta's partitions (its metadata still marks
    // the file incremented): the older layer's pages would stay; the restore fails.
    let parts_dir = dir.join(&walg_name).join("tar_partitions");
    let (victim, original, without) = fs::read_dir(&parts_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part_"))
        .find_map(|p| {
            let original = fs::read(&p).unwrap();
            let mut plain = Vec::new();
            walfetch::codec::Codec::Lz4
                .decoder(Box::new(std::io::Cursor::new(original.clone())), "t")
                .read_to_end(&mut plain)
                .unwrap();
            let mut archive = tar::Archive::new(std::io::Cursor::new(plain));
            let mut builder = tar::Builder::new(Vec::new());
            let mut dropped = false;
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                if !dropped && data.starts_with(b"wi1\x55") {
                    dropped = true;
                    continue;
                }
                let mut header = entry.header().clone();
                builder.append_data(&mut header, entry.path().unwrap(), &data[..]).unwrap();
            }
            dropped.then(|| (p, original, encode(walfetch::codec::Codec::Lz4, &builder.into_inner().unwrap())))
        })
        .expect("the newest delta holds an increment");
    fs::write(&victim, without).unwrap();
    let out = walfetch(
        &["backup-fetch", scratch.path().join("missing-increment").to_str().unwrap(), "LATEST"],
        &env,
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("the delta backup is incomplete"), "{}", stderr(&out));
    fs::write(&victim, original).unwrap();

    // The middle link goes missing: the newest cannot be restored, and the error says
    // which backup is missing and which full backup can be restored instead.
    fs::remove_file(dir.join(format!("{middle}_backup_stop_sentinel.json"))).unwrap();
    let out = walfetch(&["backup-fetch", scratch.path().join("broken").to_str().unwrap(), &walg_name], &env);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("is a delta of {middle}, which is not in the archive"))
            && stderr(&out).contains(&format!("the newest full backup, {full}, can be restored instead")),
        "{}",
        stderr(&out)
    );
}

/// Reads `name`'s files_metadata.json from a directory archive.
fn files_metadata(root: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(root.join("basebackups_005").join(name).join("files_metadata.json")).unwrap()).unwrap()
}

fn sentinel(root: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(root.join("basebackups_005").join(format!("{name}_backup_stop_sentinel.json"))).unwrap()).unwrap()
}

/// Files of a backup flagged `flag` (`IsIncremented`, `IsSkipped`).
fn flagged(meta: &serde_json::Value, flag: &str) -> usize {
    meta["Files"].as_object().unwrap().values().filter(|f| f[flag] == true).count()
}

#[test]
fn walfetch_writes_delta_chains_that_walrus_and_walfetch_restore() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut deltas = env.clone();
    deltas.push(("WALG_DELTA_MAX_STEPS".into(), "2".into()));

    let mut primary = Cluster::archiving(&scratch, "primary", walfetch_bin(), &env, &[]);
    primary.pgbench(&["-i", "-s", "2", "-q"]);
    primary.sql("CREATE TABLE between (g int)");
    primary.sql("CREATE TABLE untouched AS SELECT g FROM generate_series(1, 50000) g");
    primary.sql("CHECKPOINT");
    primary.backup_push(walfetch_bin(), &deltas);
    primary.pgbench(&["-n", "-t", "300", "-c", "2"]);
    primary.sql("INSERT INTO between SELECT generate_series(1, 20000)");
    primary.backup_push(walfetch_bin(), &deltas);
    primary.pgbench(&["-n", "-t", "300", "-c", "2"]);
    primary.sql("DELETE FROM between WHERE g % 2 = 0");
    primary.sql("CREATE TABLE created_late AS SELECT g FROM generate_series(1, 3000) g");
    primary.backup_push(walfetch_bin(), &deltas);
    primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let mut tables = TABLES.to_vec();
    tables.extend([("untouched", "g"), ("created_late", "g")]);
    let expected: Vec<String> = tables.iter().map(|(t, o)| primary.table_digest(t, o)).collect();

    // Full, a delta of it, a delta of that: named and described as wal-g does.
    let root = s3data.join(BUCKET).join("pg");
    let names = backups(&root);
    assert_eq!(names.len(), 3, "{names:?}");
    let (full, middle, newest) = (&names[0], &names[1], &names[2]);
    let seg = |n: &str| n["base_".len().."base_".len() + 24].to_string();
    assert_eq!(*middle, format!("base_{}_D_{}", seg(middle), seg(full)));
    assert_eq!(*newest, format!("base_{}_D_{}", seg(newest), seg(middle)));
    let s = sentinel(&root, newest);
    assert_eq!(s["DeltaFrom"], middle.as_str());
    assert_eq!(s["DeltaFullName"], full.as_str());
    assert_eq!(s["DeltaCount"], 2);
    assert_eq!(s["DeltaFromLSN"], sentinel(&root, middle)["LSN"]);
    assert!(sentinel(&root, full).get("DeltaFrom").is_none());
    let meta = files_metadata(&root, newest);
    assert!(flagged(&meta, "IsIncremented") > 0, "the delta has increments");
    assert!(flagged(&meta, "IsSkipped") > 0, "the delta skips unchanged relation files");
    let size = |n: &str| sentinel(&root, n)["CompressedSize"].as_u64().unwrap();
    assert!(size(newest) < size(full), "a delta is smaller than the full backup");

    // A fourth backup would make three deltas, more than WALG_DELTA_MAX_STEPS=2: full.
    primary.backup_push(walfetch_bin(), &deltas);
    let after = backups(&root);
    let fourth = after.iter().find(|n| !names.contains(n)).unwrap();
    assert!(!fourth.contains("_D_"), "{fourth}");
    assert!(sentinel(&root, fourth).get("DeltaFrom").is_none());
    primary.stop();
    // Restore the three-backup chain: drop the fourth full backup from the archive.
    fs::remove_dir_all(root.join("basebackups_005").join(fourth)).unwrap();
    fs::remove_file(root.join("basebackups_005").join(format!("{fourth}_backup_stop_sentinel.json"))).unwrap();

    // walrus restores walfetch's delta chain.
    let mut standby = walrus_standby(&scratch, "walrus-standby", &env);
    standby.start();
    standby.wait_replayed(&lsn);
    let actual: Vec<String> = tables.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(
        actual, expected,
        "walrus's restore of walfetch's delta chain differs from the primary"
    );
    standby.stop();

    // And walfetch restores it (LATEST and the middle delta by name).
    for (label, name) in [("latest", "LATEST"), ("middle", middle.as_str())] {
        let restored = scratch.path().join(format!("walfetch-{label}"));
        let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), name, "--standby"], &env);
        assert_eq!(out.status.code(), Some(0), "{label}: {}", stderr(&out));
        let mut standby = Cluster::attach(&scratch, &format!("walfetch-{label}"), restored);
        standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
        standby.start();
        standby.wait_replayed(&lsn);
        let actual: Vec<String> = tables.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
        assert_eq!(
            actual, expected,
            "{label}: walfetch's restore of its own delta chain differs from the primary"
        );
        standby.stop();
    }
}

#[test]
fn a_delta_push_killed_midway_leaves_the_chain_to_the_last_complete_backup() {
    use crate::common::proxy::{Fault, FaultProxy};
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let proxy = FaultProxy::start(s3.port);
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    env.push(("WALG_DELTA_MAX_STEPS".into(), "3".into()));
    env.push(("WALG_TAR_SIZE_THRESHOLD".into(), "1048576".into()));
    env.push(("WALG_UPLOAD_CONCURRENCY".into(), "1".into()));

    let mut primary = Cluster::archiving(&scratch, "primary", walfetch_bin(), &env, &[]);
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    primary.sql("CREATE TABLE between (g int)");
    primary.backup_push(walfetch_bin(), &env);
    let root = s3data.join(BUCKET).join("pg");
    let full = backups(&root).pop().unwrap();
    primary.pgbench(&["-n", "-t", "200", "-c", "2"]);

    // A delta push through a proxy that holds its second partition: killed there.
    proxy.inject("part_002", Fault::Stall, 1);
    let mut through = via(&env, &proxy.endpoint());
    through.extend(primary.libpq_env());
    let mut push = spawn_walfetch(None, &["backup-push", primary.data.to_str().unwrap()], &through);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy.seen().iter().any(|r| r.line.contains("part_002")) {
        assert!(std::time::Instant::now() < deadline, "the push never reached its second partition");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    kill9(&mut push);
    assert_eq!(backups(&root), vec![full.clone()], "the killed delta is not a backup");

    primary.sql("INSERT INTO between SELECT generate_series(1, 20000)");
    primary.backup_push(walfetch_bin(), &env);
    primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let expected: Vec<String> = TABLES.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
    primary.stop();
    let names = backups(&root);
    assert_eq!(names.len(), 2, "{names:?}");
    let newest = names.iter().find(|n| **n != full).unwrap();
    assert_eq!(
        sentinel(&root, newest)["DeltaFrom"],
        full.as_str(),
        "the base is the last complete backup"
    );

    let restored = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut standby = Cluster::attach(&scratch, "standby", restored);
    standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby.start();
    standby.wait_replayed(&lsn);
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, expected);
}
