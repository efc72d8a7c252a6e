//! The prefetch fetcher and the spool: a ready segment is served by rename without
//! touching storage, a gap is reported by name within a poll interval, a dead fetcher
//! never blocks wal-fetch, and one fetcher runs per data directory.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::archive::*;
use crate::common::*;
use walfetch::codec::Codec;

const SIZE: u64 = 1 << 20;

fn seg(n: u32) -> String {
    format!("0000000100000000{n:08X}")
}

fn env(a: &Archive) -> Vec<(String, String)> {
    let mut e = a.env();
    e.push(("WALFETCH_PREFETCH".into(), "on".into()));
    e.push(("WALFETCH_FOLLOW_IDLE".into(), "3".into()));
    e.push(("WALG_PG_WAL_SIZE".into(), "1".into()));
    e
}

fn spool(dir: &Path) -> std::path::PathBuf {
    dir.join("pg_wal/.wal-g/prefetch")
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Archives the named segments as lz4.
fn put_segments(a: &Archive, names: impl IntoIterator<Item = String>) {
    for name in names {
        a.put(&format!("wal_005/{name}.lz4"), &encode(Codec::Lz4, &fake_segment(&name, SIZE, 7)));
    }
}

/// A standby that has just fetched segment 5 (which starts the on-demand fetcher).
fn standby_fetching_segment_5(a: &Archive) -> std::path::PathBuf {
    let dir = a.datadir(7, true);
    let out = walfetch_in(Some(&dir), &["wal-fetch", &seg(5), "pg_wal/RECOVERYXLOG"], &env(a));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    dir
}

/// An archive of lz4 segments 5 to 12 except `missing`, and a standby that has just
/// fetched segment 5.
fn standby_after_segment_5(missing: &[u32]) -> (Archive, std::path::PathBuf) {
    let a = Archive::new();
    put_segments(&a, (5..=12).filter(|n| !missing.contains(n)).map(seg));
    let dir = standby_fetching_segment_5(&a);
    (a, dir)
}

#[test]
fn ready_segments_are_served_from_the_spool_without_storage() {
    let (a, dir) = standby_after_segment_5(&[]);
    // The fetcher, started on demand, fills the window after 5.
    wait_for("the spool to fill", 20, || (6..=12).all(|n| spool(&dir).join(seg(n)).exists()));
    // A segment served from the spool is not fetched again (the fetcher loops every 20 ms).
    let out = walfetch_in(Some(&dir), &["wal-fetch", &seg(6), "pg_wal/RECOVERYXLOG"], &env(&a));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !spool(&dir).join(seg(6)).exists(),
        "segment 6 was downloaded again after it was served"
    );
    // Storage is gone: the next segments come from the spool alone.
    fs::remove_dir_all(a.root.join("wal_005")).unwrap();
    for n in 7..=8 {
        let out = walfetch_in(Some(&dir), &["wal-fetch", &seg(n), "pg_wal/RECOVERYXLOG"], &env(&a));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).contains("prefetch spool"), "{}", stderr(&out));
        assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), fake_segment(&seg(n), SIZE, 7));
    }
    // Segments older than the one requested are removed from the spool.
    assert!(!spool(&dir).join(seg(7)).exists());
    // Idle, the on-demand fetcher exits and releases its lock.
    wait_for("the fetcher to exit when idle", 30, || {
        let out = walfetch_in(Some(&dir), &["follow", dir.to_str().unwrap(), "--idle-timeout", "0"], &env(&a));
        String::from_utf8_lossy(&out.stderr).contains("fetcher started")
    });
}

#[test]
fn a_gap_is_reported_by_name_within_a_poll_interval() {
    let (a, dir) = standby_after_segment_5(&[6]);
    let out = walfetch_in(Some(&dir), &["wal-fetch", &seg(6), "pg_wal/RECOVERYXLOG"], &env(&a));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let status_file = spool(&dir).join(".walfetch-status.json");
    wait_for("the gap in the status file", 10, || {
        fs::read_to_string(&status_file).is_ok_and(|t| t.contains(&format!("\"gap\": \"{}\"", seg(6))))
    });
    let log = fs::read_to_string(spool(&dir).join(".walfetch-follow.log")).unwrap();
    assert!(log.contains("gap in the archive") && log.contains(&seg(6)), "{log}");
}

#[test]
fn a_dead_fetcher_never_blocks_and_one_fetcher_runs_per_datadir() {
    let a = Archive::new();
    a.put(
        &format!("wal_005/{}.zst", seg(5)),
        &encode(Codec::Zstd, &fake_segment(&seg(5), SIZE, 7)),
    );
    let dir = a.datadir(7, true);
    // A download left behind by a fetcher that died: no lock holder.
    fs::create_dir_all(spool(&dir).join("running")).unwrap();
    fs::write(spool(&dir).join("running").join(format!("{}.999999", seg(5))), b"partial").unwrap();
    give_to_postgres(&dir);
    let started = Instant::now();
    let out = walfetch_in(Some(&dir), &["wal-fetch", &seg(5), "pg_wal/RECOVERYXLOG"], &env(&a));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10), "blocked on a dead fetcher");

    // While one fetcher runs (the one wal-fetch started), another exits at once.
    let out = walfetch_in(Some(&dir), &["follow", dir.to_str().unwrap(), "--foreground"], &env(&a));
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("already runs"), "{}", stderr(&out));
}

/// Real WAL in 1 MB segments, where long records run from one segment into the next:
/// the fetcher, holding both, checks such a record's CRC over both parts. A flipped byte
/// in the part that lies in the second segment, under an lz4 frame without a checksum
/// (as walrus writes), passes every check inside that segment; the fetcher refuses the
/// segment and wal-fetch stops recovery naming it.
#[test]
fn a_record_across_two_segments_is_checked_over_both_parts() {
    let a = Archive::new();
    let mut pg = Cluster::init_archiving(
        &a.scratch,
        "pg",
        &push_command(walfetch_bin()),
        &a.env(),
        &["--wal-segsize", "1"],
        &[("min_wal_size", "4MB"), ("max_wal_size", "16MB")],
    );
    pg.start();
    pg.sql("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 60) AS t FROM generate_series(1, 6000) g");
    let lsn = pg.sql("SELECT pg_current_wal_lsn()");
    pg.sql("SELECT pg_switch_wal()");
    pg.archive_through(&lsn);
    pg.stop();

    let decode = |name: &str| {
        let file = fs::File::open(a.root.join(format!("wal_005/{name}.lz4"))).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut Codec::Lz4.decoder(Box::new(file), name), &mut out).unwrap();
        out
    };
    let seg_name = |n: u32| format!("0000000100000000{n:08X}");
    // A segment that starts with the rest of a record of at least 64 bytes, after two
    // archived segments (the first one is fetched by wal-fetch itself, the second by the fetcher).
    let victim = (4..200u32)
        .find(|n| {
            [n - 2, n - 1, *n]
                .iter()
                .all(|k| a.root.join(format!("wal_005/{}.lz4", seg_name(*k))).exists())
                && {
                    let d = decode(&seg_name(*n));
                    let info = u16::from_le_bytes([d[2], d[3]]);
                    let rem = u32::from_le_bytes(d[16..20].try_into().unwrap());
                    info & 1 == 1 && rem >= 64
                }
        })
        .expect("a record that crosses a segment boundary");
    let mut data = decode(&seg_name(victim));
    data[40 + 16] ^= 0x5A;
    let info = lz4_flex::frame::FrameInfo::new().content_checksum(false);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    std::io::Write::write_all(&mut enc, &data).unwrap();
    fs::write(a.root.join(format!("wal_005/{}.lz4", seg_name(victim))), enc.finish().unwrap()).unwrap();

    let dir = pg.data.clone();
    fs::write(dir.join("standby.signal"), "").unwrap();
    let fetch = |n: u32| walfetch_in(Some(&dir), &["wal-fetch", &seg_name(n), "pg_wal/RECOVERYXLOG"], &env(&a));
    let first = fetch(victim - 2);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let refused = spool(&dir).join(format!(".walfetch-refused-{}", seg_name(victim)));
    wait_for("the fetcher to refuse the damaged segment", 30, || refused.exists());
    let reason = fs::read_to_string(&refused).unwrap();
    assert!(
        reason.contains("CRC mismatch") && reason.contains("begun in the previous segment"),
        "{reason}"
    );
    assert!(!spool(&dir).join(seg_name(victim)).exists());
    let before = fetch(victim - 1);
    assert_eq!(before.status.code(), Some(0), "{}", stderr(&before));
    let out = fetch(victim);
    assert_eq!(out.status.code(), Some(7), "standby: stop, never 'not found': {}", stderr(&out));
    assert!(
        stderr(&out).contains(&seg_name(victim)) && stderr(&out).contains("refused"),
        "{}",
        stderr(&out)
    );
    // Every other segment passed: no refusal but this one.
    let refusals: Vec<String> = files_in(&spool(&dir)).into_iter().filter(|f| f.contains("refused")).collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
}

/// After a promotion upstream the archive holds timeline 2 from segment 8 on, named in
/// `00000002.history`: the fetcher reads ahead along timeline 2 past the switch, as
/// PostgreSQL will ask, instead of waiting for timeline 1 segments that never come.
#[test]
fn the_fetcher_reads_ahead_across_a_timeline_switch() {
    let a = Archive::new();
    put_segments(&a, (5..=7).map(seg));
    a.put(
        "wal_005/00000002.history.lz4",
        &encode(Codec::Lz4, b"1\t0/800028\tno recovery target specified\n"),
    );
    let tl2 = |n: u32| format!("0000000200000000{n:08X}");
    put_segments(&a, (8..=12).map(tl2));
    let dir = standby_fetching_segment_5(&a);
    wait_for("timeline 2 in the spool", 20, || {
        [seg(6), seg(7), tl2(8), tl2(9), tl2(12)]
            .iter()
            .all(|s| spool(&dir).join(s).exists())
    });
    let status_file = spool(&dir).join(".walfetch-status.json");
    wait_for("the fetcher's status", 20, || status_file.exists());
    let status: serde_json::Value = serde_json::from_slice(&fs::read(&status_file).unwrap()).unwrap();
    assert_eq!(status["gap"], serde_json::Value::Null, "{status:#}");
    for n in [6, 7] {
        let out = walfetch_in(Some(&dir), &["wal-fetch", &seg(n), "pg_wal/RECOVERYXLOG"], &env(&a));
        assert!(stderr(&out).contains("prefetch spool"), "{}", stderr(&out));
    }
    let out = walfetch_in(Some(&dir), &["wal-fetch", &tl2(8), "pg_wal/RECOVERYXLOG"], &env(&a));
    assert!(stderr(&out).contains("prefetch spool"), "{}", stderr(&out));
    assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), fake_segment(&tl2(8), SIZE, 7));
}
