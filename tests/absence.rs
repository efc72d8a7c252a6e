//! Never promote early, never hand over bad WAL: "absent" only when proven, every record
//! checked on the path a segment actually took, a fetcher that never outlives its
//! credentials, its server or its settings, and bad input that fails at once in one line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::archive::*;
use crate::common::proxy::{Fault, FaultProxy};
use crate::common::wal::{continuation_victim, damage_continuation, seg_name};
use crate::common::*;
use walfetch::codec::Codec;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The environment reaching s3s-fs through `proxy`, with the archive at `s3://archive/pg`.
fn through(proxy: &FaultProxy) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL".into(), proxy.endpoint()),
        ("AWS_S3_FORCE_PATH_STYLE".into(), "true".into()),
        ("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")),
        ("WALFETCH_MAX_RETRIES".into(), "1".into()),
    ]
}

/// Answers that are not S3's: a proxy's bare 404, a gateway's HTML 404, a portal's HTML 200.
const NOT_S3: [(&str, Fault); 3] = [
    ("bare 404", Fault::Answer(404, None, "")),
    (
        "HTML 404",
        Fault::Answer(404, Some("text/html"), "<html><body><h1>404 Not Found</h1></body></html>"),
    ),
    (
        "HTML 200",
        Fault::Answer(200, Some("text/html"), "<html><body>Welcome to the proxy</body></html>"),
    ),
];

#[test]
fn answers_that_are_not_s3_never_mean_absent() {
    let a = Archive::new();
    let seg = "000000010000000000000005";
    a.put(
        "wal_005/000000010000000000000004.lz4",
        &encode(Codec::Lz4, &fake_segment("000000010000000000000004", 1 << 20, 7)),
    );
    let _s3 = S3Server::start(a.s3_data());
    let proxy = FaultProxy::start(_s3.port);
    let env = through(&proxy);
    let standby = a.datadir(7, true);
    let fetch = |mode: &str| walfetch_in(Some(&standby), &["wal-fetch", seg, "pg_wal/RECOVERYXLOG", "--mode", mode], &env);

    // Through S3 itself the segment is absent: exit 1 in both modes.
    assert_eq!(code(&fetch("recovery")), 1);
    for (what, fault) in NOT_S3 {
        // Answered on the object itself, and (after S3's own NoSuchKey) on the listing.
        for target in [format!("/wal_005/{seg}.lz4"), "list-type=2".to_string()] {
            proxy.clear();
            proxy.inject(&target, fault.clone(), 100);
            let out = fetch("recovery");
            assert!(
                code(&out) >= 128,
                "{what} on {target}: archive recovery must stop: {}",
                stderr(&out)
            );
            let out = fetch("standby");
            assert!(![0, 1].contains(&code(&out)), "{what} on {target}: {}", stderr(&out));
            assert!(!standby.join("pg_wal/RECOVERYXLOG").exists());
            let err = stderr(&out);
            assert_eq!(err.lines().filter(|l| l.contains("error (")).count(), 1, "{err}");
            assert!(!err.contains(" { ") && !err.contains("Some("), "a Debug dump: {err}");
        }
    }
    // A listing of backups answered that way is an error too, never "no backups".
    proxy.clear();
    proxy.inject("list-type=2", Fault::Answer(404, None, ""), 100);
    let out = walfetch(&["backup-list"], &env);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("without an S3 error code"), "{}", stderr(&out));
}

/// A real primary archiving to S3, a base backup, and WAL after it; returns the LSN the
/// archive reaches and the digest of the table written after the backup.
fn primary_with_backup(scratch: &Scratch, env: &[(String, String)], initdb: &[&str]) -> (Cluster, String, String) {
    let mut primary = Cluster::archiving(scratch, "primary", walfetch_bin(), env, initdb);
    primary.sql("CREATE TABLE before_backup AS SELECT g FROM generate_series(1, 1000) g");
    primary.backup_push(walfetch_bin(), env);
    primary.sql("CREATE TABLE after_backup AS SELECT g, repeat(md5(g::text), 60) AS t FROM generate_series(1, 6000) g");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let digest = primary.table_digest("after_backup", "g");
    primary.stop();
    (primary, lsn, digest)
}

/// Starts `pg` in archive recovery and waits for it to stop by itself (a restore_command
/// exit of 128 or more is fatal), never promoting; returns its log.
fn recovery_stops(pg: &mut Cluster, through: &str) -> String {
    pg.try_start();
    assert!(
        pg.wait_stopped(90),
        "archive recovery went on through {through}:\n{}",
        pg.log_text()
    );
    let log = pg.log_text();
    assert!(
        !log.contains("archive recovery complete") && !log.contains("selected new timeline"),
        "promoted:\n{log}"
    );
    log
}

/// The name of the 16 MiB segment on timeline 1 that holds `lsn` (`X/Y`).
fn segment_of(lsn: &str) -> String {
    let (hi, lo) = lsn.split_once('/').unwrap();
    let (hi, lo) = (u32::from_str_radix(hi, 16).unwrap(), u32::from_str_radix(lo, 16).unwrap());
    format!("00000001{hi:08X}{:08X}", lo >> 24)
}

/// The credentials of `env` only: what the server's environment carries.
fn credentials(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.starts_with("AWS_ACCESS") || k.starts_with("AWS_SECRET"))
        .cloned()
        .collect()
}

#[test]
fn archive_recovery_through_a_bare_404_stops_without_promoting() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let (_primary, lsn, digest) = primary_with_backup(&scratch, &env, &[]);

    // The restore goes through a proxy; its restore_command keeps that endpoint.
    let proxy = FaultProxy::start(s3.port);
    let restored = scratch.path().join("restored");
    let out = walfetch(
        &["backup-fetch", restored.to_str().unwrap(), "LATEST", "--recovery"],
        &through(&proxy),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    proxy.inject("/wal_005/", Fault::Answer(404, None, ""), 100_000);
    let mut pg = Cluster::attach(&scratch, "restored", restored);
    pg.env = credentials(&env);
    pg.env.push(("WALFETCH_MAX_RETRIES".into(), "1".into()));
    let log = recovery_stops(&mut pg, "a bare 404");
    assert!(log.contains("exit code 133"), "restore_command must exit 128 + 5:\n{log}");

    // The same in the middle of recovery: the last segment answered by something that is not S3.
    proxy.clear();
    proxy.inject(&format!("/wal_005/{}", segment_of(&lsn)), Fault::Answer(404, None, ""), 100_000);
    let log = recovery_stops(&mut pg, "a bare 404");
    assert!(
        log.contains("restored log file") && log.matches("exit code 133").count() == 2,
        "{log}"
    );
    assert_eq!(pg.control_field("Database cluster state:"), "in archive recovery", "{log}");
    assert_eq!(pg.control_field("Latest checkpoint's TimeLineID:"), "1");

    // With S3 answering again, the same recovery replays everything and only then promotes.
    proxy.clear();
    pg.start();
    pg.wait_replayed(&lsn);
    wait_for("the end of archive recovery", 60, || pg.sql("SELECT pg_is_in_recovery()") == "f");
    assert_eq!(pg.table_digest("after_backup", "g"), digest);
}

/// The walfetch call PostgreSQL makes, run in `datadir` with `env`.
fn wal_fetch(datadir: &Path, n: u32, env: &[(String, String)]) -> std::process::Output {
    walfetch_in(Some(datadir), &["wal-fetch", &seg_name(n), "pg_wal/RECOVERYXLOG"], env)
}

#[test]
fn a_damaged_continuation_is_refused_however_the_segment_arrives() {
    let scratch = Scratch::new();
    let root = scratch.dir(&format!("s3/{BUCKET}/pg"));
    let env = vec![("WALG_FILE_PREFIX".to_string(), root.display().to_string())];
    let (primary, _, _) = primary_with_backup(&scratch, &env, &["--wal-segsize", "1"]);
    let backup_start = fs::read_dir(root.join("basebackups_005"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("base_")
                .map(|n| u32::from_str_radix(&n[16..24], 16).unwrap())
        })
        .next()
        .unwrap();
    let victim = continuation_victim(&root, backup_start + 2);
    damage_continuation(&root, victim);

    // Archive recovery, prefetch off: PostgreSQL stops at the damaged segment, never promotes.
    let restored = scratch.path().join("restored");
    let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--recovery"], &env);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut pg = Cluster::attach(&scratch, "restored", restored.clone());
    pg.env = vec![("WALFETCH_PREFETCH".into(), "off".into())];
    let log = recovery_stops(&mut pg, "a damaged record");
    assert!(log.contains("exit code 135"), "{log}");
    assert_eq!(pg.control_field("Database cluster state:"), "in archive recovery");

    // The same calls by hand, prefetch off: the previous segment handed over, then the
    // damaged one refused in both modes, naming the object and the record.
    let off = vec![env[0].clone(), ("WALFETCH_PREFETCH".into(), "off".into())];
    assert_eq!(code(&wal_fetch(&restored, victim - 1, &off)), 0);
    let out = wal_fetch(&restored, victim, &off);
    assert_eq!(code(&out), 128 + 7, "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!("wal_005/{}.lz4", seg_name(victim))) && msg.contains("begun in the previous segment"),
        "{msg}"
    );
    fs::write(restored.join("standby.signal"), "").unwrap();
    assert_eq!(code(&wal_fetch(&restored, victim, &off)), 7);
    // Without walfetch's record of the last hand-over, the previous segment PostgreSQL
    // keeps in pg_wal is read instead.
    let state = restored.join("pg_wal/.wal-g/prefetch/.walfetch-handover.json");
    fs::remove_file(&state).unwrap();
    fs::rename(
        restored.join("pg_wal/RECOVERYXLOG"),
        restored.join("pg_wal").join(seg_name(victim - 1)),
    )
    .unwrap();
    assert_eq!(code(&wal_fetch(&restored, victim, &off)), 7);
    assert!(!restored.join("pg_wal/RECOVERYXLOG").exists());

    // Prefetch on, the fetcher started by a direct fetch of the previous segment: it
    // prefetches the damaged one without its predecessor's tail, so only the hand-over
    // gate can see the damage; it refuses it from the spool.
    let on = vec![
        env[0].clone(),
        ("WALFETCH_PREFETCH".into(), "on".into()),
        ("WALFETCH_FOLLOW_IDLE".into(), "300".into()),
    ];
    assert_eq!(code(&wal_fetch(&restored, victim - 1, &on)), 0);
    let spooled = restored.join("pg_wal/.wal-g/prefetch").join(seg_name(victim));
    wait_for("the fetcher to prefetch the damaged segment", 30, || spooled.exists());
    let out = wal_fetch(&restored, victim, &on);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(prefetched)") && stderr(&out).contains("begun in the previous segment"),
        "{}",
        stderr(&out)
    );

    // A standby retries; `walfetch status` names what blocks it.
    let mut pg = Cluster::attach(&scratch, "standby", restored.clone());
    pg.env = on[1..].to_vec();
    pg.start();
    wait_for("PostgreSQL to ask for the damaged segment", 60, || {
        pg.log_text().contains(&seg_name(victim))
    });
    let out = walfetch(&["status", restored.to_str().unwrap(), "--json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(code(&out), 15, "{report:#}");
    assert_eq!(report["next_segment"], seg_name(victim), "{report:#}");
    assert_eq!(report["next_segment_source"], "restore_command", "{report:#}");
    assert!(
        report["problems"].to_string().contains("begun in the previous segment"),
        "{report:#}"
    );
    assert_eq!(report["failing_call"]["file"], seg_name(victim), "{report:#}");
    assert!(
        report["failing_call"]["failing_since"].is_string() && report["failing_call"]["failures"].as_u64() >= Some(1),
        "{report:#}"
    );
    assert!(
        report["problems"]
            .to_string()
            .contains("the prefetch fetcher keeps failing (corrupt) since"),
        "{report:#}"
    );
    // The fetcher it started goes when the server goes.
    let spool = restored.join("pg_wal/.wal-g/prefetch");
    let info: serde_json::Value = serde_json::from_slice(&fs::read(spool.join(".walfetch-follow.json")).unwrap()).unwrap();
    let pid = info["pid"].as_u64().unwrap() as u32;
    assert!(info["postmaster"].as_u64().is_some(), "{info}");
    pg.stop();
    wait_for("the fetcher to exit with its server", 15, || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    drop(primary);
}

/// Fake segments 5.. of 1 MiB in the bucket's archive, as lz4.
fn put_segments(data: &Path, range: std::ops::RangeInclusive<u32>) {
    for n in range {
        let path = data.join(BUCKET).join(format!("pg/wal_005/{}.lz4", seg_name(n)));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, encode(Codec::Lz4, &fake_segment(&seg_name(n), 1 << 20, 7))).unwrap();
    }
    give_to_postgres(data);
}

#[test]
fn credentials_renewed_in_a_file_reach_the_running_fetcher() {
    let a = Archive::new();
    let data = a.s3_data();
    let port = free_port();
    let s3 = S3Server::start_with(data.clone(), port, "first-key", "first-secret-0123456789");
    put_segments(&data, 5..=8);
    let creds = a.scratch.path().join("credentials");
    write_credentials(&creds, "first-key", "first-secret-0123456789");
    let mut env = credentials_file_env(&creds, port, "pg");
    env.extend([
        ("WALG_PG_WAL_SIZE".into(), "1".into()),
        ("WALFETCH_PREFETCH".into(), "on".into()),
        ("WALFETCH_FOLLOW_IDLE".into(), "300".into()),
    ]);
    let dir = a.datadir(7, true);
    let spool = dir.join("pg_wal/.wal-g/prefetch");
    assert_eq!(code(&wal_fetch(&dir, 5, &env)), 0);
    wait_for("the spool to fill", 30, || (6..=8).all(|n| spool.join(seg_name(n)).exists()));
    let pid = || -> u64 {
        let info: serde_json::Value = serde_json::from_slice(&fs::read(spool.join(".walfetch-follow.json")).unwrap()).unwrap();
        info["pid"].as_u64().unwrap()
    };
    let fetcher = pid();

    // The provider rotates the key; the standby moves on to segments the fetcher does not have.
    drop(s3);
    let _s3 = S3Server::start_with(data.clone(), port, "second-key", "second-secret-0123456789");
    put_segments(&data, 9..=12);
    for n in 6..=8 {
        assert_eq!(code(&wal_fetch(&dir, n, &env)), 0);
    }
    let status = spool.join(".walfetch-status.json");
    wait_for("the fetcher to report rejected credentials", 30, || {
        fs::read_to_string(&status).is_ok_and(|t| t.contains("\"kind\": \"credentials\""))
    });
    // A direct fetch meanwhile fails as a credentials error, never as "absent".
    let out = wal_fetch(&dir, 9, &env);
    assert_eq!(code(&out), 6, "{}", stderr(&out));

    // The renewed file is picked up by the same fetcher, within its reload interval.
    write_credentials(&creds, "second-key", "second-secret-0123456789");
    wait_for("the fetcher to prefetch with the renewed credentials", 60, || {
        spool.join(seg_name(9)).exists()
    });
    assert_eq!(pid(), fetcher, "the fetcher reloaded its credentials itself");
    wait_for("the fetcher to report that it works again", 20, || {
        fs::read_to_string(&status).is_ok_and(|t| !t.contains("\"kind\": \"credentials\""))
    });
    let log = fs::read_to_string(spool.join(".walfetch-follow.log")).unwrap();
    let failures = log.lines().filter(|l| l.contains("prefetch") && l.contains("fail")).count();
    assert!((1..=3).contains(&failures), "a repeated failure is logged once a minute:\n{log}");
    assert!(log.contains("reloaded"), "{log}");
}

#[test]
fn a_fetcher_with_other_settings_is_replaced() {
    let a = Archive::new();
    for n in 5..=9 {
        a.put(
            &format!("wal_005/{}.lz4", seg_name(n)),
            &encode(Codec::Lz4, &fake_segment(&seg_name(n), 1 << 20, 7)),
        );
    }
    let dir = a.datadir(7, true);
    let spool = dir.join("pg_wal/.wal-g/prefetch");
    let mut env = a.env();
    env.extend([
        ("WALFETCH_PREFETCH".to_string(), "on".to_string()),
        ("WALG_PG_WAL_SIZE".to_string(), "1".to_string()),
        ("WALFETCH_FOLLOW_IDLE".to_string(), "60".to_string()),
    ]);
    let pid = || -> Option<u64> {
        let info: serde_json::Value = serde_json::from_slice(&fs::read(spool.join(".walfetch-follow.json")).ok()?).ok()?;
        info["pid"].as_u64()
    };
    assert_eq!(code(&wal_fetch(&dir, 5, &env)), 0);
    wait_for("the fetcher to start", 60, || {
        pid().is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    });
    let first = pid().unwrap();
    // The server restarted with other settings (here: a different read-ahead).
    env.push(("WALG_DOWNLOAD_CONCURRENCY".into(), "3".into()));
    assert_eq!(code(&wal_fetch(&dir, 6, &env)), 0);
    wait_for("the old fetcher to go", 60, || !Path::new(&format!("/proc/{first}")).exists());
    // PostgreSQL calls again every few seconds; on a loaded machine the old fetcher may
    // still be exiting at the first call (which then leaves the start to the next one).
    let mut polls = 0;
    wait_for("a new fetcher", 60, || {
        polls += 1;
        if polls % 20 == 0 {
            let _ = wal_fetch(&dir, 6, &env);
        }
        pid().is_some_and(|p| p != first && Path::new(&format!("/proc/{p}")).exists())
    });

    // A fetcher run as a service (its own environment) is never stopped by wal-fetch.
    let second = pid().unwrap();
    // SAFETY: a signal to the fetcher this test started.
    unsafe {
        libc::kill(second as libc::pid_t, libc::SIGTERM);
    }
    wait_for("the on-demand fetcher to go", 60, || {
        !Path::new(&format!("/proc/{second}")).exists()
    });
    let mut service_env = env.clone();
    service_env.push(("AWS_REGION".into(), "eu-west-1".into()));
    let mut service = as_postgres(walfetch_bin())
        .args(["follow", dir.to_str().unwrap(), "--foreground"])
        .envs(service_env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the service fetcher", 60, || {
        pid().is_some_and(|p| p != second && Path::new(&format!("/proc/{p}")).exists())
    });
    let service_pid = pid().unwrap();
    assert_eq!(code(&wal_fetch(&dir, 7, &env)), 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(Path::new(&format!("/proc/{service_pid}")).exists(), "wal-fetch stopped a service");
    let _ = service.kill();
    let _ = service.wait();
}

#[test]
fn bad_input_fails_at_once_in_one_line_with_its_own_exit_code() {
    let a = Archive::new();
    a.put(
        "wal_005/000000010000000000000004.lz4",
        &encode(Codec::Lz4, &fake_segment("000000010000000000000004", 1 << 20, 7)),
    );
    let dir = a.datadir(7, true);
    let one_line = |out: &std::process::Output| {
        let err = stderr(out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            !err.contains(" { ") && !err.contains("Some(") && !err.contains("panicked"),
            "a Debug dump or a panic: {err}"
        );
    };
    let fetch = |env: &[(String, String)]| walfetch_in(Some(&dir), &["wal-fetch", "000000010000000000000005", "pg_wal/RECOVERYXLOG"], env);

    // Malformed endpoint: a configuration error at once, not a network error retried.
    for endpoint in ["http://127.0.0.1:notaport", "http://", "ftp://host"] {
        let mut env = a.env();
        env.retain(|(k, _)| k != "WALG_FILE_PREFIX");
        env.extend([
            ("WALG_S3_PREFIX".to_string(), "s3://b/p".to_string()),
            ("AWS_ENDPOINT_URL".to_string(), endpoint.to_string()),
            ("WALFETCH_MAX_RETRIES".to_string(), "8".to_string()),
        ]);
        let out = fetch(&env);
        assert_eq!(code(&out), 3, "{endpoint}: {}", stderr(&out));
        one_line(&out);
        assert!(stderr(&out).contains("AWS_ENDPOINT_URL"), "{}", stderr(&out));
    }
    // Prefixes that would silently name a directory under the current one.
    for prefix in ["s3:/bucket/p", "archive", "./archive"] {
        let out = fetch(&[("WALG_S3_PREFIX".into(), prefix.into())]);
        assert_eq!(code(&out), 3, "{prefix}: {}", stderr(&out));
        one_line(&out);
    }
    // No credentials anywhere: one line that says what to set.
    let out = walfetch_in(
        Some(&dir),
        &["wal-fetch", "000000010000000000000005", "pg_wal/RECOVERYXLOG"],
        &[
            ("WALG_S3_PREFIX".into(), "s3://b/p".into()),
            ("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{}", free_port())),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
            ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
            ("AWS_ACCESS_KEY_ID".into(), String::new()),
            ("AWS_SECRET_ACCESS_KEY".into(), String::new()),
        ],
    );
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    one_line(&out);
    assert!(stderr(&out).contains("AWS_ACCESS_KEY_ID"), "{}", stderr(&out));
    // A closed port: unreachable after the short connection budget, one error line.
    let out = fetch(&[
        ("WALG_S3_PREFIX".into(), "s3://b/p".into()),
        ("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{}", free_port())),
        ("AWS_ACCESS_KEY_ID".into(), "k".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
        ("WALFETCH_MAX_RETRIES".into(), "8".into()),
    ]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().filter(|l| l.contains("error (unreachable)")).count(), 1, "{err}");
    let retries = err.lines().filter(|l| l.contains("retrying")).count();
    assert!((1..8).contains(&retries), "connection failures get a short budget: {err}");
    for line in err.lines().filter(|l| l.contains("delay_ms=")) {
        let ms: u64 = line.rsplit("delay_ms=").next().unwrap().trim().parse().unwrap();
        assert!(ms <= 10_000, "a retry delay above the documented cap: {line}");
    }

    // A command line that does not parse never reads "absent" to PostgreSQL.
    let recovery = a.scratch.dir("recovery");
    fs::create_dir_all(recovery.join("pg_wal")).unwrap();
    fs::write(recovery.join("PG_VERSION"), "15\n").unwrap();
    give_to_postgres(&recovery);
    for (dir, want) in [(&recovery, 131), (&dir, 3)] {
        let out = walfetch_in(
            Some(dir),
            &["wal-fetch", "--bogus", "000000010000000000000005", "pg_wal/RECOVERYXLOG"],
            &a.env(),
        );
        assert_eq!(code(&out), want, "{}", stderr(&out));
        one_line(&out);
        let mut env = a.env();
        env.push(("WALFETCH_RECOVERY_MODE".into(), "archive".into()));
        let out = walfetch_in(Some(dir), &["wal-fetch", "000000010000000000000005", "pg_wal/RECOVERYXLOG"], &env);
        assert_eq!(code(&out), want, "{}", stderr(&out));
    }

    // A standby whose pg_wal is a symlink to a WAL disk is still a standby.
    let linked = a.scratch.dir("linked");
    let disk = a.scratch.dir("waldisk");
    fs::write(linked.join("PG_VERSION"), "15\n").unwrap();
    fs::write(linked.join("standby.signal"), "").unwrap();
    std::os::unix::fs::symlink(&disk, linked.join("pg_wal")).unwrap();
    give_to_postgres(&linked);
    let mut packed = encode(Codec::Lz4, &fake_segment("000000010000000000000006", 1 << 20, 7));
    let mid = packed.len() / 2;
    packed[mid] ^= 0xFF;
    a.put("wal_005/000000010000000000000006.lz4", &packed);
    let out = walfetch_in(
        Some(&linked),
        &["wal-fetch", "000000010000000000000006", "pg_wal/RECOVERYXLOG"],
        &a.env(),
    );
    assert_eq!(
        code(&out),
        7,
        "a standby retries, never stops on a symlinked pg_wal: {}",
        stderr(&out)
    );

    // A closed pipe ends the output quietly, with the command's own exit code (here the
    // gap at segment 5: 12).
    let verdict = code(&walfetch(&["wal-verify", "--json"], &a.env()));
    assert_eq!(verdict, 12);
    let mut child = as_postgres(walfetch_bin())
        .args(["wal-verify", "--json"])
        .envs(a.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before walfetch writes a byte.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(verdict), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    // wal-fetch outside a data directory: the file, and nothing else anywhere.
    let elsewhere = a.scratch.dir("elsewhere");
    let dest = a.scratch.dir("some/dir").join("file");
    let mut env = a.env();
    env.push(("WALFETCH_PREFETCH".into(), "on".into()));
    let out = walfetch_in(
        Some(&elsewhere),
        &["wal-fetch", "000000010000000000000004", dest.to_str().unwrap()],
        &env,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(dest.exists());
    for d in [&elsewhere, &dest.parent().unwrap().to_path_buf()] {
        assert_eq!(fs::read_dir(d).unwrap().count(), usize::from(*d != elsewhere), "{}", d.display());
    }
    assert!(!stderr(&out).contains("fetcher"), "{}", stderr(&out));
}

#[test]
fn an_archive_that_is_not_there_is_an_error_for_every_command() {
    let a = Archive::new();
    let dir = a.datadir(7, true);
    let missing: PathBuf = a.scratch.path().join("unmounted/archive");
    let env = vec![("WALG_FILE_PREFIX".to_string(), missing.display().to_string())];
    let cases: [&[&str]; 5] = [
        &["backup-list"],
        &["check"],
        &["wal-verify"],
        &["wal-show"],
        &["backup-fetch", "TARGET", "LATEST"],
    ];
    let target = a.scratch.path().join("target").display().to_string();
    for args in cases {
        let args: Vec<&str> = args.iter().map(|w| if *w == "TARGET" { target.as_str() } else { w }).collect();
        let args = args.as_slice();
        let out = walfetch(args, &env);
        assert_eq!(code(&out), 3, "{args:?}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            stderr(&out).contains("check the prefix") || String::from_utf8_lossy(&out.stdout).contains("check the prefix"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let seg = "000000010000000000000005";
    let out = walfetch_in(Some(&dir), &["wal-fetch", seg, "pg_wal/RECOVERYXLOG"], &env);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let out = walfetch_in(Some(&dir), &["wal-fetch", seg, "pg_wal/RECOVERYXLOG", "--mode", "recovery"], &env);
    assert_eq!(code(&out), 131, "{}", stderr(&out));
    let pushed = a.scratch.path().join(seg);
    fs::write(&pushed, fake_segment(seg, 1 << 20, 7)).unwrap();
    give_to_postgres(&pushed);
    let out = walfetch(&["wal-push", pushed.to_str().unwrap()], &env);
    assert_eq!(
        code(&out),
        3,
        "wal-push must not create an archive where none is mounted: {}",
        stderr(&out)
    );
    assert!(!missing.exists());

    // An S3 prefix that holds no objects (a typo): the same for every command.
    let _s3 = S3Server::start(a.s3_data());
    let mut env = _s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/typo")));
    a.put(
        "wal_005/000000010000000000000004.lz4",
        b"in s3://archive/pg, not in s3://archive/typo",
    );
    for args in [&["wal-verify"][..], &["backup-list"], &["check"], &["wal-show"]] {
        let out = walfetch(args, &env);
        assert_eq!(code(&out), 3, "{args:?}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    }
    let out = walfetch_in(Some(&dir), &["wal-fetch", seg, "pg_wal/RECOVERYXLOG", "--mode", "recovery"], &env);
    assert_eq!(code(&out), 131, "{}", stderr(&out));
}

/// What S3 answers through an access policy someone else wrote.
const KMS_DENIED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.</Message></Error>";

#[test]
fn an_access_policy_someone_else_wrote_is_diagnosed_and_never_means_absent() {
    let a = Archive::new();
    let present = "000000010000000000000004";
    let missing = "000000010000000000000005";
    a.put(
        &format!("wal_005/{present}.lz4"),
        &encode(Codec::Lz4, &fake_segment(present, 1 << 20, 7)),
    );
    let _s3 = S3Server::start(a.s3_data());
    let proxy = FaultProxy::start(_s3.port);
    let env = through(&proxy);
    let standby = a.datadir(7, true);
    let fetch = |seg: &str| {
        walfetch_in(
            Some(&standby),
            &["wal-fetch", seg, "pg_wal/RECOVERYXLOG", "--mode", "standby"],
            &env,
        )
    };

    // s3:GetObject without s3:ListBucket: listings are refused, and so is a GET of a
    // key that does not exist (403, not 404).
    proxy.inject("list-type=2", Fault::Status(403, "AccessDenied"), 100);
    proxy.inject(missing, Fault::Status(403, "AccessDenied"), 100);
    let out = walfetch(&["check"], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 6, "{text}");
    assert!(
        text.contains("lacks s3:ListBucket") && !text.contains("check AWS_ACCESS_KEY_ID"),
        "{text}"
    );
    let out = fetch(missing);
    assert!(![0, 1].contains(&code(&out)), "a 403 is never absent: {}", stderr(&out));
    assert!(
        stderr(&out).contains("or the object does not exist and the policy lacks s3:ListBucket"),
        "{}",
        stderr(&out)
    );
    assert!(!standby.join("pg_wal/RECOVERYXLOG").exists());

    // An object encrypted with a KMS key these credentials may not use.
    proxy.clear();
    proxy.inject(present, Fault::Answer(403, Some("application/xml"), KMS_DENIED), 100);
    let out = fetch(present);
    assert!(![0, 1].contains(&code(&out)), "{}", stderr(&out));
    assert!(stderr(&out).contains("ask the bucket's owner for kms:Decrypt"), "{}", stderr(&out));
    assert!(!standby.join("pg_wal/RECOVERYXLOG").exists());
    proxy.clear();
    assert_eq!(code(&fetch(present)), 0, "the same segment, once readable");
}
