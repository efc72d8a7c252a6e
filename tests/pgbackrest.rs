//! pgBackRest repositories read as natively as wal-g archives: the real pgBackRest
//! archives a real primary and takes its backups (in a directory, and in the S3 server
//! behind a TLS terminator with its own CA); walfetch lists, verifies, restores and feeds
//! a standby that replays to the primary's state, with nothing but pgBackRest's own
//! settings. Then what goes wrong, each in one line with its own exit code.

use std::fs;

use crate::common::pgbackrest::*;
use crate::common::*;

#[test]
fn a_full_diff_incr_chain_is_restored_at_each_level_and_replayed() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("repo1-bundle", "y")]);
    let p = &src.primary;
    p.pgbench(&["-i", "-s", "1", "-q"]);
    let full = src.backup("full", &[]);
    p.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let diff = src.backup("diff", &[]);
    p.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let incr = src.backup("incr", &[]);
    p.pgbench(&["-n", "-t", "100", "-c", "2"]);
    let lsn = p.sql("SELECT pg_current_wal_lsn()");
    p.archive_through(&lsn);
    let expected = pgbench_digests(p);
    let env = src.config_env();

    // The listing, the archive, the checks: as for a wal-g archive.
    let out = walfetch(&["backup-list", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, [full.as_str(), diff.as_str(), incr.as_str()]);
    assert_eq!(listed[2]["kind"], "incr", "{listed}");
    assert_eq!(listed[1]["delta_from"], full.as_str(), "a diff builds on the full backup");
    let out = walfetch(&["wal-verify", "--json"], &env);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["missing_segments"], 0);
    let out = walfetch(&["check"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    for (name, backup) in [("from-full", &full), ("from-diff", &diff), ("from-incr", &incr)] {
        restores_and_replays(&scratch, name, backup, &env, &[], &lsn, &expected);
    }
}

#[test]
fn every_compression_with_and_without_encryption() {
    for (compress, cipher) in [("gz", true), ("bz2", false), ("lz4", true), ("zst", false), ("none", true)] {
        let scratch = Scratch::new();
        let mut options = vec![("compress-type", compress), ("repo1-bundle", "y")];
        if cipher {
            options.push(("repo1-cipher-type", "aes-256-cbc"));
            options.push(("repo1-cipher-pass", "correct horse battery staple"));
        }
        let src = Source::in_directory(&scratch, &options);
        src.primary.pgbench(&["-i", "-s", "1", "-q"]);
        src.backup("full", &[]);
        src.primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
        let lsn = src.primary.sql("SELECT pg_current_wal_lsn()");
        src.primary.archive_through(&lsn);
        let expected = pgbench_digests(&src.primary);
        restores_and_replays(&scratch, compress, "LATEST", &src.config_env(), &[], &lsn, &expected);
    }
}

#[test]
fn s3_over_tls_with_settings_as_a_config_file_or_as_variables_only() {
    let scratch = Scratch::new();
    let s3 = S3Server::start(scratch.dir("s3"));
    let src = Source::in_s3(
        &scratch,
        &s3,
        "/crunchy/cluster-a",
        &[
            ("repo1-bundle", "y"),
            ("compress-type", "lz4"),
            ("repo1-cipher-type", "aes-256-cbc"),
            ("repo1-cipher-pass", "provider-secret"),
        ],
    );
    src.primary.pgbench(&["-i", "-s", "1", "-q"]);
    src.backup("full", &[]);
    src.primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    src.backup("incr", &[]);
    src.primary.sql("CREATE TABLE late AS SELECT generate_series(1, 5000) g");
    let lsn = src.primary.sql("SELECT pg_current_wal_lsn()");
    src.primary.archive_through(&lsn);
    let expected = pgbench_digests(&src.primary);
    // Only the configuration file, as pgBackRest reads it.
    restores_and_replays(&scratch, "by-file", "LATEST", &src.config_env(), &[], &lsn, &expected);
    // Only PGBACKREST_* variables (the standby's server has them in its environment).
    restores_and_replays(&scratch, "by-variables", "LATEST", &src.env_only(), &[], &lsn, &expected);
    let out = walfetch(&["wal-show"], &src.env_only());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("s3://archive/crunchy/cluster-a (pgBackRest stanza main)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_tablespace_is_restored_where_the_map_says() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("repo1-bundle", "y")]);
    let ts = scratch.dir("ts-source");
    src.primary.sql(&format!("CREATE TABLESPACE extra LOCATION '{}'", ts.display()));
    src.primary
        .sql("CREATE TABLE spaced TABLESPACE extra AS SELECT g, md5(g::text) m FROM generate_series(1, 20000) g");
    let oid = src.primary.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'");
    src.backup("full", &[]);
    src.primary
        .sql("INSERT INTO spaced SELECT g, 'late' FROM generate_series(20001, 21000) g");
    let lsn = src.primary.sql("SELECT pg_current_wal_lsn()");
    src.primary.archive_through(&lsn);
    let expected = src.primary.table_digest("spaced", "g");
    let moved = scratch.dir("ts-moved");
    let map = format!("{oid}={}", moved.display());
    let mut standby = restore_standby(&scratch, "standby", "LATEST", &src.config_env(), &["--tablespace-map", &map]);
    assert_eq!(
        fs::read_link(standby.data.join("pg_tblspc").join(&oid)).unwrap(),
        moved,
        "the tablespace's link points where the map says"
    );
    assert!(fs::read_dir(&moved).unwrap().next().is_some(), "its files are there");
    standby.start();
    standby.wait_replayed(&lsn);
    assert_eq!(standby.table_digest("spaced", "g"), expected);
}

/// A copy of `src`'s configuration file with `line` removed and `extra` appended.
fn config_variant(scratch: &Scratch, src: &Source, name: &str, drop_prefix: &str, extra: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(&src.config).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| drop_prefix.is_empty() || !l.starts_with(drop_prefix))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = scratch.path().join(name);
    fs::write(&path, format!("{kept}{extra}")).unwrap();
    give_to_postgres(&path);
    vec![("PGBACKREST_CONFIG".into(), path.display().to_string())]
}

#[test]
fn settings_that_cannot_work_are_named_in_one_line() {
    let scratch = Scratch::new();
    let src = Source::in_directory(
        &scratch,
        &[("repo1-cipher-type", "aes-256-cbc"), ("repo1-cipher-pass", "the right one")],
    );
    src.primary.pgbench(&["-i", "-s", "1", "-q"]);
    src.backup("full", &[]);
    let one_line = |out: &std::process::Output| {
        assert_eq!(stderr(out).lines().count(), 1, "one line: {}", stderr(out));
    };
    // No passphrase for an encrypted repository.
    let env = config_variant(&scratch, &src, "no-pass.conf", "repo1-cipher", "");
    let out = walfetch(&["backup-list"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is encrypted") && stderr(&out).contains("repo1-cipher-pass"),
        "{}",
        stderr(&out)
    );
    one_line(&out);
    // The type without the passphrase.
    let env = config_variant(&scratch, &src, "type-only.conf", "repo1-cipher-pass", "");
    let out = walfetch(&["backup-list"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("repo1-cipher-pass"), "{}", stderr(&out));
    // A wrong passphrase.
    let env = config_variant(&scratch, &src, "wrong.conf", "repo1-cipher-pass", "repo1-cipher-pass=not it\n");
    for args in [
        &["backup-list"][..],
        &["wal-verify"],
        &["backup-fetch", scratch.path().join("x").to_str().unwrap(), "LATEST"],
    ] {
        let out = walfetch(args, &env);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("passphrase is wrong"), "{}", stderr(&out));
        one_line(&out);
    }
    // A stanza that is not there: those that are are listed.
    let mut env = src.config_env();
    env.push(("PGBACKREST_STANZA".into(), "other".into()));
    let out = walfetch(&["backup-list"], &env);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stanza 'other' is not in") && stderr(&out).contains("holds: main"),
        "{}",
        stderr(&out)
    );
    one_line(&out);
}

#[test]
fn a_damaged_byte_in_any_file_of_a_backup_fails_the_restore_with_the_checksum_error() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("compress-type", "none"), ("repo1-bundle", "y")]);
    src.primary.pgbench(&["-i", "-s", "1", "-q"]);
    let label = src.backup("full", &[]);
    let backup_dir = src.dir().join("backup").join(STANZA).join(&label);
    // Every object of the backup that holds file data: files of their own and bundles.
    let mut objects: Vec<std::path::PathBuf> = Vec::new();
    let mut stack = vec![backup_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with("backup.manifest") && fs::metadata(&p).unwrap().len() > 100 {
                objects.push(p);
            }
        }
    }
    objects.sort();
    let bundles = objects.iter().filter(|p| p.to_string_lossy().contains("/bundle/")).count();
    assert!(
        bundles > 0 && objects.len() > bundles,
        "the backup has bundles and files of their own: {objects:?}"
    );
    for (n, object) in objects.iter().enumerate().filter(|(n, _)| n % 3 == 0 || *n == objects.len() - 1) {
        let original = fs::read(object).unwrap();
        let mut damaged = original.clone();
        let at = (original.len() / 2 + n) % original.len();
        damaged[at] ^= 0x01;
        fs::write(object, &damaged).unwrap();
        let target = scratch.path().join(format!("restore-{n}"));
        let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &src.config_env());
        assert_eq!(out.status.code(), Some(7), "{}: {}", object.display(), stderr(&out));
        let said = stderr(&out);
        assert!(
            said.contains("SHA-1") && said.contains(&format!("of backup {label}")) && said.contains("file pg_data/"),
            "names the file and the backup: {said}"
        );
        assert!(target.join("WALFETCH_RESTORE_INCOMPLETE").exists(), "a failed restore says so");
        fs::write(object, &original).unwrap();
    }
}

#[test]
fn a_backup_whose_reference_is_gone_names_it_and_the_full_backup_that_can_be_restored() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("repo1-bundle", "y")]);
    src.primary.pgbench(&["-i", "-s", "1", "-q"]);
    let first = src.backup("full", &[]);
    src.primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
    let second = src.backup("full", &[]);
    src.primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
    let incr = src.backup("incr", &[]);
    fs::remove_dir_all(src.dir().join("backup").join(STANZA).join(&second)).unwrap();
    let target = scratch.path().join("restore");
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), &incr], &src.config_env());
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("needs files of backup {second}"))
            && stderr(&out).contains(&format!("newest full backup that can be restored is {first}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_or_damaged_wal_is_never_absent_and_a_backup_without_its_wal_is_refused_first() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("compress-type", "none")]);
    src.primary.pgbench(&["-i", "-s", "1", "-q"]);
    src.backup("full", &[]);
    let start = src.run(&["info", "--output=json"]);
    let info: serde_json::Value = serde_json::from_str(&start).unwrap();
    let needed = info[0]["backup"][0]["archive"]["start"].as_str().unwrap().to_string();
    src.primary.pgbench(&["-n", "-t", "100", "-c", "2"]);
    let lsn = src.primary.sql("SELECT pg_current_wal_lsn()");
    src.primary.archive_through(&lsn);
    let folder = src.dir().join(format!("archive/{STANZA}/15-1/{}", &needed[..16]));
    let archived = |name: &str| {
        fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}-")))
            .unwrap()
    };
    let env = src.config_env();
    let dest = scratch.path().join("RECOVERYXLOG");

    // A damaged segment: its content is not what the SHA-1 in its name says.
    let next = src.primary.sql(&format!("SELECT pg_walfile_name('{lsn}')"));
    let victim = archived(&next);
    let original = fs::read(&victim).unwrap();
    let mut damaged = original.clone();
    damaged[100_000] ^= 0x10;
    fs::write(&victim, &damaged).unwrap();
    let out = walfetch(&["wal-fetch", &next, dest.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(135), "corrupt, fatal outside a standby: {}", stderr(&out));
    assert!(stderr(&out).contains("SHA-1"), "{}", stderr(&out));
    assert!(!dest.exists(), "nothing handed over");
    fs::write(&victim, &original).unwrap();
    let out = walfetch(&["wal-fetch", &next, dest.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Absent is proven: exit 1.
    let out = walfetch(&["wal-fetch", "0000000100000000000000FF", dest.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // The backup's own WAL gone: refused before anything is restored.
    fs::remove_file(archived(&needed)).unwrap();
    let target = scratch.path().join("restore");
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &env);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(stderr(&out).contains(&needed), "{}", stderr(&out));
    assert!(!target.join("base").exists(), "nothing restored");
}

#[test]
fn an_interrupted_restore_resumes_and_the_standby_is_promoted_at_the_final_lsn() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("repo1-bundle", "y"), ("compress-type", "lz4")]);
    src.primary.pgbench(&["-i", "-s", "2", "-q"]);
    src.backup("full", &[]);
    src.primary.pgbench(&["-n", "-t", "200", "-c", "2"]);
    let lsn = src.primary.sql("SELECT pg_current_wal_lsn()");
    src.primary.archive_through(&lsn);
    let expected = pgbench_digests(&src.primary);
    src.primary.sql("SELECT 1");
    let env = src.config_env();
    let whole = scratch.path().join("whole");
    let out = walfetch(&["backup-fetch", whole.to_str().unwrap(), "LATEST", "--standby"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Slowly, then killed once some units are done.
    let target = scratch.path().join("standby");
    let mut slow = env.clone();
    slow.push(("WALG_NETWORK_RATE_LIMIT".into(), "1000000".into()));
    let t = target.to_str().unwrap().to_string();
    let mut child = spawn_walfetch(None, &["backup-fetch", &t, "LATEST", "--standby"], &slow);
    let journal = target.join("WALFETCH_RESTORE_JOURNAL");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done = fs::read_to_string(&journal).unwrap_or_default().matches("\"done\"").count();
        if done >= 2 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it could be interrupted"
        );
        assert!(std::time::Instant::now() < deadline, "no unit finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    kill9(&mut child);
    assert!(!target.join("global/pg_control").exists(), "an interrupted restore cannot start");
    let out = walfetch(&["backup-fetch", &t, "LATEST", "--standby", "--resume"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resumed: "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_same_tree(&target, &whole);

    let mut standby = Cluster::attach(&scratch, "standby", target);
    standby.env = env.clone();
    standby.start();
    standby.wait_replayed(&lsn);
    let out = walfetch(&["status", &t, "--json"], &env);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{status}");
    assert!(status["archive"].as_str().unwrap().contains("repo"), "{status}");
    let out = walfetch(&["promote", &t, "--lsn", &lsn, "--timeout", "60s"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert_eq!(standby.sql("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(pgbench_digests(&standby), expected);
}

#[test]
fn a_block_incremental_repository_of_pgbackrest_2_59_is_restored_at_each_level() {
    // fixtures/pgbackrest-block: written by pgBackRest 2.59.1 (block incremental's final
    // format, bundles, gz, aes-256-cbc), see its `make` script and expected.json.
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/pgbackrest-block");
    let expected: serde_json::Value = serde_json::from_str(&fs::read_to_string(fixture.join("expected.json")).unwrap()).unwrap();
    let scratch = Scratch::new();
    let repo = scratch.path().join("repo");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture.join("repo"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(copied.success());
    give_to_postgres(&repo);
    let env = vec![
        ("PGBACKREST_REPO1_PATH".to_string(), repo.display().to_string()),
        ("PGBACKREST_REPO1_CIPHER_TYPE".to_string(), "aes-256-cbc".to_string()),
        ("PGBACKREST_REPO1_CIPHER_PASS".to_string(), "fixture-passphrase".to_string()),
    ];
    let lsn = expected["final_lsn"].as_str().unwrap();
    let labels: Vec<&str> = expected["labels"].as_str().unwrap().split(' ').collect();
    assert_eq!(labels.len(), 3, "a full backup and two block-incremental ones");
    for (n, label) in labels.iter().enumerate() {
        let mut standby = restore_standby(&scratch, &format!("level-{n}"), label, &env, &[]);
        standby.start();
        standby.wait_replayed(lsn);
        assert_eq!(standby.table_digest("blocks", "g"), expected["blocks"].as_str().unwrap(), "{label}");
        assert_eq!(
            standby.table_digest("after_last", "g"),
            expected["after_last"].as_str().unwrap(),
            "{label}"
        );
        standby.stop();
    }
}

#[test]
fn pgbackrest_2_45_beta_block_incremental_is_refused_in_one_line() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("repo1-bundle", "y"), ("repo1-block", "y"), ("beta", "y")]);
    src.primary.pgbench(&["-i", "-s", "1", "-q"]);
    let label = src.backup("full", &[]);
    let target = scratch.path().join("restore");
    let out = walfetch(&["backup-fetch", target.to_str().unwrap(), "LATEST"], &src.config_env());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "backup {label} was written by pgBackRest 2.45 with its beta block incremental"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().filter(|l| l.contains("error")).count(), 1, "{}", stderr(&out));
}

#[test]
fn a_named_restore_point_and_one_database_of_a_pgbackrest_repository() {
    let scratch = Scratch::new();
    let src = Source::in_directory(&scratch, &[("repo1-bundle", "y")]);
    let p = &src.primary;
    for db in ["keep", "drop1"] {
        p.sql(&format!("CREATE DATABASE {db}"));
        p.sql_in(db, "CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g");
    }
    src.backup("full", &[]);
    p.sql_in("keep", "INSERT INTO t VALUES (-1)");
    p.sql("SELECT pg_create_restore_point('cut')");
    p.sql_in("keep", "INSERT INTO t VALUES (-2)");
    let lsn = p.sql("SELECT pg_current_wal_lsn()");
    p.archive_through(&lsn);
    let dir = scratch.path().join("restored");
    let out = walfetch(
        &[
            "backup-fetch",
            dir.to_str().unwrap(),
            "--target-name",
            "cut",
            "--restore-only",
            "keep",
        ],
        &src.config_env(),
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
    assert!(said.contains("DROP DATABASE drop1;"), "{said}");
    let mut c = Cluster::attach(&scratch, "restored", dir);
    c.env = src.config_env();
    c.start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while c.sql("SELECT pg_is_wal_replay_paused()") != "t" {
        assert!(
            std::time::Instant::now() < deadline,
            "never paused at the restore point\n{}",
            c.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        c.sql_in("keep", "SELECT count(*) || ':' || min(g) FROM t"),
        "20001:-1",
        "-1 is in, -2 is not"
    );
}
