//! The restore spine on a synthetic archive the test writes: wal-fetch, backup-fetch,
//! backup-list and wal-push, and every way an object in the archive can be wrong
//! (missing, corrupt, truncated, of another cluster, hostile, mislabelled). Each failure
//! asserts the exit code, that the message names the object and the cause, and that
//! nothing partial is left behind. (What the network and crashes do is in `faults`.)

use std::fs;
use std::path::Path;

use crate::common::archive::*;
use crate::common::*;
use walfetch::codec::Codec;

const SEG: &str = "000000010000000000000005";
const SEG_SIZE: u64 = 1 << 20;

fn wal_fetch(a: &Archive, datadir: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["wal-fetch", name, "pg_wal/RECOVERYXLOG"];
    args.extend(extra);
    walfetch_in(Some(datadir), &args, &a.env())
}

/// Entries of `pg_wal` other than directories.
fn wal_dir_files(datadir: &Path) -> Vec<String> {
    fs::read_dir(datadir.join("pg_wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn wal_fetch_restores_a_valid_segment_under_any_codec() {
    let a = Archive::new();
    let dir = a.datadir(7, true);
    for (i, codec) in [Codec::Zstd, Codec::Brotli, Codec::Lzma, Codec::None, Codec::Lz4]
        .into_iter()
        .enumerate()
    {
        let name = format!("0000000100000000000000{:02X}", 0x10 + i);
        let data = fake_segment(&name, SEG_SIZE, 7);
        a.put(&format!("wal_005/{}", codec.file_name(&name)), &encode(codec, &data));
        let out = wal_fetch(&a, &dir, &name, &[]);
        assert_eq!(code(&out), 0, "{codec:?}: {}", stderr(&out));
        assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), data, "{codec:?}");
    }
    assert_eq!(wal_dir_files(&dir), ["RECOVERYXLOG"]);
}

#[test]
fn wal_fetch_missing_file_exits_1() {
    let a = Archive::new();
    a.put("wal_005/000000010000000000000004.lz4", b"the segment before");
    let dir = a.datadir(7, false);
    for name in [SEG, "00000002.history"] {
        let out = wal_fetch(&a, &dir, name, &[]);
        assert_eq!(code(&out), 1, "{name}: {}", stderr(&out));
    }
    assert!(wal_dir_files(&dir).is_empty());
}

#[test]
fn wal_fetch_history_files_are_not_size_checked() {
    let a = Archive::new();
    let dir = a.datadir(7, true);
    a.put("wal_005/00000002.history", b"1\t0/5000000\tno recovery target specified\n");
    let out = wal_fetch(&a, &dir, "00000002.history", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(fs::read_to_string(dir.join("pg_wal/RECOVERYXLOG"))
        .unwrap()
        .starts_with("1\t0/5000000"));
}

#[test]
fn wal_fetch_corrupt_object_stops_recovery_but_lets_a_standby_retry() {
    let a = Archive::new();
    let mut packed = encode(Codec::Lz4, &fake_segment(SEG, SEG_SIZE, 7));
    let mid = packed.len() / 2;
    packed[mid] ^= 0xFF;
    packed[mid + 1] ^= 0xFF;
    a.put(&format!("wal_005/{SEG}.lz4"), &packed);

    let standby = a.datadir(7, true);
    let out = wal_fetch(&a, &standby, SEG, &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(msg.contains(&format!("wal_005/{SEG}.lz4")) && msg.contains("lz4"), "{msg}");
    assert!(wal_dir_files(&standby).is_empty(), "left behind: {:?}", wal_dir_files(&standby));

    fs::remove_file(standby.join("standby.signal")).unwrap();
    let out = wal_fetch(&a, &standby, SEG, &[]);
    assert_eq!(code(&out), 128 + 7, "archive recovery must stop: {}", stderr(&out));
    assert!(wal_dir_files(&standby).is_empty());
}

#[test]
fn wal_fetch_truncated_object_is_corrupt() {
    let a = Archive::new();
    let dir = a.datadir(7, true);
    for codec in [Codec::Zstd, Codec::Brotli, Codec::Lzma, Codec::Lz4] {
        let mut packed = encode(codec, &fake_segment(SEG, SEG_SIZE, 7));
        packed.truncate(packed.len() - 7);
        let _ = fs::remove_dir_all(a.root.join("wal_005"));
        a.put(&format!("wal_005/{}", codec.file_name(SEG)), &packed);
        let out = wal_fetch(&a, &dir, SEG, &[]);
        assert_eq!(code(&out), 7, "{codec:?}: {}", stderr(&out));
        assert!(wal_dir_files(&dir).is_empty());
    }
}

#[test]
fn wal_fetch_refuses_wrong_name_other_cluster_and_wrong_size() {
    let a = Archive::new();
    let dir = a.datadir(7, true);
    // A segment stored under the wrong name.
    a.put(
        &format!("wal_005/{SEG}.lz4"),
        &encode(Codec::Lz4, &fake_segment("000000010000000000000006", SEG_SIZE, 7)),
    );
    let out = wal_fetch(&a, &dir, SEG, &[]);
    assert_eq!(code(&out), 7);
    assert!(stderr(&out).contains("does not match the name"), "{}", stderr(&out));
    // A segment of another cluster.
    a.put(&format!("wal_005/{SEG}.lz4"), &encode(Codec::Lz4, &fake_segment(SEG, SEG_SIZE, 8)));
    let out = wal_fetch(&a, &dir, SEG, &[]);
    assert_eq!(code(&out), 7);
    assert!(stderr(&out).contains("another cluster"), "{}", stderr(&out));
    // A short segment in a valid frame (the frame decodes cleanly; the size is wrong).
    let mut short = fake_segment(SEG, SEG_SIZE, 7);
    short.truncate(SEG_SIZE as usize - 8192);
    a.put(&format!("wal_005/{SEG}.lz4"), &encode(Codec::Lz4, &short));
    let out = wal_fetch(&a, &dir, SEG, &[]);
    assert_eq!(code(&out), 7);
    assert!(stderr(&out).contains("decoded to"), "{}", stderr(&out));
    assert!(wal_dir_files(&dir).is_empty());
}

#[test]
fn wal_fetch_s3_failures_never_pass_for_not_found() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let dir = scratch.dir("pgdata");
    fs::create_dir_all(dir.join("pg_wal")).unwrap();
    fs::write(dir.join("standby.signal"), "").unwrap();
    give_to_postgres(&dir);
    let prefix = ("WALG_S3_PREFIX".to_string(), format!("s3://{BUCKET}/pg"));

    // Wrong secret: credentials rejected, named bucket, and the secret never printed.
    let mut env = s3.env();
    env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY".into(), "wrong-secret-value-42".into()));
    env.push(prefix.clone());
    let out = walfetch_in(Some(&dir), &["--log-level", "trace", "wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env);
    let msg = stderr(&out);
    assert_eq!(code(&out), 6, "{msg}");
    assert!(msg.contains("credentials rejected") && msg.contains(BUCKET), "{msg}");
    assert!(
        !msg.contains("wrong-secret-value-42") && !msg.contains(SECRET_KEY),
        "secret leaked: {msg}"
    );

    // A bucket that does not exist is a configuration error, not "no such WAL".
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), "s3://no-such-bucket/pg".into()));
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env);
    assert_eq!(code(&out), 3, "{}", stderr(&out));

    // A dead endpoint: unreachable after retries; in archive recovery that stops PostgreSQL.
    let mut env: Vec<(String, String)> = s3.env().into_iter().filter(|(k, _)| !k.starts_with("AWS_ENDPOINT")).collect();
    env.push(("AWS_ENDPOINT_URL".into(), format!("http://127.0.0.1:{}", free_port())));
    env.push(prefix.clone());
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("gave up after"), "{}", stderr(&out));
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG", "--mode", "recovery"], &env);
    assert_eq!(code(&out), 128 + 5, "{}", stderr(&out));

    // A prefix that holds no objects (a typo) proves nothing: a configuration error.
    let mut env = s3.env();
    env.push(prefix);
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("holds no objects"), "{}", stderr(&out));

    // And a real absence through S3 is still exit 1.
    let other = s3.data.join(BUCKET).join("pg/wal_005/000000010000000000000004.lz4");
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    fs::write(&other, b"another segment").unwrap();
    give_to_postgres(&s3.data);
    let out = walfetch_in(Some(&dir), &["wal-fetch", SEG, "pg_wal/RECOVERYXLOG"], &env);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(wal_dir_files(&dir).is_empty());
}

// ---- backup-fetch ------------------------------------------------------------------

const GOOD_PART: &[Member] = &[
    ("PG_VERSION", b"15\n", None),
    ("/base/1/1259", b"rel", None),
    ("global/1262", b"g", None),
];

fn fetch(a: &Archive, target: &Path, extra: &[&str]) -> std::process::Output {
    let t = target.display().to_string();
    let mut args = vec!["backup-fetch", t.as_str(), "LATEST"];
    args.extend(extra);
    walfetch(&args, &a.env())
}

#[test]
fn backup_fetch_restores_a_synthetic_backup_and_checks_metadata() {
    let a = Archive::new();
    synthetic_backup(
        &a,
        &[GOOD_PART],
        Some(r#"{"Files":{"/base/1/1259":{},"global/1262":{},"PG_VERSION":{}},"TarFileSets":{"part_001.tar.lz4":[]}}"#),
    );
    let target = a.scratch.path().join("restored");
    let out = fetch(&a, &target, &["--standby"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fs::read(target.join("base/1/1259")).unwrap(), b"rel");
    assert_eq!(fs::read(target.join("global/pg_control")).unwrap(), vec![1u8; 8192]);
    assert!(!target.join("WALFETCH_RESTORE_INCOMPLETE").exists());
    assert!(fs::read_to_string(target.join("postgresql.auto.conf"))
        .unwrap()
        .contains("restore_command"));

    // A second restore into the same directory is refused, then allowed with --force.
    let out = fetch(&a, &target, &[]);
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    let out = fetch(&a, &target, &["--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn backup_fetch_missing_backup_and_garbage_sentinel() {
    let a = Archive::new();
    let target = a.scratch.path().join("restored");
    // An archive that holds nothing at all proves nothing: check the prefix.
    let out = fetch(&a, &target, &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds no objects") && stderr(&out).contains("check the prefix"),
        "{}",
        stderr(&out)
    );
    a.put("wal_005/000000010000000000000001.lz4", b"WAL, but no backup");
    let out = fetch(&a, &target, &[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("no complete backup"), "{}", stderr(&out));
    let out = walfetch(
        &["backup-fetch", target.to_str().unwrap(), "base_00000001000000000000000A"],
        &a.env(),
    );
    assert_eq!(code(&out), 4);
    assert!(stderr(&out).contains("base_00000001000000000000000A not found"), "{}", stderr(&out));

    synthetic_backup(&a, &[GOOD_PART], None);
    a.put(&format!("basebackups_005/{BACKUP}_backup_stop_sentinel.json"), b"{not json");
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), BACKUP], &a.env());
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("_backup_stop_sentinel.json: not a valid backup sentinel"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn backup_fetch_corrupt_partition_leaves_the_directory_marked_and_unstartable() {
    let a = Archive::new();
    synthetic_backup(&a, &[GOOD_PART], None);
    let key = format!("basebackups_005/{BACKUP}/tar_partitions/part_001.tar.lz4");
    let mut packed = fs::read(a.root.join(&key)).unwrap();
    let n = packed.len();
    packed.truncate(n - 10);
    a.put(&key, &packed);
    let target = a.scratch.path().join("restored");
    let out = fetch(&a, &target, &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("part_001.tar.lz4"), "{}", stderr(&out));
    assert!(target.join("WALFETCH_RESTORE_INCOMPLETE").exists());
    assert!(
        !target.join("global/pg_control").exists(),
        "an incomplete restore must not be startable"
    );

    let out = fetch(&a, &target, &[]);
    assert_eq!(code(&out), 10);
    assert!(stderr(&out).contains("interrupted restore"), "{}", stderr(&out));
}

#[test]
fn backup_fetch_refuses_hostile_members() {
    let cases: [(&str, &[Member]); 3] = [
        ("dot-dot", &[("PG_VERSION", b"15\n", None), ("base/../../../escaped", b"x", None)]),
        ("symlink out", &[("PG_VERSION", b"15\n", None), ("base/evil", b"", Some("/tmp"))]),
        ("symlink then write", &[("pg_wal", b"", Some("/tmp")), ("pg_wal/x", b"x", None)]),
    ];
    for (what, part) in cases {
        let a = Archive::new();
        synthetic_backup(&a, &[part], None);
        let target = a.scratch.path().join("deep/restored");
        let out = fetch(&a, &target, &[]);
        assert_eq!(code(&out), 8, "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains("part_001.tar.lz4"), "{what}: {}", stderr(&out));
        assert!(!a.scratch.path().join("escaped").exists() && !a.scratch.path().join("deep/escaped").exists());
        assert!(!Path::new("/tmp/x").exists() || what != "symlink then write");
    }
}

#[test]
fn backup_fetch_checks_partitions_and_files_against_metadata() {
    // A partition named in files_metadata.json is missing: fail before extracting anything.
    let a = Archive::new();
    synthetic_backup(
        &a,
        &[GOOD_PART],
        Some(r#"{"Files":{},"TarFileSets":{"part_001.tar.lz4":[],"part_002.tar.lz4":[]}}"#),
    );
    let target = a.scratch.path().join("restored");
    let out = fetch(&a, &target, &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("part_002.tar.lz4") && stderr(&out).contains("missing"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists(), "nothing may be written when a partition is missing");

    // A file listed in files_metadata.json is in no partition.
    let a = Archive::new();
    synthetic_backup(
        &a,
        &[GOOD_PART],
        Some(r#"{"Files":{"/base/1/1259":{},"/base/1/9999":{}},"TarFileSets":{"part_001.tar.lz4":[]}}"#),
    );
    let out = fetch(&a, &target, &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("base/1/9999"), "{}", stderr(&out));
    assert!(target.join("WALFETCH_RESTORE_INCOMPLETE").exists());

    // A file whose size differs from the size the listing records (walfetch's writer
    // records sizes; wal-g's listings have none, and then only presence is checked).
    let a = Archive::new();
    synthetic_backup(
        &a,
        &[GOOD_PART],
        Some(r#"{"Files":{"/base/1/1259":{"Size":3},"global/1262":{"Size":2},"PG_VERSION":{}},"TarFileSets":{"part_001.tar.lz4":[]}}"#),
    );
    let out = fetch(&a, &a.scratch.path().join("r1"), &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 restored files differ in size") && stderr(&out).contains("global/1262: 1 bytes, listed 2"),
        "{}",
        stderr(&out)
    );
    assert!(a.scratch.path().join("r1/WALFETCH_RESTORE_INCOMPLETE").exists());

    // An object in tar_partitions/ that is no known partition or codec.
    let a = Archive::new();
    synthetic_backup(&a, &[GOOD_PART], None);
    a.put(&format!("basebackups_005/{BACKUP}/tar_partitions/part_002.tar.snappy"), b"x");
    let out = fetch(&a, &a.scratch.path().join("r2"), &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("part_002.tar.snappy"), "{}", stderr(&out));
}

#[test]
fn backup_list_orders_by_finish_lsn_and_prints_json() {
    let a = Archive::new();
    synthetic_backup(&a, &[GOOD_PART], None);
    a.put(
        "basebackups_005/base_000000010000000000000009_backup_stop_sentinel.json",
        br#"{"LSN":150994984,"FinishLSN":150995200,"PgVersion":150018,"FinishTime":"2026-11-24T00:00:00Z"}"#,
    );
    a.put("basebackups_005/not-a-backup_backup_stop_sentinel.json", b"{}");
    let out = walfetch(&["backup-list", "--json"], &a.env());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [BACKUP, "base_000000010000000000000009"],
        "the later finish LSN is LATEST even with an older finish time"
    );
    assert_eq!(rows[1]["finish_lsn"], "0/9000100");
}

#[test]
fn wal_fetch_reads_wale_lzo_and_refuses_corrupt_or_encrypted_lzo() {
    let a = Archive::new();
    let dir = a.datadir(7, true);
    let data = fake_segment(SEG, SEG_SIZE, 7);
    let raw = a.scratch.path().join("seg.raw");
    fs::write(&raw, &data).unwrap();
    let out = std::process::Command::new("lzop")
        .arg("-c")
        .arg(&raw)
        .output()
        .expect("lzop is installed (scripts/install-deps --tests)");
    let packed = out.stdout;
    a.put(&format!("wal_005/{SEG}.lzo"), &packed);
    let out = wal_fetch(&a, &dir, SEG, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fs::read(dir.join("pg_wal/RECOVERYXLOG")).unwrap(), data);
    fs::remove_file(dir.join("pg_wal/RECOVERYXLOG")).unwrap();

    let mut bad = packed.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x20;
    a.put(&format!("wal_005/{SEG}.lzo"), &bad);
    let out = wal_fetch(&a, &dir, SEG, &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{SEG}.lzo")), "{}", stderr(&out));
    assert!(wal_dir_files(&dir).is_empty());

    // WAL-E's GPG encryption keeps the .lzo name; the content is an OpenPGP message
    // (a public-key session key packet: version 3, a key id, RSA). Without a key set:
    // a setting to fix (3), named, never "absent".
    let mut gpg = vec![0x85, 0x01, 0x0C, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 0x01];
    gpg.extend(noise(4096, 9));
    a.put(&format!("wal_005/{SEG}.lzo"), &gpg);
    let out = wal_fetch(&a, &dir, SEG, &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("OpenPGP-encrypted; set WALG_PGP_KEY_PATH") && stderr(&out).contains("WALE_GPG_KEY_ID"),
        "{}",
        stderr(&out)
    );
    assert!(wal_dir_files(&dir).is_empty());
}

#[test]
fn wal_push_is_idempotent_and_refuses_to_overwrite_different_content() {
    let a = Archive::new();
    let dir = a.scratch.dir("pg_wal");
    let seg = dir.join(SEG);
    fs::write(&seg, fake_segment(SEG, SEG_SIZE, 7)).unwrap();
    give_to_postgres(&dir);
    let push = |env: &[(String, String)]| walfetch(&["wal-push", seg.to_str().unwrap()], env);
    let out = push(&a.env());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = push(&a.env());
    assert_eq!(code(&out), 0, "an identical re-push succeeds: {}", stderr(&out));
    assert!(stderr(&out).contains("already archived with identical content"), "{}", stderr(&out));

    fs::write(&seg, fake_segment(SEG, SEG_SIZE, 8)).unwrap();
    let out = push(&a.env());
    assert_eq!(code(&out), 10, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different content") && stderr(&out).contains(&format!("wal_005/{SEG}.lz4")),
        "{}",
        stderr(&out)
    );
    assert!(
        files_in(&a.root.join("wal_005")) == [format!("{SEG}.lz4")],
        "no temporary left in the archive"
    );

    // A file that cannot be read is an error, so PostgreSQL keeps the segment and retries.
    let out = walfetch(&["wal-push", dir.join("000000010000000000000099").to_str().unwrap()], &a.env());
    assert_eq!(code(&out), 9, "{}", stderr(&out));
}

#[test]
fn a_wrong_codec_extension_is_corrupt() {
    let a = Archive::new();
    let dir = a.datadir(7, true);
    // zstd data under an .lz4 name, lz4 data under .br.
    a.put(&format!("wal_005/{SEG}.lz4"), &encode(Codec::Zstd, &fake_segment(SEG, SEG_SIZE, 7)));
    let out = wal_fetch(&a, &dir, SEG, &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("lz4"), "{}", stderr(&out));
    fs::remove_file(a.root.join(format!("wal_005/{SEG}.lz4"))).unwrap();
    a.put(&format!("wal_005/{SEG}.br"), &encode(Codec::Lz4, &fake_segment(SEG, SEG_SIZE, 7)));
    let out = wal_fetch(&a, &dir, SEG, &[]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(wal_dir_files(&dir).is_empty());
}

#[test]
fn backup_label_tar_overwrites_a_stale_label_in_a_data_partition() {
    // An exclusive backup (before PostgreSQL 15) leaves the label pg_start_backup wrote in
    // the data directory, so a data partition carries it; the one in backup_label.tar is
    // the right one and must be what the restore ends with, however long the data
    // partition takes (here the stale label comes after 4 MiB of data). A stale
    // backup_label.old beside it is left alone and never read as the label.
    let a = Archive::new();
    let bulk = noise(4 << 20, 3);
    let stale = SYNTHETIC_LABEL.replace("0/2000028", "0/1000028");
    synthetic_backup(
        &a,
        &[&[
            ("PG_VERSION", b"15\n", None),
            ("base/1/bulk", &bulk, None),
            ("backup_label", stale.as_bytes(), None),
            ("backup_label.old", stale.as_bytes(), None),
        ]],
        None,
    );
    let target = a.scratch.path().join("restored");
    let out = fetch(&a, &target, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fs::read_to_string(target.join("backup_label")).unwrap(), SYNTHETIC_LABEL);
}

#[test]
fn a_backup_label_that_disagrees_with_the_sentinel_fails_the_restore() {
    // The label in backup_label.tar is another backup's (or damaged), or missing while
    // only a stale backup_label.old is shipped: PostgreSQL would replay from the wrong
    // place. The restore fails (corrupt, 7), leaves the directory unstartable, and names
    // what disagrees.
    let wrong_start = SYNTHETIC_LABEL.replace("0/2000028", "0/3000028");
    let late_checkpoint = SYNTHETIC_LABEL.replace("CHECKPOINT LOCATION: 0/2000060", "CHECKPOINT LOCATION: 0/4000000");
    let cases: [(&str, Option<&str>, &str); 4] = [
        ("wrong start", Some(&wrong_start), "starts at 0/3000028, the sentinel at 0/2000028"),
        (
            "late checkpoint",
            Some(&late_checkpoint),
            "checkpoint 0/4000000, after the backup's finish 0/2000100",
        ),
        ("garbage", Some("LABEL: nothing useful\n"), "no valid 'START WAL LOCATION: ' line"),
        ("only .old", None, "no backup_label (only a backup_label.old"),
    ];
    for (case, label, says) in cases {
        let a = Archive::new();
        synthetic_backup(
            &a,
            &[&[
                ("PG_VERSION", b"15\n", None),
                ("backup_label.old", SYNTHETIC_LABEL.as_bytes(), None),
            ]],
            None,
        );
        let key = format!("basebackups_005/{BACKUP}/tar_partitions/backup_label.tar.lz4");
        match label {
            Some(text) => a.put(&key, &encode(Codec::Lz4, &tar_of(&[("backup_label", text.as_bytes(), None)]))),
            None => a.remove(&key),
        }
        let target = a.scratch.path().join("restored");
        let out = fetch(&a, &target, &[]);
        assert_eq!(code(&out), 7, "{case}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{case}: {}", stderr(&out));
        assert!(
            target.join("WALFETCH_RESTORE_INCOMPLETE").exists() && !target.join("global/pg_control").exists(),
            "{case}: a failed restore stays unstartable"
        );
    }
}

#[test]
fn wal_without_a_base_backup_says_to_ask_the_provider_for_one() {
    let a = Archive::new();
    for n in [5u32, 6, 7] {
        let name = format!("00000001000000000000000{n}");
        a.put(
            &format!("wal_005/{name}.lz4"),
            &encode(Codec::Lz4, &fake_segment(&name, SEG_SIZE, 7)),
        );
    }
    let target = a.scratch.path().join("restored");
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &a.env());
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("but WAL is there (3 objects, 000000010000000000000005 to 000000010000000000000007)")
            && err.contains("ask the provider for one"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let out = walfetch(&["check"], &a.env());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("WARN  base backup:") && text.contains("ask the provider"), "{text}");
}
