//! Encrypted archives (wal-g's libsodium mode): written by walrus, some WAL objects left
//! in plaintext as buggy wal-g builds did, restored and replayed by walfetch from S3 and
//! from a directory; written by walfetch and restored by walrus; and the errors for a
//! missing or wrong key.

use std::fs;
use std::path::Path;

use crate::common::*;

/// A 32-byte key as hex (`WALG_LIBSODIUM_KEY_TRANSFORM=hex`).
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TABLES: &[(&str, &str)] = &[("pgbench_accounts", "aid"), ("pgbench_history", "tid, bid, aid, delta, mtime")];

fn with_key(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("WALG_LIBSODIUM_KEY".into(), KEY_HEX.into()));
    env.push(("WALG_LIBSODIUM_KEY_TRANSFORM".into(), "hex".into()));
    env
}

/// Objects under `dir` (recursively) whose first bytes are an LZ4 frame's, and the others.
fn plain_and_sealed(dir: &Path) -> (usize, usize) {
    let (mut plain, mut sealed) = (0, 0);
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            let (a, b) = plain_and_sealed(&p);
            plain += a;
            sealed += b;
        } else if p.extension().is_some_and(|e| e == "lz4") {
            if fs::read(&p).unwrap().starts_with(&[0x04, 0x22, 0x4D, 0x18]) {
                plain += 1;
            } else {
                sealed += 1;
            }
        }
    }
    (plain, sealed)
}

#[test]
fn walrus_libsodium_archive_with_plaintext_wal_restores_and_replays() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let mut plain = s3.env();
    plain.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    plain.push(("WALG_COMPRESSION_METHOD".into(), "lz4".into()));
    let keyed = with_key(&plain);

    let mut primary = Cluster::archiving(&scratch, "primary", walrus_bin(), &keyed, &[]);
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    primary.backup_push(walrus_bin(), &keyed);
    primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    // The archiver loses its key (as wal-g builds that silently wrote plaintext did):
    // the WAL from here on is stored in the clear, in the same archive.
    primary.stop();
    primary.env = plain.clone();
    primary.start();
    primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    primary.sql("CREATE TABLE after_switch AS SELECT g FROM generate_series(1, 5000) g");
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let mut tables = TABLES.to_vec();
    tables.push(("after_switch", "g"));
    let expected: Vec<String> = tables.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
    primary.stop();

    let root = s3data.join(BUCKET).join("pg");
    let (wal_plain, wal_sealed) = plain_and_sealed(&root.join("wal_005"));
    assert!(
        wal_plain > 0 && wal_sealed > 0,
        "a mixed archive: {wal_plain} plain, {wal_sealed} sealed"
    );
    let (parts_plain, parts_sealed) = plain_and_sealed(&root.join("basebackups_005"));
    assert!(
        parts_plain == 0 && parts_sealed > 0,
        "{parts_plain} plain, {parts_sealed} sealed partitions"
    );

    // The reader takes the key from a file, as a secret store would leave it.
    let key_file = scratch.path().join("libsodium.key");
    fs::write(&key_file, format!("{KEY_HEX}\n")).unwrap();
    give_to_postgres(&key_file);
    let key_env = [
        ("WALG_LIBSODIUM_KEY_PATH".to_string(), key_file.display().to_string()),
        ("WALG_LIBSODIUM_KEY_TRANSFORM".to_string(), "hex".to_string()),
    ];
    let mut directory = vec![("WALG_FILE_PREFIX".to_string(), root.display().to_string())];
    directory.extend(key_env.iter().cloned());
    let mut from_s3 = plain.clone();
    from_s3.extend(key_env.iter().cloned());

    // check says what the archive's newest segment is (plaintext here).
    let out = walfetch(&["check"], &from_s3);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is plaintext (a key is set"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Without the key, and with another: the errors say what is wrong.
    let t = scratch.path().join("nokey");
    let out = walfetch(&["backup-fetch", t.to_str().unwrap(), "LATEST"], &plain);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("looks encrypted; set WALG_LIBSODIUM_KEY"), "{}", stderr(&out));
    let mut wrong = plain.clone();
    wrong.push(("WALG_LIBSODIUM_KEY".into(), "this is not the archive's key, no".into()));
    let out = walfetch(&["backup-fetch", scratch.path().join("wrong").to_str().unwrap(), "LATEST"], &wrong);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("decryption failed: wrong key or damaged object"),
        "{}",
        stderr(&out)
    );

    for (name, env) in [("from-s3", &from_s3), ("from-dir", &directory)] {
        let restored = scratch.path().join(name);
        let out = walfetch(&["backup-fetch", restored.to_str().unwrap(), "LATEST", "--standby"], env);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("the restore_command carries no key"));
        let mut standby = Cluster::attach(&scratch, name, restored);
        // The key reaches restore_command through the server's environment.
        standby.env = env
            .iter()
            .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("WALG_LIBSODIUM"))
            .cloned()
            .collect();
        standby.start();
        standby.wait_replayed(&lsn);
        let actual: Vec<String> = tables.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
        assert_eq!(actual, expected, "{name}: the standby's data differs from the primary's");
        standby.stop();
    }
}

#[test]
fn walrus_restores_walfetchs_libsodium_archive() {
    let scratch = Scratch::new();
    let s3data = scratch.dir("s3");
    let s3 = S3Server::start(s3data.clone());
    let mut env = s3.env();
    env.push(("WALG_S3_PREFIX".into(), format!("s3://{BUCKET}/pg")));
    let keyed = with_key(&env);

    let mut primary = Cluster::archiving(&scratch, "primary", walfetch_bin(), &keyed, &[]);
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    primary.backup_push(walfetch_bin(), &keyed);
    primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let lsn = primary.sql("SELECT pg_current_wal_lsn()");
    primary.archive_through(&lsn);
    let expected: Vec<String> = TABLES.iter().map(|(t, o)| primary.table_digest(t, o)).collect();
    primary.stop();
    let root = s3data.join(BUCKET).join("pg");
    let (wal_plain, _) = plain_and_sealed(&root.join("wal_005"));
    let (parts_plain, parts_sealed) = plain_and_sealed(&root.join("basebackups_005"));
    assert!(
        wal_plain == 0 && parts_plain == 0 && parts_sealed > 0,
        "walfetch encrypts everything it writes"
    );
    // check says whether the key opens the newest segment.
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let out = walfetch(&["check"], &keyed);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("is encrypted (libsodium) and the key opens it"),
        "{}",
        stdout(&out)
    );
    let out = walfetch(&["check"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stdout(&out).contains("looks encrypted and no key is set"), "{}", stdout(&out));
    let mut wrong = env.clone();
    wrong.push(("WALG_LIBSODIUM_KEY".into(), "this is not the archive's key, no".into()));
    let out = walfetch(&["check"], &wrong);
    assert_eq!(out.status.code(), Some(7), "{}", stdout(&out));
    assert!(stdout(&out).contains("the libsodium key set does not open it"), "{}", stdout(&out));

    let mut standby = walrus_standby(&scratch, "standby", &keyed);
    standby.start();
    standby.wait_replayed(&lsn);
    let actual: Vec<String> = TABLES.iter().map(|(t, o)| standby.table_digest(t, o)).collect();
    assert_eq!(actual, expected, "walrus's standby differs from the primary");
}
