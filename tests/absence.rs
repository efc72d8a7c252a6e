//! "Absent" only when proven: an answer that is not S3's own `NoSuchKey` (a bare 404 from
//! whatever sits on the path, an access policy, an archive that is not there) is an
//! error, never the end of the archive, so recovery stops instead of promoting early.

use std::fs;
use std::path::PathBuf;

use crate::common::archive::*;
use crate::common::proxy::{Fault, FaultProxy};
use crate::common::*;
use walfetch::codec::Codec;

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

/// What S3 answers through an access policy someone else wrote.
const KMS_DENIED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.</Message></Error>";

/// The environment reaching s3s-fs through `proxy`, with the archive at `s3://archive/pg`.
fn through(proxy: &FaultProxy) -> Vec<(String, String)> {
    s3_archive_env(&proxy.endpoint(), "pg", &[("WALFETCH_MAX_RETRIES", "1")])
}

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
