//! Nothing lost under network faults, concurrency and crashes: through a fault-injecting
//! proxy in front of the S3 server, transient faults end in correct data (a body cut
//! short resumes with a ranged GET), exhausted retries end in the right exit code, and
//! `kill -9` at any point never leaves a file that looks complete but is not.
//! (What the archive itself holds wrong is in `spine`.)

use std::fs;
use std::thread;
use std::time::Duration;

use crate::common::archive::*;
use crate::common::proxy::{Fault, FaultProxy, Seen};
use crate::common::*;
use walfetch::codec::Codec;

const SEG: &str = "000000010000000000000005";
const SEG_SIZE: u64 = 1 << 20;

/// The archive behind s3s-fs behind the proxy, and the environment to reach it.
struct Faulty {
    archive: Archive,
    _s3: S3Server,
    proxy: FaultProxy,
}

impl Faulty {
    fn new() -> Faulty {
        let archive = Archive::new();
        let s3 = S3Server::start(archive.s3_data());
        let proxy = FaultProxy::start(s3.port);
        Faulty { archive, _s3: s3, proxy }
    }

    fn env(&self) -> Vec<(String, String)> {
        let extra = [("WALFETCH_MAX_RETRIES", "4"), ("WALFETCH_IO_TIMEOUT", "2")];
        s3_archive_env(&self.proxy.endpoint(), "pg", &extra)
    }
}

/// Two data partitions of incompressible files, so faults land mid-body.
fn big_backup(a: &Archive) -> (Vec<u8>, Vec<u8>) {
    let one = noise(3 << 20, 1);
    let two = noise(2 << 20, 2);
    synthetic_backup(
        a,
        &[
            &[("PG_VERSION", b"15\n", None), ("base/1/one", &one, None)],
            &[("base/1/two", &two, None)],
        ],
        Some(r#"{"Files":{"base/1/one":{},"base/1/two":{},"PG_VERSION":{}},"TarFileSets":{"part_001.tar.lz4":[],"part_002.tar.lz4":[]}}"#),
    );
    (one, two)
}

#[test]
fn backup_fetch_finishes_correctly_through_transient_faults() {
    let f = Faulty::new();
    let (one, two) = big_backup(&f.archive);
    f.proxy.inject("_backup_stop_sentinel.json", Fault::Status(500, "InternalError"), 1);
    // Each partition is read in 1 MiB parts, fetched at once: the faults go to the
    // first part of each, whichever request reaches the proxy first.
    f.proxy.inject("part_001.tar.lz4|bytes=0-", Fault::ResetAfter(1_000_000), 1);
    f.proxy.inject("part_002.tar.lz4|bytes=0-", Fault::CutShortAfter(700_000), 1);
    f.proxy.inject("pg_control.tar.lz4", Fault::Status(503, "SlowDown"), 1);
    f.proxy.inject("list-type=2", Fault::Delay(Duration::from_millis(300)), 2);
    let target = f.archive.scratch.path().join("restored");
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &f.env());
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(fs::read(target.join("base/1/one")).unwrap(), one);
    assert_eq!(fs::read(target.join("base/1/two")).unwrap(), two);
    assert!(target.join("global/pg_control").exists());

    // Every retry is logged with its object and cause.
    for (object, cause) in [
        ("part_001.tar.lz4", "connection broke"),
        ("part_002.tar.lz4", "end of file before message length reached"),
        ("pg_control.tar.lz4", "SlowDown"),
        ("_backup_stop_sentinel.json", "500"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(object) && l.contains(cause) && (l.contains("retrying") || l.contains("resuming"))),
            "no retry line for {object} ({cause}):\n{log}"
        );
    }
    // The broken bodies resumed with ranged GETs from where they broke, not from the
    // start of their part: each part was asked for once, plus one resume.
    let seen = f.proxy.seen();
    let part = 1u64 << 20;
    for name in ["part_001.tar.lz4", "part_002.tar.lz4"] {
        let ranges = ranges_of(&seen, name);
        let mut starts: Vec<u64> = ranges.iter().map(|r| r.0).filter(|a| a % part == 0).collect();
        starts.sort();
        assert!(
            starts.windows(2).all(|w| w[1] == w[0] + part),
            "{name}: every part once: {ranges:?}"
        );
        assert_eq!(
            ranges.iter().filter(|(a, _)| a % part != 0).count(),
            1,
            "{name}: one resume: {ranges:?}"
        );
    }
}

/// The byte ranges asked for of the objects whose request line contains `name`.
fn ranges_of(seen: &[Seen], name: &str) -> Vec<(u64, u64)> {
    seen.iter()
        .filter(|s| s.line.contains(name))
        .filter_map(|s| {
            s.range
                .as_deref()?
                .strip_prefix("bytes=")?
                .split_once('-')
                .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap_or(u64::MAX)))
        })
        .collect()
}

#[test]
fn a_large_partition_read_in_ranges_survives_faults_and_comes_out_whole() {
    let f = Faulty::new();
    let (one, two) = big_backup(&f.archive);
    let part: u64 = 256 << 10;
    // The first part of each partition breaks, and must resume within that part.
    f.proxy.inject("part_001.tar.lz4|bytes=0-", Fault::ResetAfter(100_000), 1);
    f.proxy.inject("part_002.tar.lz4|bytes=0-", Fault::CutShortAfter(50_000), 1);
    let target = f.archive.scratch.path().join("restored");
    let mut env = f.env();
    env.push(("WALFETCH_RANGE_SIZE".into(), part.to_string()));
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &env);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(fs::read(target.join("base/1/one")).unwrap(), one);
    assert_eq!(fs::read(target.join("base/1/two")).unwrap(), two);

    // Both partitions were asked for in contiguous parts of at most `part` bytes, each
    // part once, the broken ones resumed inside their part.
    let seen = f.proxy.seen();
    for name in ["part_001.tar.lz4", "part_002.tar.lz4"] {
        let parts = ranges_of(&seen, name);
        assert!(parts.len() > 4, "{name} read in parts: {seen:?}");
        // Requests go out at once, so they reach the server in any order.
        let mut starts: Vec<u64> = parts.iter().map(|r| r.0).filter(|a| a % part == 0).collect();
        starts.sort();
        assert_eq!(starts[0], 0, "{parts:?}");
        assert!(starts.windows(2).all(|w| w[1] == w[0] + part), "every part once: {parts:?}");
        assert!(parts.iter().all(|(a, b)| b - a < part), "{parts:?}");
        assert_eq!(
            parts.iter().filter(|(a, _)| a % part != 0).count(),
            1,
            "one resumed part: {parts:?}"
        );
    }
}

#[test]
fn wal_fetch_survives_a_stall_and_a_reset() {
    let f = Faulty::new();
    let data = fake_segment(SEG, SEG_SIZE, 7);
    f.archive.put(&format!("wal_005/{SEG}.zst"), &encode(Codec::Zstd, &data));
    let dir = f.archive.datadir(7, true);
    f.proxy.inject(&format!("wal_005/{SEG}.zst"), Fault::Stall, 1);
    f.proxy.inject(&format!("wal_005/{SEG}.zst"), Fault::ResetAfter(1000), 1);
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &f.env());
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), data);
    assert!(log.contains("timed out"), "the stall must hit the timeout:\n{log}");
    assert_eq!(files_in(&dir.join("pg_wal")), ["RECOVERYXLOG"]);
}

#[test]
fn exhausted_retries_follow_the_exit_code_rules() {
    let f = Faulty::new();
    f.archive
        .put(&format!("wal_005/{SEG}.lz4"), &encode(Codec::Lz4, &fake_segment(SEG, SEG_SIZE, 7)));
    big_backup(&f.archive);
    f.proxy.inject(&format!("wal_005/{SEG}"), Fault::Status(503, "SlowDown"), 1000);
    f.proxy.inject("part_001.tar.lz4", Fault::Status(500, "InternalError"), 1000);
    let dir = f.archive.datadir(7, true);
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &f.env());
    assert_eq!(out.status.code(), Some(5), "standby: retry later, {}", stderr(&out));
    assert!(stderr(&out).contains("gave up after 5 attempts"), "{}", stderr(&out));
    let out = walfetch_in(
        Some(&dir),
        &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG", "--mode", "recovery"],
        &f.env(),
    );
    assert_eq!(out.status.code(), Some(133), "recovery: stop, {}", stderr(&out));
    assert!(files_in(&dir.join("pg_wal")).is_empty());

    let target = f.archive.scratch.path().join("restored");
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &f.env());
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("part_001.tar.lz4"), "{}", stderr(&out));
    assert!(target.join("WALFETCH_RESTORE_INCOMPLETE").exists() && !target.join("global/pg_control").exists());
}

#[test]
fn eight_concurrent_wal_fetches_of_one_segment_agree() {
    let a = Archive::new();
    let data = fake_segment(SEG, SEG_SIZE, 7);
    a.put(&format!("wal_005/{SEG}.br"), &encode(Codec::Brotli, &data));
    let dir = a.datadir(7, true);
    let env = a.env();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (dir, env) = (dir.clone(), env.clone());
            thread::spawn(move || walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env))
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), data);
    assert_eq!(files_in(&dir.join("pg_wal")), ["RECOVERYXLOG"]);
}

#[test]
fn kill_9_in_the_middle_of_backup_fetch_then_rerun() {
    let f = Faulty::new();
    let (one, two) = big_backup(&f.archive);
    f.proxy.inject(
        "part_002.tar.lz4|bytes=0-",
        Fault::Throttle(64 * 1024, Duration::from_millis(200)),
        1,
    );
    f.proxy.inject(
        "part_001.tar.lz4|bytes=0-",
        Fault::Throttle(64 * 1024, Duration::from_millis(200)),
        1,
    );
    let target = f.archive.scratch.path().join("restored");
    let mut child = spawn_walfetch(None, &["backup-fetch", target.to_str().unwrap(), "LATEST"], &f.env());
    // Killed once it is writing (the throttled partitions keep it there for seconds),
    // however slowly it started on a loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !target.join("WALFETCH_RESTORE_INCOMPLETE").exists() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    kill9(&mut child);
    assert!(
        target.join("WALFETCH_RESTORE_INCOMPLETE").exists(),
        "an interrupted restore must be marked"
    );
    assert!(
        !target.join("global/pg_control").exists(),
        "an interrupted restore must not be startable"
    );

    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &f.env());
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST", "--force"], &f.env());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(target.join("base/1/one")).unwrap(), one);
    assert_eq!(fs::read(target.join("base/1/two")).unwrap(), two);
    assert!(!target.join("WALFETCH_RESTORE_INCOMPLETE").exists());
}

#[test]
fn kill_9_in_the_middle_of_wal_fetch_then_rerun() {
    let f = Faulty::new();
    let data = noise(SEG_SIZE as usize, 3);
    let mut seg = fake_segment(SEG, SEG_SIZE, 7);
    seg[8192..].copy_from_slice(&data[8192..]);
    f.archive.put(&format!("wal_005/{SEG}.lz4"), &encode(Codec::Lz4, &seg));
    let dir = f.archive.datadir(7, true);
    f.proxy.inject(
        &format!("wal_005/{SEG}.lz4"),
        Fault::Throttle(64 * 1024, Duration::from_millis(150)),
        1,
    );
    let mut child = spawn_walfetch(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &f.env());
    thread::sleep(Duration::from_millis(1000));
    kill9(&mut child);
    assert!(
        !dir.join("pg_wal/RECOVERYXLOG").exists(),
        "no partial segment may be visible under %p"
    );

    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &f.env());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), seg);
    assert_eq!(
        files_in(&dir.join("pg_wal")),
        ["RECOVERYXLOG"],
        "the killed call's temporary must be cleaned up"
    );
}

#[test]
fn no_secret_appears_in_any_log_output_at_any_level() {
    let f = Faulty::new();
    f.archive
        .put(&format!("wal_005/{SEG}.lz4"), &encode(Codec::Lz4, &fake_segment(SEG, SEG_SIZE, 7)));
    big_backup(&f.archive);
    f.proxy.inject("part_001.tar.lz4", Fault::ResetAfter(100_000), 5);
    let dir = f.archive.datadir(7, true);
    let token = "FwoGZXIvYXdzEXAMPLESESSIONTOKENabc123";
    let secrets = [ACCESS_KEY, SECRET_KEY, token];
    for level in ["error", "warn", "info", "debug", "trace"] {
        for wrong_secret in [false, true] {
            let mut env = f.env();
            env.push(("AWS_SESSION_TOKEN".into(), token.into()));
            if wrong_secret {
                env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
                env.push(("AWS_SECRET_ACCESS_KEY".into(), format!("{SECRET_KEY}-wrong")));
            }
            let target = f.archive.scratch.path().join(format!("r-{level}-{wrong_secret}"));
            let runs = [
                walfetch_in(Some(&dir), &["--log-level", level, "wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env),
                walfetch(&["--log-level", level, "backup-list"], &env),
                walfetch(&["--log-level", level, "backup-fetch", target.to_str().unwrap(), "LATEST"], &env),
                walfetch(&["--log-level", level, "--log-format", "json", "wal-verify"], &env),
            ];
            for out in runs {
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
                for s in secrets {
                    assert!(!text.contains(s), "secret {s:?} in output at {level}:\n{text}");
                }
            }
        }
    }
}
