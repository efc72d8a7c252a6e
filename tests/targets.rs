//! Restoring to a point: a time between two commits, an LSN, a named restore point, a
//! transaction; walfetch chooses the backup (an older one when the target precedes the
//! newest), proves the WAL to the target before the first byte (refusing with exit 14
//! and no download when it cannot be reached), writes the recovery target, and the
//! restored server stops exactly there; `status` says so and `promote` ends it.

use std::time::Duration;

use crate::common::proxy::FaultProxy;
use crate::common::*;

/// What a primary archived: the marks it wrote, one row each, with what recovery must
/// see at each point.
struct History {
    scratch: Scratch,
    _s3: S3Server,
    proxy: FaultProxy,
    env: Vec<(String, String)>,
    first_backup: String,
    second_backup: String,
    /// A time after mark 'one' and before the second backup started.
    t1: String,
    /// The LSN after mark 'two'.
    lsn2: String,
    /// The transaction that wrote mark 'four'.
    xid4: String,
    data_dir: String,
}

fn marks(c: &Cluster) -> String {
    c.sql("SELECT string_agg(m, ',' ORDER BY n) FROM marks")
}

/// A primary archiving with `writer` (walfetch or walrus): backup 1, mark one, time t1,
/// backup 2, mark two (lsn2), restore point 'before_three', mark three, mark four in
/// transaction xid4, mark five; all archived.
fn history(writer: &std::path::Path) -> History {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut primary = Cluster::archiving(&scratch, "primary", writer, &env, &[]);
    primary.sql("CREATE TABLE marks (n int, m text)");
    primary.backup_push(writer, &env);
    primary.sql("INSERT INTO marks VALUES (1, 'one')");
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = primary.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'");
    std::thread::sleep(Duration::from_millis(1100));
    primary.backup_push(writer, &env);
    primary.sql("INSERT INTO marks VALUES (2, 'two')");
    let lsn2 = primary.sql("SELECT pg_current_wal_insert_lsn()");
    primary.sql("SELECT pg_create_restore_point('before_three')");
    primary.sql("INSERT INTO marks VALUES (3, 'three')");
    let xid4 = primary.sql("WITH i AS (INSERT INTO marks VALUES (4, 'four') RETURNING 1) SELECT txid_current() FROM i");
    primary.sql("INSERT INTO marks VALUES (5, 'five')");
    let end = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&end);
    primary.stop();
    let out = walfetch(&["backup-list", "--json"], &env);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = |i: usize| listed[i]["name"].as_str().unwrap().to_string();
    let proxy = FaultProxy::start(s3.port);
    let env = via(&env, &proxy.endpoint());
    History {
        first_backup: name(0),
        second_backup: name(1),
        data_dir: primary.data.display().to_string(),
        scratch,
        _s3: s3,
        proxy,
        env,
        t1,
        lsn2,
        xid4,
    }
}

/// Restores to `target` (flag, value), starts the server, waits until it pauses there,
/// and returns it with what backup-fetch said.
fn restore_to(h: &History, name: &str, flag: &str, value: &str, extra: &[&str]) -> (Cluster, String) {
    let dir = h.scratch.path().join(name);
    let mut args = vec!["backup-fetch", dir.to_str().unwrap(), flag, value];
    args.extend(extra);
    let out = walfetch(&args, &h.env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{flag} {value}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut c = Cluster::attach(&h.scratch, name, dir);
    c.env = h.env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    c.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while c.sql("SELECT pg_is_wal_replay_paused()") != "t" {
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: never paused at the target\n{}",
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (c, said)
}

fn every_target_stops_where_it_should(writer: &std::path::Path) {
    let h = history(writer);
    // A time between 'one' and the second backup: the first backup is the one that
    // ends before it, and recovery stops after 'one'.
    let (c, said) = restore_to(&h, "to-time", "--target-time", &h.t1, &[]);
    assert!(said.contains(&format!("restoring {}", h.first_backup)), "{said}");
    assert_eq!(marks(&c), "one");
    let data = c.data.display().to_string();
    let out = walfetch(&["status", &data, "--json"], &h.env);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recovery_target"]["reached"], true, "{report}");
    let out = walfetch(&["promote", &data, "--timeout", "60s"], &h.env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "promote from a paused target: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert_eq!(c.sql("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(marks(&c), "one", "nothing replayed past the target");
    drop(c);

    // An LSN after 'two': the second backup, and 'two' but not 'three'.
    let (c, said) = restore_to(&h, "to-lsn", "--target-lsn", &h.lsn2, &[]);
    assert!(said.contains(&format!("restoring {}", h.second_backup)), "{said}");
    assert_eq!(marks(&c), "one,two");
    drop(c);

    // The restore point, found in the WAL.
    let (c, said) = restore_to(&h, "to-name", "--target-name", "before_three", &[]);
    assert!(said.contains(&format!("restoring {}", h.second_backup)), "{said}");
    assert_eq!(marks(&c), "one,two");
    drop(c);

    // The transaction, inclusive: 'four' and not 'five'.
    let (c, _) = restore_to(&h, "to-xid", "--target-xid", &h.xid4, &[]);
    assert_eq!(marks(&c), "one,two,three,four");
    drop(c);

    // LATEST with a target before its end is refused in one line.
    let dir = h.scratch.path().join("refused");
    let out = walfetch(&["backup-fetch", dir.to_str().unwrap(), "LATEST", "--target-time", &h.t1], &h.env);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("lies before the end of backup"), "{}", stderr(&out));
    let _ = &h.data_dir;
}

#[test]
fn every_target_of_a_walfetch_archive_stops_where_it_should() {
    every_target_stops_where_it_should(walfetch_bin());
}

#[test]
fn every_target_of_a_walrus_archive_stops_where_it_should() {
    every_target_stops_where_it_should(walrus_bin());
}

#[test]
fn a_target_the_archive_cannot_reach_is_refused_before_any_download() {
    let h = history(walfetch_bin());
    // The segment holding 'two' is gone: the LSN after it cannot be reached.
    let seg = {
        let out = walfetch(&["wal-show", "--json"], &h.env);
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let _ = shown;
        let lsn = walfetch::wal::name::Lsn::parse(&h.lsn2).unwrap();
        walfetch::wal::name::Segment::containing(1, lsn, 16 << 20).to_string()
    };
    let wal = h._s3.data.join(BUCKET).join("pg/wal_005");
    let victim = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&seg))
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    let before = h.proxy.seen().len();
    let dir = h.scratch.path().join("unreachable");
    let out = walfetch(&["backup-fetch", dir.to_str().unwrap(), "--target-lsn", &h.lsn2], &h.env);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{seg} is missing")), "{}", stderr(&out));
    let partitions = h.proxy.seen()[before..]
        .iter()
        .filter(|s| s.line.contains("tar_partitions"))
        .count();
    assert_eq!(partitions, 0, "nothing of the backup was downloaded");
    assert!(!dir.join("base").exists());
}
