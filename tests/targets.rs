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

#[test]
fn restore_only_one_database_of_three_with_a_restore_spec_moving_two_tablespaces() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let mut primary = Cluster::archiving(&scratch, "primary", walfetch_bin(), &env, &[]);
    let (ts1, ts2) = (scratch.dir("ts1"), scratch.dir("ts2"));
    primary.sql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts1.display()));
    primary.sql(&format!("CREATE TABLESPACE ts2 LOCATION '{}'", ts2.display()));
    for db in ["app1", "app2", "app3"] {
        primary.sql(&format!("CREATE DATABASE {db}"));
        primary.sql_in(
            db,
            "CREATE TABLE filler AS SELECT g, md5(g::text) m FROM generate_series(1, 30000) g",
        );
    }
    primary.sql_in(
        "app2",
        "CREATE TABLE one TABLESPACE ts1 AS SELECT g FROM generate_series(1, 5000) g",
    );
    primary.sql_in(
        "app2",
        "CREATE TABLE two TABLESPACE ts2 AS SELECT g FROM generate_series(1, 7000) g",
    );
    let oid = |what: &str| primary.sql(&format!("SELECT oid FROM {what}"));
    let (oid1, oid3) = (oid("pg_database WHERE datname = 'app1'"), oid("pg_database WHERE datname = 'app3'"));
    let (t1, t2) = (
        oid("pg_tablespace WHERE spcname = 'ts1'"),
        oid("pg_tablespace WHERE spcname = 'ts2'"),
    );
    let mut push_env = env.clone();
    push_env.push(("WALG_TAR_SIZE_THRESHOLD".into(), (1u64 << 20).to_string()));
    primary.backup_push(walfetch_bin(), &push_env);
    primary.sql_in("app2", "INSERT INTO one SELECT generate_series(5001, 6000)");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let expected = [
        primary.sql_in("app2", "SELECT count(*) || ':' || sum(g) FROM one"),
        primary.sql_in("app2", "SELECT count(*) || ':' || sum(g) FROM two"),
        primary.sql_in("app2", "SELECT count(*) || ':' || md5(string_agg(m, ',' ORDER BY g)) FROM filler"),
    ];
    primary.stop();

    // The partitions that hold nothing but app1's and app3's files.
    let backups = s3.data.join(BUCKET).join("pg/basebackups_005");
    let backup_dir = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(backup_dir.join("files_metadata.json")).unwrap()).unwrap();
    let left_out: Vec<String> = meta["TarFileSets"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, files)| {
            files.as_array().unwrap().iter().all(|f| {
                let f = f.as_str().unwrap();
                [&oid1, &oid3].iter().any(|o| f.starts_with(&format!("base/{o}/")))
            })
        })
        .map(|(name, _)| name.clone())
        .collect();
    assert!(left_out.len() >= 2, "app1 and app3 have partitions of their own: {left_out:?}");

    let spec = scratch.path().join("spec.json");
    let (new1, new2) = (scratch.dir("ts1-moved"), scratch.dir("ts2-moved"));
    std::fs::write(
        &spec,
        format!(
            r#"{{"base_prefix": "/ignored", "tablespaces": ["{t1}", "{t2}"], "{t1}": {{"loc": "{}", "link": "pg_tblspc/{t1}"}}, "{t2}": {{"Loc": "{}", "Link": "pg_tblspc/{t2}"}}}}"#,
            new1.display(),
            new2.display()
        ),
    )
    .unwrap();
    let proxy = FaultProxy::start(s3.port);
    let through = via(&env, &proxy.endpoint());
    let dir = scratch.path().join("standby");
    let d = dir.to_str().unwrap();
    let s = spec.to_str().unwrap();
    let out = walfetch(
        &[
            "backup-fetch",
            d,
            "LATEST",
            "--standby",
            "--restore-only",
            "app2",
            "--restore-spec",
            s,
        ],
        &through,
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
    assert!(
        said.contains("restore-only: restored") && said.contains("DROP DATABASE app1; DROP DATABASE app3;"),
        "{said}"
    );
    let fetched: Vec<String> = proxy.seen().iter().map(|s| s.line.clone()).collect();
    for part in &left_out {
        assert!(
            !fetched.iter().any(|l| l.contains(part.as_str())),
            "{part} was fetched: {fetched:?}"
        );
    }
    assert_eq!(std::fs::read_link(dir.join(format!("pg_tblspc/{t1}"))).unwrap(), new1);
    assert_eq!(std::fs::read_link(dir.join(format!("pg_tblspc/{t2}"))).unwrap(), new2);
    let mut standby = Cluster::attach(&scratch, "standby", dir.clone());
    standby.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby.start();
    standby.wait_replayed(&lsn);
    let actual = [
        standby.sql_in("app2", "SELECT count(*) || ':' || sum(g) FROM one"),
        standby.sql_in("app2", "SELECT count(*) || ':' || sum(g) FROM two"),
        standby.sql_in("app2", "SELECT count(*) || ':' || md5(string_agg(m, ',' ORDER BY g)) FROM filler"),
    ];
    assert_eq!(actual, expected, "app2 is the source's");

    // A spec naming a tablespace the backup does not have is refused before any download.
    std::fs::write(&spec, r#"{"99999": {"loc": "/tmp/nowhere"}}"#).unwrap();
    let before = proxy.seen().len();
    let other = scratch.path().join("refused");
    let out = walfetch(&["backup-fetch", other.to_str().unwrap(), "LATEST", "--restore-spec", s], &through);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no tablespace 99999"), "{}", stderr(&out));
    let downloads = proxy.seen()[before..]
        .iter()
        .filter(|s| s.line.contains("/tar_partitions/"))
        .count();
    assert_eq!(downloads, 0, "no partition downloaded");
}

#[test]
fn a_target_across_a_timeline_switch_follows_the_history() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let push = push_command(walfetch_bin());
    let mut primary = Cluster::archiving(&scratch, "primary", walfetch_bin(), &env, &[]);
    primary.sql("CREATE TABLE marks (n int, m text)");
    primary.backup_push(walfetch_bin(), &env);
    primary.sql("INSERT INTO marks VALUES (1, 'one')");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    primary.stop();
    // A standby of that archive is promoted and writes on, archiving timeline 2.
    let dir = scratch.path().join("new-primary");
    let out = walfetch(&["backup-fetch", dir.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut promoted = Cluster::attach(&scratch, "new-primary", dir);
    promoted.env = env.clone();
    promoted.configure(&[("archive_mode", "on"), ("archive_command", &push)]);
    promoted.start();
    promoted.wait_replayed(&lsn);
    let out = as_postgres(pg_bin().join("pg_ctl"))
        .arg("-D")
        .arg(&promoted.data)
        .args(["-w", "promote"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    promoted.sql("INSERT INTO marks VALUES (2, 'two')");
    let target = promoted.sql("SELECT pg_current_wal_insert_lsn()");
    promoted.sql("SELECT pg_switch_wal()");
    promoted.sql("INSERT INTO marks VALUES (3, 'three')");
    let end = promoted.sql("SELECT pg_current_wal_lsn()");
    promoted.archive_through(&end);
    promoted.stop();

    // The only backup is on timeline 1; the target is on timeline 2.
    let dir = scratch.path().join("to-target");
    let out = walfetch(&["backup-fetch", dir.to_str().unwrap(), "--target-lsn", &target], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let mut c = Cluster::attach(&scratch, "to-target", dir);
    c.env = env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    c.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while c.sql("SELECT pg_is_wal_replay_paused()") != "t" {
        assert!(std::time::Instant::now() < deadline, "never paused at the target\n{}", c.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        marks(&c),
        "one,two",
        "replayed through the switch to timeline 2, and not past the target"
    );
    // Recovering along timeline 1 only cannot reach it: refused before any download.
    let dir = scratch.path().join("current");
    let out = walfetch(
        &[
            "backup-fetch",
            dir.to_str().unwrap(),
            "--target-lsn",
            &target,
            "--target-timeline",
            "current",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(stderr(&out).contains("is missing"), "{}", stderr(&out));
}
