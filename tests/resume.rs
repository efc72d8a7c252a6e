//! Large restores: one interrupted and resumed (`backup-fetch --resume`), the proof a
//! restore asks for before its first byte, and a bandwidth limit; from a real
//! PostgreSQL's backup in the real S3 server, through a proxy that slows the link and
//! counts what it serves.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use walfetch::codec::Codec;

use crate::common::archive::*;
use crate::common::proxy::{Fault, FaultProxy, Seen};
use crate::common::*;

const JOURNAL: &str = "WALFETCH_RESTORE_JOURNAL";
const MARKER: &str = "WALFETCH_RESTORE_INCOMPLETE";
const STAGED: &str = "global/pg_control.walfetch-staged";
const TABLES: &[(&str, &str)] = &[("pgbench_accounts", "aid"), ("pgbench_history", "tid, bid, aid, delta, mtime")];

/// A primary's backup in many partitions, WAL archived after it, the primary stopped;
/// the S3 server behind a proxy.
struct Source {
    scratch: Scratch,
    _s3: S3Server,
    proxy: FaultProxy,
    /// Settings that reach S3 through the proxy.
    env: Vec<(String, String)>,
    /// The backup's partitions: key → size.
    partitions: BTreeMap<String, u64>,
    /// The LSN the primary stopped at, and its tables' digests.
    lsn: String,
    expected: Vec<String>,
}

impl Source {
    fn new() -> Source {
        let scratch = Scratch::new();
        let s3data = scratch.dir("s3");
        let s3 = S3Server::start(s3data.clone());
        let mut env = s3.env();
        env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
        let mut primary = Cluster::archiving(&scratch, "primary", walfetch_bin(), &env, &[]);
        primary.pgbench(&["-i", "-s", "2", "-q"]);
        let mut push_env = env.clone();
        push_env.push(("WALG_TAR_SIZE_THRESHOLD".into(), (3u64 << 20).to_string()));
        primary.backup_push(walfetch_bin(), &push_env);
        primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
        let lsn = primary.sql("SELECT pg_current_wal_lsn()");
        primary.archive_through(&lsn);
        let expected = TABLES.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
        primary.stop();

        let backups = s3data.join(BUCKET).join("pg/basebackups_005");
        let dir = fs::read_dir(&backups)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.path().is_dir())
            .unwrap();
        let partitions: BTreeMap<String, u64> = fs::read_dir(dir.path().join("tar_partitions"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
            .collect();
        assert!(partitions.len() >= 6, "the backup should come in many partitions: {partitions:?}");

        let proxy = FaultProxy::start(s3.port);
        let env = via(&env, &proxy.endpoint());
        Source {
            scratch,
            _s3: s3,
            proxy,
            env,
            partitions,
            lsn,
            expected,
        }
    }

    /// Slows every partition's download to 16 KiB per `pause` per connection, and the
    /// largest data partition to 16 KiB per 300 ms: parts of all partitions download at
    /// once and would end together, and an interruption must find one unfinished.
    /// Returns that partition.
    fn slow(&self, pause: Duration) -> String {
        // The largest: a partition may hold a single small file (backup-push starts one
        // where a database's files begin).
        let laggard = self
            .partitions
            .iter()
            .filter(|(k, _)| k.starts_with("part_"))
            .max_by_key(|(_, size)| **size)
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        self.proxy
            .inject(&laggard, Fault::Throttle(16 * 1024, Duration::from_millis(300)), 100_000);
        self.proxy.inject("tar_partitions", Fault::Throttle(16 * 1024, pause), 100_000);
        laggard
    }

    fn fetch(&self, target: &Path, extra: &[&str]) -> std::process::Output {
        let t = target.display().to_string();
        let mut args = vec!["backup-fetch", t.as_str(), "LATEST", "--standby"];
        args.extend(extra);
        walfetch(&args, &self.env)
    }

    /// Starts a restore into `target` and kills it (SIGKILL) once `ready` says so.
    fn interrupt(&self, target: &Path, extra: &[&str], ready: impl Fn(&Path) -> bool) {
        let t = target.display().to_string();
        let mut args = vec!["backup-fetch", t.as_str(), "LATEST", "--standby"];
        args.extend(extra);
        let mut child = spawn_walfetch(None, &args, &self.env);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ready(target) {
            assert!(Instant::now() < deadline, "the restore never reached the point to interrupt it");
            if let Some(status) = child.try_wait().unwrap() {
                let out = walfetch(&["backup-fetch", &t, "LATEST", "--standby", "--resume"], &self.env);
                panic!(
                    "the restore ended ({status}) before it could be interrupted; journal: {:?}; a resume now says: {}",
                    finished(target),
                    stderr(&out)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        kill9(&mut child);
        assert!(target.join(MARKER).exists(), "an interrupted restore must stay marked");
        assert!(
            !target.join("global/pg_control").exists(),
            "an interrupted restore must not be startable"
        );
    }

    /// Body bytes served for each partition since request number `since`.
    fn served_since(&self, since: usize) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in &self.proxy.seen()[since..] {
            if let Some(key) = self.partitions.keys().find(|k| s.line.contains(&format!("tar_partitions/{k}"))) {
                *out.entry(key.clone()).or_insert(0) += s.served.load(std::sync::atomic::Ordering::Relaxed);
            }
        }
        out
    }
}

/// The partitions a target's journal records as finished.
fn finished(target: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(target.join(JOURNAL)).unwrap_or_default();
    text.lines()
        .filter(|l| l.ends_with('}'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["done"]["partition"].as_str().map(|p| p.rsplit('/').next().unwrap().to_string()))
        .collect()
}

#[test]
fn a_restore_killed_halfway_resumes_with_only_the_rest_and_the_standby_replays() {
    let src = Source::new();
    let target = src.scratch.path().join("standby");
    let half = src.partitions.len() / 2;
    let laggard = src.slow(Duration::from_millis(10));
    src.interrupt(&target, &[], |t| finished(t).len() >= half.min(src.partitions.len() - 2));
    assert!(!finished(&target).contains(&laggard));
    let vouched = finished(&target);

    // Without --resume, the way forward is named.
    let out = src.fetch(&target, &[]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--resume") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );

    src.proxy.clear();
    let since = src.proxy.seen().len();
    let out = src.fetch(&target, &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("resumed: {} of {} partitions", vouched.len(), src.partitions.len())),
        "{stdout}"
    );
    // Only what the journal did not vouch for was downloaded, each partition once, whole.
    let served = src.served_since(since);
    let expected: BTreeMap<String, u64> = src
        .partitions
        .iter()
        .filter(|(k, _)| !vouched.contains(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        served, expected,
        "the resume fetched what it should not have (vouched: {vouched:?})"
    );
    assert!(!target.join(JOURNAL).exists() && !target.join(MARKER).exists());

    let mut standby = Cluster::attach(&src.scratch, "standby", target);
    standby.env = src.env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
    standby.start();
    standby.wait_replayed(&src.lsn);
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, src.expected, "the standby's data differs from the primary's");
}

#[test]
fn interrupted_twice_once_with_pg_control_staged_the_restore_is_byte_identical() {
    let src = Source::new();
    let whole = src.scratch.path().join("whole");
    let out = src.fetch(&whole, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let target = src.scratch.path().join("resumed");
    let laggard = src.slow(Duration::from_millis(50));
    src.interrupt(&target, &[], |t| finished(t).len() >= 2);
    // The second interruption comes during the resume, with pg_control staged and a
    // partition still on its way (a moment after the resume started: it has its
    // connections open and parts under way).
    let resumed_at = Instant::now();
    src.interrupt(&target, &["--resume"], |t| {
        t.join(STAGED).exists() && !finished(t).contains(&laggard) && resumed_at.elapsed() > Duration::from_millis(800)
    });
    assert!(target.join(STAGED).exists() && !finished(&target).contains(&laggard));
    src.proxy.clear();
    let out = src.fetch(&target, &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(&target, &whole);
}

#[test]
fn a_full_disk_fails_the_restore_and_after_space_is_freed_it_resumes() {
    let src = Source::new();
    let whole = src.scratch.path().join("whole");
    let out = src.fetch(&whole, &["--no-sync"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let size: u64 = tree(&whole).values().map(|d| d.len() as u64).sum();

    // A filesystem with room for about half of it.
    let mount = src.scratch.dir("small");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={},mode=0777", size / 2), "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(ok.success(), "this test needs root to mount a small tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let target = mount.join("pgdata");
    let out = src.fetch(&target, &[]);
    assert_eq!(out.status.code(), Some(9), "disk full is a local I/O error: {}", stderr(&out));
    assert!(stderr(&out).contains("No space left on device"), "{}", stderr(&out));
    assert!(target.join(MARKER).exists() && !target.join("global/pg_control").exists());
    assert!(!finished(&target).is_empty(), "some partitions fit before the disk filled");

    let ok = Command::new("mount")
        .args(["-o", &format!("remount,size={}", size * 3)])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = src.fetch(&target, &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(&target, &whole);
}

#[test]
fn a_resume_of_another_backup_or_without_an_interrupted_restore_is_refused() {
    let a = Archive::new();
    synthetic_backup(
        &a,
        &[&[("PG_VERSION", b"15\n", None), ("base/1/1", &noise(1 << 20, 1), None)]],
        None,
    );
    let target = a.scratch.path().join("restored");
    // An interrupted restore of the synthetic backup: marker and journal, as a kill
    // after the header leaves them.
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join(MARKER), "").unwrap();
    fs::write(
        target.join(JOURNAL),
        format!("{{\"journal\":{{\"version\":1,\"backup\":\"{BACKUP}\",\"start_lsn\":\"0/2000028\",\"finish_lsn\":\"0/2000100\",\"system_identifier\":7,\"finish_time\":\"2026-11-25T09:45:05Z\"}}}}\n"),
    )
    .unwrap();
    give_to_postgres(a.scratch.path());
    let t = target.display().to_string();
    // Another backup in the same archive.
    let other = "base_000000010000000000000003";
    let backups = a.root.join("basebackups_005");
    for entry in fs::read_dir(&backups).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let copied = Command::new("cp")
            .arg("-r")
            .arg(backups.join(&name))
            .arg(backups.join(name.replace(BACKUP, other)))
            .status()
            .unwrap();
        assert!(copied.success());
    }
    give_to_postgres(a.scratch.path());
    let out = walfetch(&["backup-fetch", &t, other, "--resume"], &a.env());
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("interrupted restore of {BACKUP}, not {other}")),
        "{}",
        stderr(&out)
    );
    assert!(target.join(JOURNAL).exists(), "a refused resume changes nothing");

    // LATEST with --resume continues the backup the directory holds, and finishes it.
    let out = walfetch(&["backup-fetch", &t, "LATEST", "--resume"], &a.env());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("restored {BACKUP}")));

    // An interrupted restore that does not say which backup it is (an older walfetch's
    // marker, no journal) is never resumed: only --force starts over.
    fs::write(target.join(MARKER), "walfetch is restoring something here\n").unwrap();
    let out = walfetch(&["backup-fetch", &t, "LATEST", "--resume"], &a.env());
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not say which backup"), "{}", stderr(&out));
    let out = walfetch(&["backup-fetch", &t, "LATEST", "--force"], &a.env());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // --force deletes only once the restore can go ahead: a mistyped name leaves the
    // directory as it was.
    let out = walfetch(&["backup-fetch", &t, "base_0000000100000000000000FF", "--force"], &a.env());
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(target.join("base/1/1").exists(), "nothing deleted before the restore could start");

    // --resume on a directory that holds no interrupted restore.
    let out = walfetch(&["backup-fetch", &t, "LATEST", "--resume"], &a.env());
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to resume"), "{}", stderr(&out));
}

#[test]
fn a_backup_whose_wal_is_missing_is_refused_before_any_download() {
    let a = Archive::new();
    synthetic_backup(&a, &[&[("PG_VERSION", b"15\n", None)]], None);
    let s3 = S3Server::start(a.s3_data());
    let proxy = FaultProxy::start(s3.port);
    let mut env = via(&s3.env(), &proxy.endpoint());
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    // Other WAL is there (the archive goes on), the backup's own segment is not.
    a.put(
        "wal_005/000000010000000000000004.lz4",
        &encode(walfetch::codec::Codec::Lz4, &fake_segment("000000010000000000000004", 16 << 20, 7)),
    );
    a.remove("wal_005/000000010000000000000002.lz4");
    let target = a.scratch.path().join("restored");
    let t = target.display().to_string();
    // The listing of wal_005/ answered by something that is not S3 (a portal's HTML page,
    // a proxy's bare 404): never "the WAL is missing" (14) nor a restore, but an error
    // naming the listing (a bare 404: storage, 5), and the target untouched.
    for (case, fault) in [
        (
            "HTML 200",
            Fault::Answer(200, Some("text/html"), "<html><body>Welcome</body></html>"),
        ),
        ("bare 404", Fault::Answer(404, None, "")),
    ] {
        proxy.inject("pg%2Fwal_005", fault, 1000);
        let mut once = env.clone();
        once.push(("WALFETCH_MAX_RETRIES".into(), "1".into()));
        let out = walfetch(&["backup-fetch", &t, BACKUP], &once);
        let code = out.status.code().unwrap_or(0);
        assert!(![0, 14].contains(&code), "{case}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("listing s3://archive/pg/wal_005/"),
            "{case}: {}",
            stderr(&out)
        );
        if case == "bare 404" {
            assert_eq!(code, 5, "{case}: {}", stderr(&out));
        }
        assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
        proxy.clear();
    }
    let out = walfetch(&["backup-fetch", &t, "LATEST"], &env);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("lacks 1 of them (000000010000000000000002)") && err.contains("--no-wal-check"),
        "{err}"
    );
    let fetched: Vec<Seen> = proxy.seen().into_iter().filter(|s| s.line.contains("tar_partitions")).collect();
    assert!(fetched.is_empty(), "nothing may be downloaded before the check: {fetched:?}");
    assert!(
        !target.exists() || fs::read_dir(&target).unwrap().next().is_none(),
        "the target is left untouched"
    );

    // With the WAL there, the check says how far the archive goes on.
    a.put(
        "wal_005/000000010000000000000002.lz4",
        &encode(walfetch::codec::Codec::Lz4, &fake_segment("000000010000000000000002", 16 << 20, 7)),
    );
    a.put(
        "wal_005/000000010000000000000003.lz4",
        &encode(walfetch::codec::Codec::Lz4, &fake_segment("000000010000000000000003", 16 << 20, 7)),
    );
    let out = walfetch(&["backup-fetch", &t, "LATEST"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("all archived; the archive continues without a gap to 000000010000000000000004"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A finish exactly on a segment boundary (after a WAL switch) needs nothing of the
    // segment that starts there.
    a.remove("wal_005/000000010000000000000003.lz4");
    a.put(
        &format!("basebackups_005/{BACKUP}_backup_stop_sentinel.json"),
        br#"{"LSN":33554472,"FinishLSN":50331648,"PgVersion":150018,"SystemIdentifier":7,"Version":2,"FinishTime":"2026-11-25T09:45:05Z"}"#,
    );
    let boundary = a.scratch.path().join("boundary");
    let out = walfetch(&["backup-fetch", boundary.to_str().unwrap(), "LATEST"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("needs 000000010000000000000002, all archived"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // --no-wal-check restores a backup whose WAL is gone, and says it did not check.
    a.remove("wal_005/000000010000000000000002.lz4");
    let other = a.scratch.path().join("unchecked");
    let out = walfetch(&["backup-fetch", other.to_str().unwrap(), "LATEST", "--no-wal-check"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-wal-check"), "{}", stderr(&out));
}

#[test]
fn a_rate_limit_holds_for_backup_fetch_and_wal_fetch_and_a_bad_one_is_refused() {
    let a = Archive::new();
    let bulk = noise(3 << 20, 5);
    synthetic_backup(&a, &[&[("PG_VERSION", b"15\n", None), ("base/1/bulk", &bulk, None)]], None);
    let seg_name = "000000010000000000000005";
    let mut seg = fake_segment(seg_name, 1 << 20, 7);
    seg[8192..].copy_from_slice(&noise((1 << 20) - 8192, 6));
    a.put(&format!("wal_005/{seg_name}.lz4"), &encode(walfetch::codec::Codec::Lz4, &seg));
    let s3 = S3Server::start(a.s3_data());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));

    // Lower bounds, not speeds: at the limit, these bytes cannot arrive sooner (a quarter
    // second of burst aside), however fast or slow the machine; without it they take a
    // fraction of that here.
    let mut limited = env.clone();
    limited.push(("WALG_NETWORK_RATE_LIMIT".into(), "1000000".into()));
    let target = a.scratch.path().join("restored");
    let started = Instant::now();
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &limited);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() >= Duration::from_millis(2800),
        "3 MiB at 1 MB/s in {:?}",
        started.elapsed()
    );
    assert_eq!(fs::read(target.join("base/1/bulk")).unwrap(), bulk);

    let dir = a.datadir(7, true);
    let mut limited = env.clone();
    limited.push(("WALG_NETWORK_RATE_LIMIT".into(), "250000".into()));
    limited.push(("WALFETCH_PREFETCH".into(), "off".into()));
    let started = Instant::now();
    let out = walfetch_in(Some(&dir), &["wal-fetch", seg_name, "pg_wal/RECOVERYXLOG"], &limited);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() >= Duration::from_millis(3500),
        "1 MiB at 250 kB/s in {:?}",
        started.elapsed()
    );
    assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), seg);

    let mut bad = env.clone();
    bad.push(("WALG_NETWORK_RATE_LIMIT".into(), "10MB/s".into()));
    let out = walfetch(&["backup-fetch", a.scratch.path().join("other").to_str().unwrap(), "LATEST"], &bad);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("WALG_NETWORK_RATE_LIMIT='10MB/s'"), "{}", stderr(&out));
}

#[test]
fn a_restore_interrupted_in_its_final_steps_is_finished_by_resume_without_fetching() {
    let a = Archive::new();
    synthetic_backup(
        &a,
        &[&[("PG_VERSION", b"15\n", None), ("base/1/1", &noise(1 << 20, 1), None)]],
        None,
    );
    let whole = a.scratch.path().join("whole");
    let out = walfetch(&["backup-fetch", whole.to_str().unwrap(), "LATEST", "--standby"], &a.env());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // From here on a resume must fetch nothing: the data partition is garbage now.
    a.put(&format!("basebackups_005/{BACKUP}/tar_partitions/part_001.tar.lz4"), b"garbage");
    let header = format!(
        "{{\"journal\":{{\"version\":1,\"backup\":\"{BACKUP}\",\"start_lsn\":\"0/2000028\",\"finish_lsn\":\"0/2000100\",\"system_identifier\":7,\"finish_time\":\"2026-11-25T09:45:05Z\"}}}}\n"
    );
    // A crash after everything was synced and the marker said so: before pg_control was
    // installed (the journal still there), or after (the journal already gone).
    for (name, staged) in [("staged", true), ("installed", false)] {
        let target = a.scratch.path().join(name);
        let copied = Command::new("cp").arg("-a").arg(&whole).arg(&target).status().unwrap();
        assert!(copied.success());
        fs::write(
            target.join(MARKER),
            format!(
                "walfetch is restoring {BACKUP} here; this directory is unusable until this file is gone.\n{header}finishing: every file is restored, checked and synced; only the final steps remain\n"
            ),
        )
        .unwrap();
        if staged {
            fs::rename(target.join("global/pg_control"), target.join(STAGED)).unwrap();
            fs::write(target.join(JOURNAL), &header).unwrap();
        }
        give_to_postgres(&target);
        let t = target.display().to_string();
        let out = walfetch(&["backup-fetch", &t, "LATEST", "--standby"], &a.env());
        assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
        assert!(stderr(&out).contains("--resume"), "{}", stderr(&out));
        let out = walfetch(&["backup-fetch", &t, "LATEST", "--standby", "--resume"], &a.env());
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("resumed: 3 of 3 partitions"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_same_tree(&target, &whole);
    }
}

#[test]
fn a_failover_inside_the_backups_last_segment_is_followed_through_the_history_file() {
    let a = Archive::new();
    synthetic_backup(
        &a,
        &[&[("PG_VERSION", b"15\n", None), ("base/1/1", &noise(1 << 16, 2), None)]],
        None,
    );
    // The old timeline's copy of the backup's last segment never reached the archive
    // (only a .partial); timeline 2 branched off inside it, after the backup's finish
    // (0/2000100), and its copy holds the old timeline's WAL up to the switch.
    a.remove("wal_005/000000010000000000000002.lz4");
    a.put(
        "wal_005/000000010000000000000002.partial.lz4",
        &encode(Codec::Lz4, &fake_segment("000000010000000000000002", 16 << 20, 7)),
    );
    a.put(
        "wal_005/000000020000000000000002.lz4",
        &encode(Codec::Lz4, &fake_segment("000000020000000000000002", 16 << 20, 7)),
    );
    let history = |at: &str| encode(Codec::Lz4, format!("1\t{at}\tno recovery target specified\n").as_bytes());
    a.put("wal_005/00000002.history.lz4", &history("0/2000200"));
    let target = a.scratch.path().join("restored");
    let t = target.display().to_string();
    let out = walfetch(&["backup-fetch", &t, "LATEST"], &a.env());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("from the timeline that branched off inside it: 000000020000000000000002"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // wal-verify agrees: the backup is restorable.
    let out = walfetch(&["wal-verify", "--json"], &a.env());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backups"][0]["restorable"], true, "{report}");

    // A switch before the backup's finish: timeline 2 does not hold the backup's WAL.
    a.put("wal_005/00000002.history.lz4", &history("0/2000080"));
    let refused = a.scratch.path().join("refused");
    let out = walfetch(&["backup-fetch", refused.to_str().unwrap(), "LATEST"], &a.env());
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(stderr(&out).contains("000000010000000000000002"), "{}", stderr(&out));
}
