//! wal-verify and wal-show: exact gaps, unrestorable backups, timelines, segment sizes,
//! garbage and staleness, on synthetic archives and on archives real clusters wrote.

use std::fs;
use std::time::{Duration, SystemTime};

use crate::common::archive::*;
use crate::common::*;
use serde_json::Value;
use walfetch::codec::Codec;

/// Placeholder segment objects (wal-verify only lists them) for `tli`, `from..=to`.
fn segments(a: &Archive, tli: u32, from: u32, to: u32, except: &[u32]) {
    for n in (from..=to).filter(|n| !except.contains(n)) {
        a.put(&format!("wal_005/{tli:08X}00000000{n:08X}.lz4"), b"x");
    }
}

fn backup(a: &Archive, start: u64, finish: u64) {
    let name = format!("base_00000001{:08X}{:08X}", start >> 32, (start & 0xFFFF_FFFF) >> 24);
    let sentinel = format!(r#"{{"LSN":{start},"FinishLSN":{finish},"PgVersion":150000,"FinishTime":"2026-11-25T00:00:00Z"}}"#);
    a.put(&format!("basebackups_005/{name}_backup_stop_sentinel.json"), sentinel.as_bytes());
}

fn verify(a: &Archive, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["wal-verify", "--json"];
    all.extend(args);
    let out = walfetch(&all, &a.env());
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    (out.status.code().unwrap(), json)
}

fn missing(report: &Value) -> Vec<(u64, String, String)> {
    report["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["timeline"].as_u64().unwrap(),
                m["from"].as_str().unwrap().to_string(),
                m["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn unrestorable(report: &Value) -> Vec<String> {
    report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["restorable"] == false)
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

const SEG16: [&str; 2] = ["--wal-segment-size", "16MB"];

#[test]
fn reports_exactly_the_deleted_segments_and_the_backups_they_break() {
    let a = Archive::new();
    segments(&a, 1, 0x02, 0x40, &[0x05, 0x17, 0x18, 0x19]);
    backup(&a, 0x0200_0028, 0x0200_0100);
    backup(&a, 0x1600_0028, 0x1800_0100);
    let (code, r) = verify(&a, &SEG16);
    assert_eq!(code, 14, "{r:#}");
    assert_eq!(r["status"], "unrestorable");
    assert_eq!(
        missing(&r),
        [
            (1, "000000010000000000000005".into(), "000000010000000000000005".into()),
            (1, "000000010000000000000017".into(), "000000010000000000000019".into())
        ]
    );
    assert_eq!(r["missing_segments"], 4);
    assert_eq!(unrestorable(&r), ["base_000000010000000000000016"]);
    assert_eq!(r["required_from"], "000000010000000000000002");
    assert_eq!(r["required_to"], "000000010000000000000040");

    // Required WAL starts at --from: the earlier gap is no longer required.
    fs::remove_file(
        a.root
            .join("basebackups_005/base_000000010000000000000016_backup_stop_sentinel.json"),
    )
    .unwrap();
    let (code, r) = verify(&a, &["--wal-segment-size", "16MB", "--from", "000000010000000000000010"]);
    assert_eq!(code, 12, "{r:#}");
    assert_eq!(
        missing(&r),
        [(1, "000000010000000000000017".into(), "000000010000000000000019".into())]
    );
    assert!(unrestorable(&r).is_empty());

    // The human report names the same segments.
    let out = walfetch(&["wal-verify", "--wal-segment-size", "16MB"], &a.env());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("000000010000000000000017 .. 000000010000000000000019 (3)") && text.contains("status: GAPS (exit 12)"),
        "{text}"
    );
}

#[test]
fn healthy_archive_with_garbage_exits_0_and_lists_the_garbage() {
    let a = Archive::new();
    segments(&a, 1, 0x02, 0x10, &[]);
    backup(&a, 0x0200_0028, 0x0300_0100);
    a.put("wal_005/readme.txt", b"hello");
    a.put("wal_005/000000010000000000000011.lz4.tmp", b"x");
    a.put("wal_005/000000010000000000000003.00000028.backup.lz4", b"x");
    a.put("wal_005/00000001000000000000000G.lz4", b"x");
    let (code, r) = verify(&a, &SEG16);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["status"], "healthy");
    assert_eq!(r["unknown_objects"], 3);
    let examples: Vec<&str> = r["unknown_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(examples.contains(&"wal_005/readme.txt"), "{examples:?}");
    assert!(missing(&r).is_empty());
}

#[test]
fn an_archive_that_stopped_advancing_is_stale() {
    let a = Archive::new();
    segments(&a, 1, 0x02, 0x08, &[]);
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    for e in fs::read_dir(a.root.join("wal_005")).unwrap() {
        fs::File::options()
            .write(true)
            .open(e.unwrap().path())
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let (code, r) = verify(&a, &["--wal-segment-size", "16MB", "--max-age", "1h"]);
    assert_eq!(code, 13, "{r:#}");
    assert_eq!(r["status"], "stale");
    assert!(r["newest_segment_age_seconds"].as_u64().unwrap() >= 3 * 3600 - 5);
    let (code, _) = verify(&a, &["--wal-segment-size", "16MB", "--max-age", "4h"]);
    assert_eq!(code, 0);

    // Prometheus metrics are written atomically for the textfile collector.
    let prom = a.scratch.path().join("walfetch.prom");
    let out = walfetch(
        &[
            "wal-verify",
            "--wal-segment-size",
            "16MB",
            "--max-age",
            "1h",
            "--prometheus",
            prom.to_str().unwrap(),
        ],
        &a.env(),
    );
    assert_eq!(out.status.code(), Some(13));
    let text = fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("walfetch_wal_verify_status{archive=") && text.contains("} 13"),
        "{text}"
    );
}

#[test]
fn follows_timeline_history() {
    let a = Archive::new();
    // Timeline 1 until 0/A0000A0 (inside segment 0A), then timeline 2. Timeline 1's
    // segments past the branch (0B, 0C: an abandoned old primary) are not required.
    segments(&a, 1, 0x02, 0x0C, &[0x05, 0x0A]);
    a.put("wal_005/00000001000000000000000A.partial.lz4", b"x");
    a.put(
        "wal_005/00000002.history.lz4",
        &encode(Codec::Lz4, b"1\t0/A0000A0\tno recovery target specified\n"),
    );
    segments(&a, 2, 0x0A, 0x12, &[0x0C]);
    backup(&a, 0x0200_0028, 0x0200_0100);
    let (code, r) = verify(&a, &SEG16);
    assert_eq!(code, 12, "{r:#}");
    assert_eq!(r["current_timeline"], 2);
    assert_eq!(
        missing(&r),
        [
            (1, "000000010000000000000005".into(), "000000010000000000000005".into()),
            (2, "00000002000000000000000C".into(), "00000002000000000000000C".into())
        ]
    );
    assert_eq!(r["unknown_objects"], 0, "a .partial is a WAL file: {r:#}");
    let tl2 = r["timelines"].as_array().unwrap().iter().find(|t| t["timeline"] == 2).unwrap();
    assert_eq!(tl2["parent"], 1);
    assert_eq!(tl2["branched_at"], "0/A0000A0");

    let out = walfetch(&["wal-show", "--wal-segment-size", "16MB", "--json"], &a.env());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t1 = &shown[0];
    assert_eq!(t1["gaps"].as_array().unwrap().len(), 2, "{t1:#}");
    assert_eq!(t1["backups"][0], "base_000000010000000000000002");
}

#[test]
fn storage_errors_are_not_verdicts() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let mut env = s3.env();
    env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY".into(), "wrong".into()));
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let out = walfetch(&["wal-verify"], &env);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
}

/// A real cluster with `--wal-segsize`, archiving with walfetch: the size is read from
/// the archive, and a deleted segment is reported by name.
fn real_cluster_with_segment_size(mb: u32) {
    let a = Archive::new();
    let scratch = &a.scratch;
    let env = a.env();
    let small: &[(&str, &str)] = if mb == 1 {
        &[("min_wal_size", "4MB"), ("max_wal_size", "16MB")]
    } else {
        &[]
    };
    let mut pg = Cluster::init_archiving(
        scratch,
        "pg",
        &push_command(walfetch_bin()),
        &env,
        &["--wal-segsize", &mb.to_string()],
        small,
    );
    pg.start();
    for i in 0..6 {
        pg.sql(&format!("CREATE TABLE t{i} AS SELECT g FROM generate_series(1, 20000) g"));
        pg.sql("SELECT pg_switch_wal()");
    }
    let lsn = pg.sql("SELECT pg_current_wal_lsn()");
    pg.archive_through(&lsn);
    pg.stop();

    let (code, r) = verify(&a, &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["wal_segment_size"], (mb as u64) << 20);
    let mut segs: Vec<String> = fs::read_dir(a.root.join("wal_005"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 28)
        .collect();
    segs.sort();
    assert!(segs.len() >= 5, "{segs:?}");
    let victim = segs[segs.len() / 2].clone();
    fs::remove_file(a.root.join("wal_005").join(&victim)).unwrap();
    let (code, r) = verify(&a, &[]);
    assert_eq!(code, 12, "{r:#}");
    let stem = victim.trim_end_matches(".lz4").to_string();
    assert_eq!(missing(&r), [(1, stem.clone(), stem)]);
}

#[test]
fn real_cluster_with_1mb_segments() {
    real_cluster_with_segment_size(1);
}

#[test]
fn real_cluster_with_64mb_segments() {
    real_cluster_with_segment_size(64);
}

#[test]
fn a_promoted_standby_that_keeps_archiving_switches_timeline() {
    let a = Archive::new();
    let scratch = &a.scratch;
    let env = a.env();
    let push = push_command(walfetch_bin());
    let mut primary = Cluster::archiving(scratch, "primary", walfetch_bin(), &env, &[]);
    primary.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    primary.backup_push(walfetch_bin(), &env);
    primary.sql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    primary.stop();

    let standby_dir = scratch.path().join("standby");
    let out = walfetch(&["backup-fetch", standby_dir.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut standby = Cluster::attach(scratch, "standby", standby_dir);
    standby.env = env.clone();
    standby.configure(&[("archive_mode", "on"), ("archive_command", &push)]);
    standby.start();
    standby.wait_replayed(&lsn);
    let out = as_postgres(pg_bin().join("pg_ctl"))
        .arg("-D")
        .arg(&standby.data)
        .args(["-w", "promote"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    standby.sql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
    for _ in 0..3 {
        standby.sql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
        standby.sql("SELECT pg_switch_wal()");
    }
    let lsn2 = standby.sql("SELECT pg_current_wal_lsn()");
    standby.archive_through(&lsn2);

    let (code, r) = verify(&a, &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["current_timeline"], 2);
    assert!(a.root.join("wal_005/00000002.history.lz4").exists());
    // Delete a segment of timeline 2 that is not its last: exactly it is reported.
    let mut tl2: Vec<String> = fs::read_dir(a.root.join("wal_005"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("00000002") && n.len() == 28)
        .collect();
    tl2.sort();
    assert!(tl2.len() >= 3, "{tl2:?}");
    fs::remove_file(a.root.join("wal_005").join(&tl2[1])).unwrap();
    let (code, r) = verify(&a, &[]);
    assert_eq!(code, 12, "{r:#}");
    let stem = tl2[1].trim_end_matches(".lz4").to_string();
    assert_eq!(missing(&r), [(2, stem.clone(), stem)]);
}

/// More names than one listing page, on the S3 server: the rest of `wal_005/` is listed
/// in key ranges at once, and the report is exactly what one listing of the directory
/// gives: both gaps (one wider than a range), the garbage (one named exactly like a range
/// boundary), and every object counted once.
#[test]
fn ranges_listed_at_once_miss_nothing_and_count_nothing_twice() {
    let a = Archive::new();
    let wal = a.root.join("wal_005");
    fs::create_dir_all(&wal).unwrap();
    let mut objects = 0;
    let mut put = |name: String| {
        fs::write(wal.join(name), b"x").unwrap();
        objects += 1;
    };
    // 64 MB segments: 64 per log file, and a range is 16 log files.
    for log in (0..=0x27u32).filter(|l| !(0x0C..=0x1D).contains(l)) {
        for seg in (0..0x40u32).filter(|s| (log, *s) != (0x23, 0x20)) {
            put(format!("00000001{log:08X}{seg:08X}.lz4"));
        }
    }
    put("00000002.history.lz4".into());
    for log in 0x27..=0x3Cu32 {
        for seg in (0..0x40u32).filter(|s| log > 0x27 || *s == 0x3F) {
            put(format!("00000002{log:08X}{seg:08X}.zst"));
        }
    }
    for garbage in ["000000010000002", "0000000100000010:odd", "readme.txt"] {
        put(garbage.into());
    }
    a.put(
        "wal_005/00000002.history.lz4",
        &encode(Codec::Lz4, b"1\t27/FC0000A0\tno recovery target specified\n"),
    );
    let s3 = S3Server::start(a.s3_data());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    env.push(("WALG_DOWNLOAD_CONCURRENCY".into(), "3".into()));
    env.push(("WALFETCH_LOG_LEVEL".into(), "debug".into()));
    let args = ["wal-verify", "--json", "--wal-segment-size", "64MB"];
    let from_s3 = walfetch(&args, &env);
    let from_dir = walfetch(&args, &a.env());
    let (s3_report, dir_report): (Value, Value) = (
        serde_json::from_slice(&from_s3.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&from_s3))),
        serde_json::from_slice(&from_dir.stdout).unwrap(),
    );
    assert_eq!(from_s3.status.code(), Some(12), "{s3_report:#}");
    assert!(stderr(&from_s3).contains("in key ranges"), "{}", stderr(&from_s3));
    assert_eq!(s3_report["objects"], objects, "{s3_report:#}");
    assert_eq!(
        missing(&s3_report),
        [
            (1, "000000010000000C00000000".into(), "000000010000001D0000003F".into()),
            (1, "000000010000002300000020".into(), "000000010000002300000020".into())
        ]
    );
    assert_eq!(s3_report["unknown_objects"], 3);
    assert_eq!(s3_report["current_timeline"], 2);
    for field in ["missing", "objects", "unknown_objects", "timelines", "required_to"] {
        assert_eq!(s3_report[field], dir_report[field], "{field}");
    }
}
